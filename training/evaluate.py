"""``keras-evit evaluate``: top-1 (and top-5) through the same eval transform as predict.

1000-class weights (``imagenet``, a release ``.pth``/``.safetensors``/``.npz``, an ImageNet ``.weights.h5``)
are scored with their own head on ImageNet-labelled data: ``tfds:imagenet2012``/``tfds:imagenet_v2``, or
a folder whose sub-folders are ImageNet synsets (all 1000 or a subset such as Imagenette's 10). A folder of
train/ and val/ is scored on val/ (``--split train`` for train/), any other folder of class sub-folders
whole (``--split all`` says so explicitly).
"""

import sys

from .classifier import accuracy_metrics, build_classifier
from .data import folder_eval_source, load_source, make_dataset

SPLITS = ("validation", "train", "all", "test")


def _source(data, split, data_dir):
    kind, _, value = data.partition(":")
    if kind == "folder" and value:
        return folder_eval_source(value, split)
    if split == "all":
        raise ValueError("--split all is for folders: name a split of the data set (validation, train, test)")
    source = load_source(data, data_dir, eval_split=None if split == "validation" else split)
    if split == "train":  # what evaluate scores is the "validation" entry: make it the train split
        source.splits["validation"], source.sizes["validation"] = source.splits["train"], source.sizes["train"]
    return source, None


def _model(variant, weights, source, image_size, log):
    """(model giving logits, what it is): a run's or a .keras model as saved; 1000-class checkpoints with
    their own head on ImageNet-labelled data; else a new, untrained head (and we say so)."""
    import keras_evit as ke
    from keras_evit.weights.artifacts import check_own_size, model_file

    if model_file(weights):
        model = build_classifier(variant, source.num_classes, weights, image_size or 224)
        check_own_size(model, image_size, weights)
        return model
    if source.num_classes == 1000 and weights:
        return ke.build_model(variant, weights=weights, classes=1000, classifier_activation=None,
                              input_shape=(image_size or 224, image_size or 224, 3))
    if weights:
        log(f"note: the data has {source.num_classes} classes, not ImageNet's 1000: scoring the pretrained "
            "features with a NEW, UNTRAINED head (chance accuracy). Fine-tune first (keras-evit finetune) and "
            "evaluate the run folder, or use ImageNet-labelled data (synset folders, tfds:imagenet2012)")
    return build_classifier(variant, source.num_classes, weights, image_size or 224)


def evaluate(variant, weights, data, split="validation", batch_size=64, image_size=None, data_dir=None,
             log=print):
    """Top-1 (and top-5) of ``weights`` (a run folder, .keras or checkpoint) on ``data``'s ``split``,
    through the same eval transform as ``predict``."""
    import keras

    from keras_evit.weights.artifacts import model_image_size, weights_arg
    from keras_evit.preprocessing import check_image_size, has_preprocessing

    from .recipe import Recipe

    if split not in SPLITS:
        raise ValueError(f"unknown --split {split!r}: choose one of {', '.join(SPLITS)}")
    weights = weights_arg(weights)  # "none" on the command line
    source, folder = _source(data, split, data_dir)
    for msg in source.skipped:
        log(f"skipped: {msg}")
    model = _model(variant, weights, source, image_size and check_image_size(image_size), log)
    recipe = Recipe(image_size=model_image_size(model), batch_size=batch_size)
    model.compile(loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  metrics=accuracy_metrics(source.num_classes))
    dataset = make_dataset(source, "validation", batch_size, recipe, training=False,
                           normalize=not has_preprocessing(model))
    results = model.evaluate(dataset, return_dict=True, verbose="auto" if sys.stdout.isatty() else 2)
    where = folder or f"{data} [{split}]"
    log(f"{where}: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items())
        + f" ({source.sizes['validation']} images scored, {source.num_classes} classes)")
    return results
