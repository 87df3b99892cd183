"""A model's outputs on a handful of images (a verification set, the images named on a command line).

``predict`` first traces the model into a graph: 3-6 s for an EfficientViT on a CPU, longer than running a
hundred images through it eagerly. For the few images exports are verified on, and the few a user names,
eager calls in batches give the same numbers sooner. Large data sets (``evaluate``) keep ``predict``.
"""

import numpy as np


def outputs(model, images, batch_size=16):
    """``model``'s outputs (NumPy, the structure the model returns) on ``images``, inference mode, eagerly,
    ``batch_size`` images at a time."""
    import keras

    images = np.asarray(images)
    if len(images) == 0:
        raise ValueError("no images to run the model on")
    parts = [keras.tree.map_structure(keras.ops.convert_to_numpy, model(images[start:start + batch_size],
                                                                         training=False))
             for start in range(0, len(images), batch_size)]
    return keras.tree.map_structure(lambda *batches: np.concatenate(batches), *parts)
