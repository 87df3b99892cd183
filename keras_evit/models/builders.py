"""EfficientViT-M0..M5 builders with the ``keras.applications`` signature."""

import os
import re

import keras

from .architecture import build_architecture
from ..configs import get_variant
from ..weights.pretrained import load_weights


def build_model(variant, include_top=True, weights="imagenet", input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax", include_preprocessing=True,
                name=None, dropout_rate=0.0, fused=False):
    """Builds EfficientViT ``variant`` ('m0'..'m5'); see :func:`EfficientViTM0` for the arguments."""
    key, _ = get_variant(variant)
    if not (weights in (None, "imagenet") or isinstance(weights, (str, os.PathLike))):
        raise ValueError(f"weights must be None, 'imagenet' or a file path, got {weights!r}")
    if weights == "imagenet" and include_top and classes != 1000:
        raise ValueError(f"ImageNet weights have a 1000-class head, but classes={classes}: pass "
                         "include_top=False (and add your own head) or classes=1000")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    model = build_architecture(key, include_top=include_top, input_tensor=input_tensor, input_shape=input_shape,
                               pooling=pooling, classes=classes, classifier_activation=classifier_activation,
                               include_preprocessing=include_preprocessing, name=name, dropout_rate=dropout_rate,
                               fused=fused, weights=weights)
    if weights is not None:
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
        include_preprocessing: True (default): the model takes RGB 0..255 (uint8 or float) and
            normalizes inside, as keras.applications EfficientNetV2; False: it takes images
            normalized by :func:`keras_evit.normalize_images`.
        name: model name.
        dropout_rate: dropout before the classifier (0 as the paper; fine-tuning may raise it).
        fused: build the deployment graph, with every BatchNorm folded into the convolution or linear
            layer before it (what :func:`keras_evit.fuse_batchnorm` returns); not trainable as the paper.
    """


def _builder(variant):
    def builder(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                classes=1000, classifier_activation="softmax", include_preprocessing=True, name=None,
                dropout_rate=0.0, fused=False):
        return build_model(variant, include_top=include_top, weights=weights, input_tensor=input_tensor,
                           input_shape=input_shape, pooling=pooling, classes=classes,
                           classifier_activation=classifier_activation,
                           include_preprocessing=include_preprocessing, name=name, dropout_rate=dropout_rate,
                           fused=fused)

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


def _stage_layers(model):
    last = {}
    for layer in model.layers:
        parts = re.split(r"[.-]", layer.name)  # "stages-1-blocks-0" (and "stages.1..." in older files)
        if len(parts) >= 2 and parts[0] == "stages" and parts[1].isdigit():
            last[int(parts[1])] = layer.name
    return [last[s] for s in range(3)] if sorted(last) == [0, 1, 2] else None


def find_backbone(model):
    """The EfficientViT model inside ``model``: itself, or the one it calls as a layer (the
    keras.applications transfer-learning pattern ``x = base(inputs)``), searched depth first."""
    if _stage_layers(model):
        return model
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            try:
                return find_backbone(layer)
            except ValueError:
                continue
    raise ValueError(f"{model.name} is not an EfficientViT model and calls none as a layer "
                     "(no stages-0..2 layers)")


def stage_output_layers(model):
    """Names of the layers that end stages 1..3 (strides 16, 32, 64) of ``model``'s EfficientViT."""
    return _stage_layers(find_backbone(model))


def feature_extractor(model, name=None):
    """A model returning the three stage outputs (strides 16, 32, 64), for detection/segmentation.

    ``model`` may be an EfficientViT or a model that calls one as a layer: the features are the
    backbone's, from the backbone's own input."""
    backbone = find_backbone(model)
    outputs = [backbone.get_layer(n).output for n in _stage_layers(backbone)]
    inputs = backbone.inputs[0] if len(backbone.inputs) == 1 else backbone.inputs  # a list warns on every call
    return keras.Model(inputs, outputs, name=name or f"{model.name}_features")
