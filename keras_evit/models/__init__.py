"""The model: ``architecture`` (the graph for a variant config), ``builders`` (``EfficientViTM0..M5`` with
the ``keras.applications`` signature, ``build_model``, ``feature_extractor``) and ``fusion`` (the deployment
copy: BatchNorm folded, normalization folded into the stem); ``inference`` runs a model on a few images."""

from .builders import (
    EfficientViTM0, EfficientViTM1, EfficientViTM2, EfficientViTM3, EfficientViTM4, EfficientViTM5, build_model,
    feature_extractor,
)
from .fusion import fold_normalization, fuse_batchnorm

__all__ = [
    "EfficientViTM0", "EfficientViTM1", "EfficientViTM2", "EfficientViTM3", "EfficientViTM4", "EfficientViTM5",
    "build_model", "feature_extractor", "fold_normalization", "fuse_batchnorm",
]
