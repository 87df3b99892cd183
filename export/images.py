"""Real images for calibration and verification, with the model's own preprocessing."""

import os

import numpy as np


def load_folder(folder, image_size, limit=None):
    """(preprocessed float32 NHWC array, skipped messages) from the images in ``folder`` (recursive)."""
    import keras_evit
    from keras_evit.preprocessing import IMAGE_EXTENSIONS

    if not folder or not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder!r} (pass a folder of JPEG/PNG images, "
                                "e.g. ../shared/data/imagenet-sample)")
    paths = sorted(os.path.join(root, f) for root, _, files in os.walk(folder) for f in files
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    images, skipped = [], []
    for path in paths:
        if limit and len(images) >= limit:
            break
        try:
            images.append(keras_evit.load_image(path, image_size))
        except ValueError as exc:
            skipped.append(str(exc))
    if not images:
        raise ValueError(f"no readable images in {folder}")
    return keras_evit.preprocess_input(np.stack(images)), skipped
