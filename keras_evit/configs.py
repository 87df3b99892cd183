"""The model's facts in one place: the table of EfficientViT-M variant configurations, their published
top-1, where the released weights live (and what is known of the files), the preprocessing they were
trained with and their license (docs/ARCHITECTURE.md). ``pretrained_cfg`` gives one variant's facts as
timm's ``pretrained_cfg`` does."""

from dataclasses import dataclass
from typing import Optional, Tuple

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
INTERPOLATION = "bicubic"

# the official release of the ImageNet checkpoints (efficientvit_m0.pth .. efficientvit_m5.pth)
RELEASE_URL = "https://github.com/xinyuliu-jeffrey/EfficientViT_Model_Zoo/releases/download/v1.0"
LICENSE = "MIT"  # the official EfficientViT code and released weights (timm's port: MIT too)


@dataclass(frozen=True)
class ReleasedWeights:
    """One official ImageNet-1k checkpoint. The release publishes no checksum or size, and this project's
    machines cannot reach it, so both stay None until someone records them from a verified download: a
    known SHA-256 or size is then checked on every download. Either way a download is checked against the
    architecture (every name and shape, finite values), and the SHA-256 of the cached copy is recorded and
    checked on every later load."""
    file: str
    sha256: Optional[str] = None
    size_bytes: Optional[int] = None


@dataclass(frozen=True)
class VariantConfig:
    name: str
    embed_dims: Tuple[int, int, int]
    depths: Tuple[int, int, int]
    num_heads: Tuple[int, int, int]
    kernels: Tuple[int, int, int, int]
    # published ImageNet-1k top-1 (official README), for docs and sanity checks
    top1: float
    released: ReleasedWeights


VARIANTS = {
    "m0": VariantConfig("efficientvit_m0", (64, 128, 192), (1, 2, 3), (4, 4, 4), (5, 5, 5, 5), 63.2,
                        ReleasedWeights("efficientvit_m0.pth")),
    "m1": VariantConfig("efficientvit_m1", (128, 144, 192), (1, 2, 3), (2, 3, 3), (7, 5, 3, 3), 68.4,
                        ReleasedWeights("efficientvit_m1.pth")),
    "m2": VariantConfig("efficientvit_m2", (128, 192, 224), (1, 2, 3), (4, 3, 2), (7, 5, 3, 3), 70.8,
                        ReleasedWeights("efficientvit_m2.pth")),
    "m3": VariantConfig("efficientvit_m3", (128, 240, 320), (1, 2, 3), (4, 3, 4), (5, 5, 5, 5), 73.4,
                        ReleasedWeights("efficientvit_m3.pth")),
    "m4": VariantConfig("efficientvit_m4", (128, 256, 384), (1, 2, 3), (4, 4, 4), (7, 5, 3, 3), 74.3,
                        ReleasedWeights("efficientvit_m4.pth")),
    "m5": VariantConfig("efficientvit_m5", (192, 288, 384), (1, 3, 4), (3, 3, 4), (7, 5, 3, 3), 77.1,
                        ReleasedWeights("efficientvit_m5.pth")),
}


def pretrained_cfg(variant):
    """Everything known about ``variant`` and its ImageNet weights, as a plain dict (timm's
    ``pretrained_cfg`` keys where timm has one)."""
    _, cfg = get_variant(variant)
    return {
        "architecture": cfg.name,
        "embed_dims": cfg.embed_dims, "depths": cfg.depths, "num_heads": cfg.num_heads, "kernels": cfg.kernels,
        "url": f"{RELEASE_URL}/{cfg.released.file}",
        "file_sha256": cfg.released.sha256,
        "file_size": cfg.released.size_bytes,
        "file_check": ("SHA-256 " + cfg.released.sha256) if cfg.released.sha256 else
                      "none published: a download is checked against the architecture (names, shapes, finite "
                      "values), and its cached copy's SHA-256 is recorded and checked on every later load",
        "num_classes": 1000,
        "input_size": (3, DEFAULT_SIZE, DEFAULT_SIZE),
        "min_input_size": (3, MIN_SIZE, MIN_SIZE),
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "crop_pct": CROP_PCT,
        "interpolation": INTERPOLATION,
        "top1": cfg.top1,
        "license": LICENSE,
        "paper": "EfficientViT: Memory Efficient Vision Transformer with Cascaded Group Attention (CVPR 2023)",
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
