"""The in-model normalization, a layer type of its own so a model says by its config that it takes RGB 0..255."""

import keras

from ..configs import IMAGENET_MEAN, IMAGENET_STD


# (x / 255 - mean) / std as one multiply-add per channel: x * SCALE + OFFSET
IMAGENET_SCALE = [1.0 / (255.0 * s) for s in IMAGENET_STD]
IMAGENET_OFFSET = [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]


@keras.saving.register_keras_serializable(package="keras_evit")
class ImageNormalization(keras.layers.Rescaling):
    """RGB 0..255 -> ``(x / 255 - mean) / std`` per channel (ImageNet mean/std by default): a Keras ``Rescaling``
    whose type marks the model as taking raw pixels (``include_preprocessing=True``)."""

    def __init__(self, scale=None, offset=None, **kwargs):
        if scale is None and offset is None:
            scale, offset = IMAGENET_SCALE, IMAGENET_OFFSET
        super().__init__(scale=scale, offset=offset, **kwargs)
