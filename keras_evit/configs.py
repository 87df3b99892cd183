"""The model's facts in one place: the table of EfficientViT-M variant configurations, their published
top-1, where the released weights live, and the preprocessing they were trained with
(docs/ARCHITECTURE.md)."""

from dataclasses import dataclass
from typing import Tuple

KEY_DIM = 16
WINDOW_SIZE = 7
MLP_RATIO = 2
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # PyTorch momentum 0.1
DEFAULT_SIZE = 224
MIN_SIZE = 64

# the reference's eval transform: ImageNet mean/std on 0..1 RGB; shorter side to size/0.875, center crop
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_PCT = 0.875

# the official release of the ImageNet checkpoints (efficientvit_m0.pth .. efficientvit_m5.pth)
RELEASE_URL = "https://github.com/xinyuliu-jeffrey/EfficientViT_Model_Zoo/releases/download/v1.0"


@dataclass(frozen=True)
class VariantConfig:
    name: str
    embed_dims: Tuple[int, int, int]
    depths: Tuple[int, int, int]
    num_heads: Tuple[int, int, int]
    kernels: Tuple[int, int, int, int]
    # published ImageNet-1k top-1 (official README), for docs and sanity checks
    top1: float


VARIANTS = {
    "m0": VariantConfig("efficientvit_m0", (64, 128, 192), (1, 2, 3), (4, 4, 4), (5, 5, 5, 5), 63.2),
    "m1": VariantConfig("efficientvit_m1", (128, 144, 192), (1, 2, 3), (2, 3, 3), (7, 5, 3, 3), 68.4),
    "m2": VariantConfig("efficientvit_m2", (128, 192, 224), (1, 2, 3), (4, 3, 2), (7, 5, 3, 3), 70.8),
    "m3": VariantConfig("efficientvit_m3", (128, 240, 320), (1, 2, 3), (4, 3, 4), (5, 5, 5, 5), 73.4),
    "m4": VariantConfig("efficientvit_m4", (128, 256, 384), (1, 2, 3), (4, 4, 4), (7, 5, 3, 3), 74.3),
    "m5": VariantConfig("efficientvit_m5", (192, 288, 384), (1, 3, 4), (3, 3, 4), (7, 5, 3, 3), 77.1),
}


def get_variant(name):
    """Accepts 'm2', 'M2', 'efficientvit_m2' or 'EfficientViTM2'."""
    key = str(name).lower().replace("efficientvit", "").strip("_- ")
    if key not in VARIANTS:
        raise ValueError(
            f"Unknown EfficientViT variant {name!r}: choose one of "
            f"{', '.join(sorted(VARIANTS))} (EfficientViT-M0..M5, the MSRA CVPR 2023 family)."
        )
    return key, VARIANTS[key]
