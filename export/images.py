"""Real images for calibration and verification, through the one eval transform."""

import os

import numpy as np


def load_folder(folder, image_size, limit=None):
    """(RGB 0..255 float32 NHWC array, skipped messages) from the images in ``folder`` (recursive).

    Feed the array through :func:`keras_evit.preprocessing.model_inputs` for models without
    in-model preprocessing.
    """
    import keras_evit
    from keras_evit.preprocessing import list_images

    if not folder or not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder!r} (pass a folder of JPEG/PNG images, "
                                "e.g. ../shared/data/imagenet-sample)")
    images, skipped = [], []
    for path in list_images(folder, recursive=True):
        if limit and len(images) >= limit:
            break
        try:
            images.append(keras_evit.load_image(path, image_size))
        except ValueError as exc:
            skipped.append(str(exc))
    if not images:
        raise ValueError(f"no readable images in {folder}")
    return np.stack(images).astype(np.float32), skipped


def split_images(source, split, size, limit=None):
    """(RGB 0..255 float32 crops, labels) of a training-data split, via the one eval transform."""
    from keras_evit.preprocessing import center_crop, load_image

    records, labels = source.splits[split]
    if limit:
        records, labels = records[:limit], labels[:limit]
    if records.dtype.kind in "SU":
        crops = [load_image(str(r), size) for r in records]
    else:
        crops = [center_crop(r, size) for r in records]
    return np.stack(crops).astype(np.float32), np.asarray(labels)
