"""EfficientViT-M0..M5 builders with the ``keras.applications`` signature."""

import os

import keras

from .configs import DEFAULT_SIZE, KEY_DIM, MIN_SIZE, WINDOW_SIZE, get_variant
from .layers import EfficientViTBlock, NormLinear, PatchEmbedding, SubsampleBlock


def _resolve_input_shape(input_shape, input_tensor, weights):
    if input_tensor is not None:
        shape = tuple(input_tensor.shape[1:])
    elif input_shape is None:
        shape = (DEFAULT_SIZE, DEFAULT_SIZE, 3)
    else:
        shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {shape}")
    height, width, channels = shape
    if channels != 3 and shape[0] == 3:
        raise ValueError(f"input_shape {shape} looks channels-first: EfficientViT in Keras takes "
                         f"channels-last images, e.g. ({width}, {channels}, 3)")
    if height is None or width is None:
        raise ValueError(f"input_shape {shape} has a dynamic size: EfficientViT needs a static height and "
                         "width (its attention windows and bias tables depend on it), e.g. (224, 224, 3)")
    if min(height, width) < MIN_SIZE:
        raise ValueError(f"input_shape {shape} is too small: EfficientViT needs at least {MIN_SIZE} px a side")
    if weights is not None and channels != 3:
        raise ValueError(f"pretrained weights expect 3 input channels, got input_shape {shape}")
    return shape


def build_model(variant, include_top=True, weights="imagenet", input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", name=None, dropout_rate=0.0,
                fused=False):
    """Builds EfficientViT ``variant`` ('m0'..'m5'); see :func:`EfficientViTM0` for the arguments."""
    key, cfg = get_variant(variant)
    if not (weights in (None, "imagenet") or isinstance(weights, (str, os.PathLike))):
        raise ValueError(f"weights must be None, 'imagenet' or a file path, got {weights!r}")
    if weights == "imagenet" and include_top and classes != 1000:
        raise ValueError(f"ImageNet weights have a 1000-class head, but classes={classes}: pass "
                         "include_top=False (and add your own head) or classes=1000")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    shape = _resolve_input_shape(input_shape, input_tensor, weights)
    if input_tensor is None:
        inputs = keras.Input(shape=shape, name="image")
    elif not keras.backend.is_keras_tensor(input_tensor):
        inputs = keras.Input(tensor=input_tensor, shape=shape, name="image")
    else:
        inputs = input_tensor

    x = PatchEmbedding(cfg.embed_dims[0], fused=fused, name="patch_embed")(inputs)
    for stage, (dim, depth, heads) in enumerate(zip(cfg.embed_dims, cfg.depths, cfg.num_heads)):
        if stage > 0:
            x = SubsampleBlock(dim, fused=fused, name=f"stages.{stage}.downsample")(x)
        for j in range(depth):
            x = EfficientViTBlock(heads, cfg.kernels, KEY_DIM, WINDOW_SIZE, fused=fused,
                                  name=f"stages.{stage}.blocks.{j}")(x)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = NormLinear(classes, dropout=dropout_rate, fused=fused, name="head")(x)
        if classifier_activation is not None:
            x = keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)

    model_inputs = keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else inputs
    model = keras.Model(model_inputs, x, name=name or cfg.name)
    if weights is not None:
        from .weights import load_weights

        load_weights(model, weights, key)
    return model


_DOC = """Instantiates EfficientViT-{v} (Liu et al., CVPR 2023), {top1}% ImageNet top-1 (official).

    Args:
        include_top: whether to include the BN + linear classifier.
        weights: None (random init), "imagenet" (official release, downloaded and cached), or a path
            to a .weights.h5, timm .safetensors, official/timm .pth, or .npz file.
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: static (height, width, 3), default (224, 224, 3); any size >= 64 px.
        pooling: with include_top=False, None (stage-3 map), "avg" or "max".
        classes: classifier size; must be 1000 with ImageNet weights and include_top=True.
        classifier_activation: activation of the top layer (None returns logits).
        name: model name.
    Inputs are RGB images normalized by :func:`keras_evit.preprocess_input`.
    """


def _builder(variant):
    def builder(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                classes=1000, classifier_activation="softmax", name=None, **kwargs):
        return build_model(variant, include_top=include_top, weights=weights, input_tensor=input_tensor,
                           input_shape=input_shape, pooling=pooling, classes=classes,
                           classifier_activation=classifier_activation, name=name, **kwargs)

    _, cfg = get_variant(variant)
    builder.__name__ = builder.__qualname__ = f"EfficientViT{variant.upper()}"
    builder.__doc__ = _DOC.format(v=variant.upper(), top1=cfg.top1)
    return builder


EfficientViTM0 = _builder("m0")
EfficientViTM1 = _builder("m1")
EfficientViTM2 = _builder("m2")
EfficientViTM3 = _builder("m3")
EfficientViTM4 = _builder("m4")
EfficientViTM5 = _builder("m5")


def stage_output_layers(model):
    """Names of the layers that end stages 1..3 (strides 16, 32, 64)."""
    last = {}
    for layer in model.layers:
        parts = layer.name.split(".")
        if len(parts) >= 2 and parts[0] == "stages" and parts[1].isdigit():
            last[int(parts[1])] = layer.name
    if sorted(last) != [0, 1, 2]:
        raise ValueError(f"{model.name} is not an EfficientViT model (no stages.0..2 layers)")
    return [last[s] for s in range(3)]


def feature_extractor(model, name=None):
    """A model returning the three stage outputs (strides 16, 32, 64), for detection/segmentation."""
    outputs = [model.get_layer(n).output for n in stage_output_layers(model)]
    return keras.Model(model.inputs, outputs, name=name or f"{model.name}_features")
