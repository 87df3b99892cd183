"""The EfficientViT-M graph for a variant config: stem, three stages of sandwich blocks, head.

Pure architecture (no weights); ``builders`` adds pretrained weights on top.
See docs/ARCHITECTURE.md for the paper's boxes and the layers that implement them.
"""

import keras

from ..configs import DEFAULT_SIZE, KEY_DIM, MIN_SIZE, WINDOW_SIZE, get_variant
from ..layers import EfficientViTBlock, NormLinear, PatchEmbedding, SubsampleBlock
from ..preprocessing import MAX_IMAGE_SIZE, preprocessing_layer


def resolve_input_shape(input_shape, input_tensor, weights):
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
    if max(height, width) > MAX_IMAGE_SIZE:
        raise ValueError(f"input_shape {shape} is too large: at most {MAX_IMAGE_SIZE} px a side (attention-bias "
                         "and window tables grow with the square of the size)")
    if weights is not None and channels != 3:
        raise ValueError(f"pretrained weights expect 3 input channels, got input_shape {shape}")
    return shape


def build_stages(x, embed_dims, depths, num_heads, kernels, fused=False, dtype=None):
    """The stem and the three stages of sandwich blocks applied to the normalized image tensor ``x``;
    returns each stage's output (strides 16, 32 and 64). Layer names are the ones weights are keyed by."""
    outputs = []
    x = PatchEmbedding(embed_dims[0], fused=fused, dtype=dtype, name="patch_embed")(x)
    for stage, (dim, depth, heads) in enumerate(zip(embed_dims, depths, num_heads)):
        if stage > 0:
            x = SubsampleBlock(dim, fused=fused, dtype=dtype, name=f"stages-{stage}-downsample")(x)
        for j in range(depth):
            x = EfficientViTBlock(heads, kernels, KEY_DIM, WINDOW_SIZE, fused=fused, dtype=dtype,
                                  name=f"stages-{stage}-blocks-{j}")(x)
        outputs.append(x)
    return outputs


def build_architecture(variant, include_top=True, input_tensor=None, input_shape=None, pooling=None,
                       classes=1000, classifier_activation="softmax", include_preprocessing=True, name=None,
                       dropout_rate=0.0, fused=False, weights=None):
    """An EfficientViT ``variant`` Keras model with random initialization (``weights`` only checks the
    input shape is one pretrained weights can take)."""
    _, cfg = get_variant(variant)
    shape = resolve_input_shape(input_shape, input_tensor, weights)
    if input_tensor is None:
        inputs = keras.Input(shape=shape, name="image")
    elif not keras.backend.is_keras_tensor(input_tensor):
        inputs = keras.Input(tensor=input_tensor, shape=shape, name="image")
    else:
        inputs = input_tensor

    x = preprocessing_layer()(inputs) if include_preprocessing else inputs
    x = build_stages(x, cfg.embed_dims, cfg.depths, cfg.num_heads, cfg.kernels, fused=fused)[-1]
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
    return model
