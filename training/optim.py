"""The optimizer the recipe asks for: AGC AdamW, the warm-up + cosine schedule, weight-decay rules."""

import keras

from keras_evit.optimizers import AGCAdamW, adaptive_clip  # noqa: F401  (re-exported for training code)

# timm's optimizer factory: no decay on 1-D params (biases, BN) and on attention_biases
NO_DECAY = ["bias", "gamma", "beta", "attention_biases"]


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
