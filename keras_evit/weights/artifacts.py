"""What ``--weights`` names, turned into a ready model and its class names.

One resolver for predict, evaluate, export, convert and the demo: ``None``/``"imagenet"``/a
checkpoint file (built for ``variant``), a whole-model ``.keras`` file, or a training run folder
(``RUN_DIR/model.keras`` + ``RUN_DIR/classes.json``). A fine-tuned model's classes travel with it.
"""

import json
import os

RUN_MODEL = "model.keras"
RUN_CLASSES = "classes.json"
# a classes file is a list of names; refuse absurd ones instead of reading them whole
MAX_CLASSES_BYTES = 16 << 20
MAX_NAME_BYTES = 1024  # one name, JSON-escaped or as a line: ImageNet's longest is 30 characters


def weights_arg(value):
    """The CLI spelling of ``weights``: "none"/"" -> None; anything else unchanged."""
    return None if value is None or str(value).lower() in ("none", "") else value


def model_file(weights):
    """The ``.keras`` file that ``weights`` names (a run folder or the file itself), else None."""
    if weights is None or weights == "imagenet":
        return None
    path = os.fspath(weights)
    if os.path.isdir(path):
        found = os.path.join(path, RUN_MODEL)
        if not os.path.isfile(found):
            raise FileNotFoundError(
                f"{path} is a folder without {RUN_MODEL}: pass a training run folder (a finished run writes "
                f"RUN_DIR/{RUN_MODEL}) or a weights file")
        return found
    return path if path.endswith(".keras") else None


def check_class_names(names, where):
    """Refuses class names a labels file cannot hold one per line: empty, or holding a line or paragraph
    separator or any other control character (``\r``, ``\x85``, ``\u2028`` ...); names ``where`` they came from."""
    import unicodedata

    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}: class name {name!r} is empty or not a string")
        bad = [c for c in name if unicodedata.category(c) in ("Cc", "Zl", "Zp")]
        if bad:
            raise ValueError(f"{where}: class name {name!r} holds the control character {bad[0]!r}: exported labels "
                             "files hold one name per line, so rename it")
    return names


def _read_names_text(path, num_classes, what):
    """The text of a class-name file, refused (ValueError) when it is not a regular file or is longer than
    ``num_classes`` names could be (``MAX_NAME_BYTES`` each): parsed, 14 MB of short names took 201 MB."""
    from ..regular_file import FileTooLarge, NotRegularFile, read_regular

    budget = MAX_CLASSES_BYTES if num_classes is None else min(MAX_CLASSES_BYTES,
                                                               num_classes * MAX_NAME_BYTES + 4096)
    try:
        return read_regular(path, budget).decode("utf-8")
    except (FileNotFoundError, NotRegularFile):  # missing, a folder, or a FIFO/device that a read would block on
        raise ValueError(f"{path} is not a regular file: pass a JSON list or a text file of class names") from None
    except FileTooLarge as exc:
        outputs = "" if num_classes is None else f" for {num_classes} outputs"
        raise ValueError(f"{path} is too large for {what}{outputs} ({exc.size:,} bytes, at most {budget:,})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {what} from {path}: {exc}") from exc


def read_class_names(path, num_classes=None):
    """The list of class names in a run's ``classes.json``; ValueError naming the file if malformed."""
    text = _read_names_text(path, num_classes, "a class-name list")
    try:
        names = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"cannot read class names from {path}: {exc}. It should be a JSON list of "
                         "names, one per output; fix or delete it") from exc
    if not isinstance(names, list):
        raise ValueError(f"{path} is not a JSON list of class names")
    check_class_names(names, path)
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(f"{path} names {len(names)} classes but the model has {num_classes} outputs")
    return names


