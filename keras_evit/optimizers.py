"""AdamW with adaptive gradient clipping (AGC), as the paper trains; registered on ``import keras_evit``
so that a training run's ``model.keras`` (whose compile config names it) loads anywhere."""

import keras
from keras import ops

from .compat import optimizer_trainable_variables


def _unitwise_norm(x):
    """L2 norm per output unit (timm AGC). Keras kernels keep output units on the last axis,
    except depthwise kernels (kh, kw, C, 1), whose units are the channels (axis 2)."""
    if len(x.shape) <= 1:
        return ops.sqrt(ops.sum(ops.square(x)))
    if len(x.shape) == 4 and x.shape[-1] == 1:
        return ops.sqrt(ops.sum(ops.square(x), axis=(0, 1, 3), keepdims=True))
    return ops.sqrt(ops.sum(ops.square(x), axis=tuple(range(len(x.shape) - 1)), keepdims=True))


def adaptive_clip(grads, variables, clip, eps=1e-3):
    out = []
    for g, v in zip(grads, variables):
        if g is None:
            out.append(g)
            continue
        p_norm = ops.maximum(_unitwise_norm(ops.cast(v, g.dtype)), eps)
        g_norm = _unitwise_norm(g)
        max_norm = p_norm * clip
        scale = ops.where(g_norm > max_norm, max_norm / ops.maximum(g_norm, 1e-6), ops.ones_like(g_norm))
        out.append(g * scale)
    return out


@keras.saving.register_keras_serializable(package="keras_evit")
class AGCAdamW(keras.optimizers.AdamW):
    """AdamW whose gradients are adaptively clipped per unit before the update (clip 0.02 in the paper)."""

    def __init__(self, agc_clip=None, **kwargs):
        super().__init__(**kwargs)
        self.agc_clip = agc_clip

    def apply(self, grads, trainable_variables=None):
        if self.agc_clip:
            variables = trainable_variables if trainable_variables is not None else \
                optimizer_trainable_variables(self)
            grads = adaptive_clip(list(grads), list(variables), self.agc_clip)
        return super().apply(grads, trainable_variables)

    def get_config(self):
        return {**super().get_config(), "agc_clip": self.agc_clip}
