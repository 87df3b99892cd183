"""``keras-evit`` command line: predict, convert, demo, info, export, bench, train, finetune, evaluate."""

import errno
import sys

from .args import LABELS_HELP, WEIGHTS_HELP, Parser, add_model_argument, image_size_arg, positive_int
from ..startup_logs import startup_notes_filtered


def start_keras():
    """Imports Keras (and TensorFlow) with every keras-evit layer registered."""
    import keras_evit

    keras_evit.import_all()


PREDICT_BATCH = 16  # images per model call: a call costs far more than an image (M0, eager, 2 cores: ~0.3 s)


def cmd_predict(args):
    import numpy as np

    import keras_evit as ke
    from keras_evit.models.inference import outputs
    from keras_evit.weights.artifacts import model_image_size
    from keras_evit.preprocessing import model_inputs

    model, class_names = ke.load_classifier(args.weights, args.model, args.image_size, labels=args.labels)
    size = model_image_size(model)
    paths, errors = _image_paths(args.images)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    failed, batch = len(errors), []

    def classify():
        probs = np.asarray(outputs(model, model_inputs(model, np.stack([image for _, image in batch]))))
        top = ke.decode_predictions(probs, min(args.top, probs.shape[-1]), class_names)
        for (path, _), decoded in zip(batch, top):
            print(path)
            for rank, (synset, name, score) in enumerate(decoded, 1):
                label = name if synset == name else f"{name:<30} {synset}"
                print(f"  {rank}. {label}  {score:.4f}")
        batch.clear()

    for path in paths:
        try:
            batch.append((path, ke.load_image(path, size)))
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
        if len(batch) == PREDICT_BATCH:
            classify()
    if batch:
        classify()
    return 2 if failed else 0


def _image_paths(paths):
    """(the paths to classify, errors): each path as given, a folder as the images in it (sorted, not its
    sub-folders); a folder with none is an error."""
    import os

    from keras_evit.preprocessing import IMAGE_EXTENSIONS, list_images

    found, errors = [], []
    for path in paths:
        images = list_images(path) if os.path.isdir(path) else [path]
        found += images
        if not images:
            errors.append(f"folder {path} holds no image file ({'/'.join(IMAGE_EXTENSIONS)})")
    return found, errors


def cmd_convert(args):
    import keras_evit as ke
    from keras_evit.utils import check_output_path, check_outputs, save_keras

    check_output_path(args.output, (".weights.h5", ".keras"))
    check_outputs({"--output": args.output}, inputs=[args.checkpoint])
    model, _ = ke.load_classifier(args.checkpoint, args.model, args.image_size, classifier_activation=None)
    save_keras(model, args.output)
    print(f"wrote {args.output} ({model.name}, {model.count_params():,} parameters)")
    return 0


def cmd_demo(args):
    from keras_evit.demo import run_demo

    return run_demo(model=args.model, weights=args.weights, images=args.images, limit=args.limit)


def cmd_info(args):
    """Prints the facts table's row for the model (config, release file, preprocessing, top-1, license)."""
    import json

    from keras_evit.configs import pretrained_cfg

    print(json.dumps(pretrained_cfg(args.model), indent=2))
    return 0


def build_parser():
    parser = Parser(prog="keras-evit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="classify images with an ImageNet model")
    p.add_argument("images", nargs="+", help="image files, or folders of them (each folder's images, sorted)")
    add_model_argument(p)
    p.add_argument("--weights", default="imagenet", help=WEIGHTS_HELP)
    p.add_argument("--top", type=positive_int, default=5)
    p.add_argument("--labels", default=None, help=LABELS_HELP)
    p.add_argument("--image-size", type=image_size_arg, default=None, help="default 224 (a .keras model: its own)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("convert", help="convert an official/timm checkpoint (or a run's model) to Keras files")
    p.add_argument("checkpoint", help="a checkpoint file, a .keras model, or a training run folder")
    add_model_argument(p)
    p.add_argument("--output", required=True, help="*.weights.h5 or *.keras")
    p.add_argument("--image-size", type=image_size_arg, default=None, help="default 224 (a .keras model: its own)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("demo", help="classify the bundled ImageNet sample images")
    add_model_argument(p)
    p.add_argument("--weights", default="imagenet", help=WEIGHTS_HELP)
    p.add_argument("--images", default=None, help="folder of images (default: shared imagenet-sample)")
    p.add_argument("--limit", type=positive_int, default=None)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("info", help="what is known of a variant: config, released weights, preprocessing, top-1")
    add_model_argument(p)
    p.set_defaults(func=cmd_info)

    from .analyze import register_heads
    from .export import register as register_export, register_runtime
    from .training import register as register_training

    register_export(sub)     # export, setup-mediapipe, bench
    register_training(sub)   # train, finetune, evaluate
    analyze = sub.add_parser("analyze", help="the paper's measurements: runtime breakdown, head similarity")
    kinds = analyze.add_subparsers(dest="analysis", required=True)
    register_heads(kinds)    # analyze heads (the model itself)
    register_runtime(kinds)  # analyze runtime (exported files, so it lives with export)
    return parser


# optional dependencies -> the extra that installs them, for "install keras-evit[...]" guidance
EXTRAS = {"ai_edge_litert": "mobile", "onnx": "mobile", "onnxruntime": "mobile", "tf2onnx": "mobile",
          "coremltools": "mobile", "tensorboard": "train", "tensorflow_datasets": "train",
          "matplotlib": "train", "torch": "reference", "timm": "reference"}


def missing_extra_message(exc):
    """What to install for a ModuleNotFoundError of an optional dependency, else None."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    return (f"this command needs the optional dependency {top!r}: install it with "
            f"pip install 'keras-evit[{extra}]' (or `make install-test` in a checkout)")


def main(argv=None):
    args = build_parser().parse_args(argv)
    with startup_notes_filtered():
        return _run(args)


def _run(args):
    if getattr(args, "needs_keras", True):
        start_keras()
    try:
        return args.func(args)
    except ModuleNotFoundError as exc:
        message = missing_extra_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError) as exc:  # RuntimeError: a failed export/setup step
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        advice = "" if "Free some space" in str(exc.strerror) else ": free some space or write elsewhere"
        print(f"error: no space left on the device for {exc.filename or 'the output'} ({exc.strerror}){advice}",
              file=sys.stderr)
        return 2
