"""The deploy form: BatchNorm folded into the preceding conv / following linear, and the in-model
normalization folded into the stem's first conv (docs/ARCHITECTURE.md). Both work on EfficientViT models
and on any Keras model that calls one as a layer."""

import keras

from ..compat import call_input, own_variables, sublayers
from ..layers import ConvBN, NormLinear, PatchEmbedding
from ..preprocessing import is_normalization


def _clone_nested(model, clone_layer):
    """``keras.models.clone_model`` that also clones the models ``model`` calls as layers."""
    def clone(layer):
        if isinstance(layer, keras.Model):
            return _clone_nested(layer, clone_layer)
        return clone_layer(layer)

    return keras.models.clone_model(model, clone_function=clone)


def _layer_pairs(src, dst):
    """(source layer, clone) pairs of two models of the same graph, nested models' layers included."""
    if len(src.layers) != len(dst.layers):
        raise ValueError(f"cannot transform {src.name}: layer structure changed during cloning")
    for a, b in zip(src.layers, dst.layers):
        if isinstance(a, keras.Model):
            yield from _layer_pairs(a, b)
        else:
            yield a, b


def _clone_layer(layer, fused=False, dtype=None):
    config = layer.get_config()
    if fused and "fused" in config:
        config["fused"] = True
    if dtype is not None and "dtype" in config:
        config["dtype"] = dtype
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


def fuse_batchnorm(model, dtype=None):
    """A copy of ``model`` with every ConvBN and BN+Linear head folded; outputs match to float error.

    ``dtype``: a dtype policy for every layer of the copy (e.g. "float32" to deploy a model trained under
    mixed precision); default: each layer keeps its own."""
    fused = _clone_nested(model, lambda layer: _clone_layer(layer, fused=True, dtype=dtype))
    for src, dst in _layer_pairs(model, fused):
        _copy_fused(src, dst)
    return fused


def float32_copy(model):
    """``model`` itself when it computes in float32, else a float32 copy with the same weights: what an
    exported file computes, so the reference an export is verified against."""
    if all(layer.compute_dtype == "float32" for layer in [model, *sublayers(model)]):
        return model
    copy = _clone_nested(model, lambda layer: _clone_layer(layer, dtype="float32"))
    copy.set_weights(model.get_weights())
    return copy


def _foldable_stems(model, tensor):
    """Fused PatchEmbeddings of ``model`` fed straight by ``tensor``, or by the input of a model it calls
    on ``tensor`` (a backbone called as a layer), at any depth."""
    stems = []
    for layer in model.layers:
        if call_input(layer) is not tensor:
            continue
        if isinstance(layer, PatchEmbedding) and layer.fused and layer.input_scale is None:
            stems.append(layer)
        elif isinstance(layer, keras.Model) and len(layer.inputs) == 1:
            stems += _foldable_stems(layer, layer.inputs[0])
    return stems


def _normalized_stems(model):
    """{id(stem): normalization layer} for every fused PatchEmbedding fed straight by the normalization,
    also when the normalization feeds a model that calls the stem on its input."""
    found = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.update(_normalized_stems(layer))
    for norm in model.layers:
        if is_normalization(norm):
            found.update({id(stem): norm for stem in _foldable_stems(model, norm.output)})
    return found


def _per_channel(value, channels):
    values = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value] * channels)]
    if len(values) != channels:
        raise ValueError(f"cannot fold a normalization of {len(values)} channels into a {channels}-channel stem")
    return values


def fold_normalization(model):
    """A copy of a fused ``model`` whose stem takes raw pixels with the normalization folded into its
    first conv, also through a backbone or task called as a layer (same outputs to float error; in a TFLite
    file one small add instead of two broadcast element-wise passes over the image). Models without in-model
    normalization come back unchanged."""
    stems = _normalized_stems(model)
    if not stems:
        return model
    norms = {id(norm) for norm in stems.values()}

    def clone(layer):
        if id(layer) in norms:  # the normalization now lives in the stem's weights
            return keras.layers.Identity(name=layer.name)
        config = layer.get_config()
        if id(layer) in stems:
            channels = int(layer.input.shape[-1])
            norm = stems[id(layer)]
            config.update(input_scale=_per_channel(norm.scale, channels),
                          input_offset=_per_channel(norm.offset, channels))
        return layer.__class__.from_config(config)

    folded = _clone_nested(model, clone)
    for src, dst in _layer_pairs(model, folded):
        if id(src) in stems:
            for a, b in zip(src.convs[1:], dst.convs[1:]):
                b.set_weights(a.get_weights())
            kernel, bias, border = src.folded_input_weights(dst.input_scale, dst.input_offset,
                                                            tuple(src.input.shape[1:3]))
            dst.convs[0].set_weights([kernel, bias])
            dst.border_bias.assign(border)
        elif id(src) not in norms:
            dst.set_weights(src.get_weights())
    return folded
