"""Training recipes: the paper's ImageNet recipe as the default, every value overridable."""

import dataclasses
from dataclasses import dataclass
from typing import Optional


@dataclass
class Recipe:
    """Defaults = official main.py (docs/ARCHITECTURE.md, "Paper boxes"): 300 epochs, global batch 2048, AdamW,
    cosine, EMA, AGC."""

    epochs: int = 300
    batch_size: int = 2048            # global, across replicas
    image_size: int = 224
    base_lr: float = 1e-3             # scaled by batch_size / 512
    lr_reference_batch: int = 512
    weight_decay: float = 0.025       # none on biases, BN and attention biases
    warmup_epochs: float = 5.0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    label_smoothing: float = 0.1
    mixup: float = 0.8                # Beta(alpha) for MixUp; 0 disables
    cutmix: float = 1.0               # Beta(alpha) for CutMix; 0 disables
    mix_switch_prob: float = 0.5      # chance of CutMix when both are on
    # the reference's rand-m9-mstd0.5-inc1: 2 ops of timm's 15, each applied with probability 0.5 at
    # magnitude N(9, 0.5) of 10
    randaugment_magnitude: float = 9
    randaugment_ops: int = 2
    randaugment_mstd: float = 0.5
    random_erasing: float = 0.25
    crop_scale: tuple = (0.08, 1.0)   # random-resized-crop area range
    hflip: bool = True
    ema_decay: Optional[float] = 0.99996
    agc_clip: Optional[float] = 0.02  # adaptive gradient clipping factor; None disables
    distill_teacher: Optional[str] = None
    distill_type: str = "soft"        # soft (KL at temperature tau) or hard (teacher argmax)
    distill_alpha: float = 0.5
    distill_tau: float = 1.0
    checkpoint_every: int = 500       # steps; plus every epoch end
    seed: int = 0
    cache: bool = False
    mixed_precision: bool = False
    sync_bn: bool = True              # BN statistics over the global batch when distributed
    dropout: float = 0.0
    remat: bool = False               # recompute each block in the backward pass: less memory, more compute

    @property
    def peak_lr(self):
        return self.base_lr * self.batch_size / self.lr_reference_batch

    def replace(self, **overrides):
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown recipe fields {sorted(unknown)}")
        recipe = dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})
        recipe.validate()
        return recipe

    def validate(self):
        """Clear errors for values no run can use (they used to surface as tracebacks mid-run)."""
        from keras_evit.preprocessing import check_image_size

        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_image_size(self.image_size)
        if self.base_lr <= 0:
            raise ValueError(f"the learning rate must be > 0, got {self.base_lr}")


PRESETS = {
    "imagenet": Recipe(),
    # maintainer's fine-tuning advice (Cream#172): batch 256, lr 1e-3, wd 1e-8; shorter and lighter here
    "finetune": Recipe(epochs=30, batch_size=256, base_lr=1e-3, lr_reference_batch=256, weight_decay=1e-8,
                       warmup_epochs=1, mixup=0.0, cutmix=0.0, random_erasing=0.0, ema_decay=None,
                       randaugment_magnitude=5),
    # tiny-data preset for the shipped 8x8 handwritten digits upscaled to 64 px
    "digits": Recipe(epochs=40, batch_size=64, image_size=64, base_lr=2e-3, lr_reference_batch=64,
                     crop_scale=(0.6, 1.0), hflip=False,
                     weight_decay=0.025, warmup_epochs=2, min_lr=1e-5, mixup=0.0, cutmix=0.0,
                     randaugment_magnitude=0, random_erasing=0.0, ema_decay=None, agc_clip=0.02,
                     label_smoothing=0.1, checkpoint_every=200),
}


def get_recipe(name="imagenet", **overrides):
    if name not in PRESETS:
        raise ValueError(f"unknown recipe {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides)
