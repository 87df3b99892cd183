"""Serializable Keras layers for every part of EfficientViT-M."""

from .attention import CascadedGroupAttention, LocalWindowAttention, attention_bias_index
from .blocks import EfficientViTBlock, SubsampleBlock
from .conv import (FFN, ConvBN, DepthwiseConv, NormLinear, PatchEmbedding, PatchMerging, SqueezeExcite,
                   TokenInteraction)
from .norm import BatchNorm
from .preprocessing import ImageNormalization

__all__ = [
    "BatchNorm", "CascadedGroupAttention", "ConvBN", "DepthwiseConv", "EfficientViTBlock", "FFN",
    "ImageNormalization", "LocalWindowAttention", "NormLinear", "PatchEmbedding", "PatchMerging", "SqueezeExcite",
    "SubsampleBlock", "TokenInteraction", "attention_bias_index",
]