def read_labels_file(path, num_classes):
    """Class names for a model's ``num_classes`` outputs from ``--labels FILE``: a JSON list (a run's
    ``classes.json``) or a text file with one name per line (a TFLite labels file)."""
    if not os.path.isfile(path):
        raise ValueError(f"--labels {path} is not a regular file: pass a JSON list or a text file of class names")
    if path.endswith(".json"):
        return read_class_names(path, num_classes)
    names = _read_names_text(path, num_classes, "a labels file").splitlines()
    while names and not names[-1].strip():
        names.pop()
    check_class_names(names, path)
    if len(names) != num_classes:
        raise ValueError(f"{path} should name the model's {num_classes} classes, one non-empty name per line; "
                         f"it has {len(names)} line(s)")
    return names


def class_names_for(model, model_path=None):
    """Classes of ``model``: ``classes.json`` beside its ``.keras`` file, ImageNet for 1000 outputs,
    else ``class_0``, ``class_1``, ..."""
    from ..preprocessing import imagenet_class_names

    units = int(model.outputs[0].shape[-1])
    if model_path:
        beside = os.path.join(os.path.dirname(os.path.abspath(model_path)), RUN_CLASSES)
        if os.path.isfile(beside):
            return read_class_names(beside, units)
    return imagenet_class_names() if units == 1000 else [f"class_{i}" for i in range(units)]


# registered names of keras_evit.hub's models: a .keras naming one needs that module (and keras-hub) imported
HUB_CLASSES = ("keras_evit>EfficientViTBackbone", "keras_evit>EfficientViTImageClassifier")


def _names_hub_classes(config):
    """True when a .keras config names a keras_evit.hub model (anywhere, a user's model wrapping one too)."""
    text = json.dumps(config)
    return any(json.dumps(name) in text for name in HUB_CLASSES)


def load_keras_file(path):
    """A whole model saved by Keras (``model.keras``), with a clear error for a bad file. What the archive
    declares is checked first (``keras_archive``): a crafted file is refused before Keras allocates anything."""
    import keras

    from .. import layers, optimizers  # noqa: F401  (registers every class a keras_evit .keras names)
    from .keras_archive import check_archive, read_config

    from ..regular_file import NotRegularFile, pinned

    try:
        with pinned(path, ".keras") as held:  # checked and loaded: the same file, whatever happens to path
            config = read_config(held, name=path)
            if _names_hub_classes(config):
                try:
                    from .. import hub  # noqa: F401  (registers the keras-hub backbone and classifier)
                except ImportError as exc:
                    raise ValueError(f"{path} is a keras-hub EfficientViT model: {exc}") from None
            check_archive(held, config, name=path)
            try:
                model = keras.models.load_model(held, compile=False)
            except (OSError, ValueError, TypeError, KeyError, EOFError) as exc:
                raise ValueError(f"cannot load the Keras model {path}: {type(exc).__name__}: {exc}. "
                                 "The file is corrupt, truncated, or not a keras_evit model.") from exc
    except NotRegularFile:
        raise ValueError(f"{path} is not a regular file (a folder, pipe, device or socket): refused") from None
    check_loaded_model(model, path)
    return rename_legacy_layers(model)


def check_loaded_model(model, path):
    """Refuses a loaded model whose weights are NaN/Inf, or whose input is outside the sizes we support."""
    from .pretrained import check_finite
    from ..preprocessing import check_image_size

    check_finite(model, path)
    for side in model.inputs[0].shape[1:3]:
        if side is not None:
            try:
                check_image_size(side)
            except ValueError as exc:
                raise ValueError(f"{path} takes {side} px inputs: {exc}") from None


def rename_legacy_layers(model):
    """A copy of a model saved before layer names lost their dots ("stages.0.blocks.0"), with the
    current names ("stages-0-blocks-0") that Keras on PyTorch accepts; other models as they are.
    ``keras-evit convert OLD.keras --output NEW.keras`` (on TensorFlow or JAX) rewrites such a file."""
    if not any("." in layer.name for layer in model.layers):
        return model
    return rename_layers(model, ".", "-")


