"""``keras-evit evaluate``: top-1 (and top-5) through the same eval transform as predict."""

import sys

from .classifier import accuracy_metrics, build_classifier
from .data import load_source, make_dataset


def evaluate(variant, weights, data, split="validation", batch_size=64, image_size=None, data_dir=None,
             log=print):
    """Top-1 (and top-5) of ``weights`` (a run folder, .keras or checkpoint) on ``data``'s ``split``,
    through the same eval transform as ``predict``."""
    import keras

    from keras_evit.artifacts import check_own_size, model_file, model_image_size
    from keras_evit.preprocessing import check_image_size, has_preprocessing

    from .recipe import Recipe

    source = load_source(data, data_dir, eval_split=None if split == "validation" else split)
    split = split if split in source.splits else "validation"  # tfds: the requested split is loaded as it

    model = build_classifier(variant, source.num_classes, weights, check_image_size(image_size or 224))
    if model_file(weights):
        check_own_size(model, image_size, weights)
    recipe = Recipe(image_size=model_image_size(model), batch_size=batch_size)
    model.compile(loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  metrics=accuracy_metrics(source.num_classes))
    dataset = make_dataset(source, split, batch_size, recipe, training=False, normalize=not has_preprocessing(model))
    results = model.evaluate(dataset, return_dict=True, verbose="auto" if sys.stdout.isatty() else 2)
    log(f"{data} [{split}]: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    return results
