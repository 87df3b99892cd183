"""Fold BatchNorm into the preceding conv / following linear for deployment (docs/ARCHITECTURE.md)."""

import keras

from .compat import own_variables, sublayers
from .layers import ConvBN, NormLinear


def _clone_fused(layer):
    config = layer.get_config()
    if "fused" in config:
        config["fused"] = True
    return layer.__class__.from_config(config)


def _copy_fused(src, dst):
    """Copy weights from ``src`` into its fused twin ``dst``, layer by layer in build order."""
    if isinstance(src, (ConvBN, NormLinear)):
        dst.set_weights(src.fused_weights())
        return
    src_children = sublayers(src, recursive=False)
    dst_children = sublayers(dst, recursive=False)
    if not src_children:
        dst.set_weights(src.get_weights())
        return
    if len(src_children) != len(dst_children):
        raise ValueError(f"cannot fuse {src.name}: layer structure changed during cloning")
    own = own_variables(src)
    if own:
        for target, value in zip(own_variables(dst), own):
            target.assign(value.numpy())  # a copy: on JAX, predict donates (frees) a model's own buffers
    for a, b in zip(src_children, dst_children):
        _copy_fused(a, b)


def fuse_batchnorm(model):
    """A copy of ``model`` with every ConvBN and BN+Linear head folded; outputs match to float error."""
    fused = keras.models.clone_model(model, clone_function=_clone_fused)
    for src, dst in zip(model.layers, fused.layers):
        _copy_fused(src, dst)
    return fused