def rename_layers(model, old, new):
    """A copy of ``model`` whose top-level layer names have ``old`` replaced by ``new``, same weights."""
    import keras

    def clone(layer):
        config = layer.get_config()
        config["name"] = layer.name.replace(old, new)
        return layer.__class__.from_config(config)

    renamed = keras.models.clone_model(model, clone_function=clone)
    renamed.set_weights(model.get_weights())
    return renamed


def _is_softmax(activation):
    return getattr(activation, "__name__", None) == "softmax"


def softmax_output_layer(model):
    """The layer whose softmax makes ``model``'s output (an ``Activation``, a ``Softmax``, or a layer with
    ``activation="softmax"`` such as a ``Dense`` head), looking inside a model called last; else None."""
    import keras

    layer = model.layers[-1]
    if isinstance(layer, keras.Model):
        return softmax_output_layer(layer)
    if isinstance(layer, keras.layers.Softmax) or _is_softmax(getattr(layer, "activation", None)):
        return layer
    return None


def is_softmax_output(model):
    return softmax_output_layer(model) is not None


def without_softmax(model):
    """``model`` giving logits: its final softmax removed (or its softmax head re-made linear, same weights)."""
    import keras

    layer = softmax_output_layer(model)
    if layer is None:
        return model
    if layer is not model.layers[-1]:
        raise ValueError(f"{model.name} ends in a softmax inside the nested model {model.layers[-1].name}: "
                         "cannot give logits; export probabilities (drop --logits) or save a model that "
                         "ends in logits")
    if isinstance(layer, (keras.layers.Activation, keras.layers.Softmax)):
        return keras.Model(model.inputs[0], layer.input, name=model.name)
    config = layer.get_config()
    config["activation"] = "linear"
    logits_layer = layer.__class__.from_config(config)
    out = logits_layer(layer.input)
    logits_layer.set_weights(layer.get_weights())
    return keras.Model(model.inputs[0], out, name=model.name)


def with_activation(model, classifier_activation):
    """``model`` ending in ``classifier_activation`` ("softmax" or None, i.e. logits): a softmax already
    in the model (in any layer) is kept, never doubled."""
    import keras

    if classifier_activation is None:
        return without_softmax(model)
    if is_softmax_output(model):
        return model
    out = keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")(model.outputs[0])
    return keras.Model(model.inputs[0], out, name=model.name)


def load_classifier(weights="imagenet", variant="m2", image_size=None, classifier_activation="softmax",
                    labels=None):
    """(model, class_names) for ``weights`` (see the module docstring).

    ``image_size`` is the input side for models built here (default 224); a ``.keras`` model keeps its
    own and a different ``image_size`` is an error. ``labels``: a file naming the classes (JSON list or
    one per line), for a model whose names do not travel with it.
    """
    model, names = _load_classifier(weights, variant, image_size, classifier_activation)
    if labels:
        names = read_labels_file(os.fspath(labels), int(model.outputs[0].shape[-1]))
    return model, names


def _load_classifier(weights, variant, image_size, classifier_activation):
    from ..models.builders import build_model
    from ..preprocessing import check_image_size

    weights = weights_arg(weights)
    model_path = model_file(weights)
    if model_path:
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"model file not found: {model_path}")
        model = load_keras_file(model_path)
        check_own_size(model, image_size, model_path)
        return with_activation(model, classifier_activation), class_names_for(model, model_path)
    size = check_image_size(image_size or 224)
    model = build_model(variant, weights=weights, input_shape=(size, size, 3),
                        classifier_activation=classifier_activation)
    return model, class_names_for(model)


def check_own_size(model, image_size, source):
    """A whole model keeps its input size: an ``image_size`` other than it is an error."""
    own = tuple(model.inputs[0].shape[1:3])
    if image_size is not None and own != (int(image_size),) * 2:
        raise ValueError(f"{source} takes {own[0]}x{own[1]} images; drop --image-size or pass {own[0]}")


def model_image_size(model):
    height, width = model.inputs[0].shape[1:3]
    return int(height) if height == width else (int(height), int(width))
