"""keras-evit: EfficientViT-M0..M5 (MSRA, CVPR 2023) for Keras 3, exact to the timm reference."""

__version__ = "0.1.0"

from . import layers, optimizers  # optimizers: registers AGCAdamW, which run outputs name
from .analysis import attention_maps, head_similarity
from .artifacts import load_classifier
from .configs import VARIANTS, get_variant
from .fusion import fold_normalization, fuse_batchnorm
from .models import (
    EfficientViTM0, EfficientViTM1, EfficientViTM2, EfficientViTM3, EfficientViTM4, EfficientViTM5,
    build_model, feature_extractor,
)
from .preprocessing import decode_predictions, load_image, normalize_images, preprocess_input

__all__ = [
    "EfficientViTM0", "EfficientViTM1", "EfficientViTM2", "EfficientViTM3", "EfficientViTM4",
    "EfficientViTM5", "VARIANTS", "attention_maps", "build_model", "decode_predictions", "feature_extractor",
    "fold_normalization", "fuse_batchnorm", "get_variant", "head_similarity", "layers", "load_classifier", "load_image",
    "normalize_images", "preprocess_input",
]
