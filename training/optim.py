"""AdamW with adaptive gradient clipping (AGC), the warm-up + cosine schedule, weight-decay rules."""

import keras
from keras import ops

# timm's optimizer factory: no decay on 1-D params (biases, BN) and on attention_biases
NO_DECAY = ["bias", "gamma", "beta", "attention_biases"]


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
            variables = trainable_variables if trainable_variables is not None else self._trainable_variables
            grads = adaptive_clip(list(grads), list(variables), self.agc_clip)
        return super().apply(grads, trainable_variables)

    def get_config(self):
        return {**super().get_config(), "agc_clip": self.agc_clip}


def make_schedule(recipe, steps_per_epoch):
    """Linear warm-up from ``warmup_lr`` to the peak, then cosine to ``min_lr``, per step."""
    total = max(1, recipe.epochs * steps_per_epoch)
    warmup = min(int(recipe.warmup_epochs * steps_per_epoch), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=recipe.warmup_lr, warmup_target=recipe.peak_lr, warmup_steps=warmup,
        decay_steps=max(1, total - warmup), alpha=recipe.min_lr / recipe.peak_lr)


def make_optimizer(recipe, steps_per_epoch):
    opt = AGCAdamW(
        agc_clip=recipe.agc_clip, learning_rate=make_schedule(recipe, steps_per_epoch),
        weight_decay=recipe.weight_decay, epsilon=1e-8, use_ema=bool(recipe.ema_decay),
        ema_momentum=recipe.ema_decay or 0.99)
    opt.exclude_from_weight_decay(var_names=NO_DECAY)
    return opt
