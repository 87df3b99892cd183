"""``EfficientViTBackbone``: the stem and three stages as a keras-hub ``Backbone``."""

import keras
import keras_hub

from ..models.architecture import build_stages, resolve_input_shape
from ..configs import DEFAULT_SIZE
from .presets import PresetsProperty, check_preset, check_weights_before_load, resolve_preset


# a preset's config.json is read from disk: sizes beyond the family's (M5: 384 wide, depth 4, 4 heads,
# kernels up to 7) by a wide margin are refused before anything is built
MAX_WIDTH, MAX_DEPTH, MAX_HEADS, MAX_KERNEL = 2048, 32, 32, 15


def check_config(embed_dims, depths, num_heads, kernel_sizes):
    """Refuses a config no EfficientViT-M is built from (a crafted preset must not cost unbounded memory)."""
    def ints(name, values, count, low, high):
        values = list(values)
        if (count is not None and len(values) != count) or not values or \
                not all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in values):
            raise ValueError(f"EfficientViTBackbone: {name}={values!r} is not a valid EfficientViT-M config "
                             f"({count or 'some'} integers in {low}..{high})")

    ints("embed_dims", embed_dims, 3, 1, MAX_WIDTH)
    ints("depths", depths, 3, 1, MAX_DEPTH)
    ints("num_heads", num_heads, 3, 1, MAX_HEADS)
    ints("kernel_sizes", kernel_sizes, None, 1, MAX_KERNEL)
    if max(num_heads) > len(list(kernel_sizes)):
        raise ValueError(f"EfficientViTBackbone: {max(num_heads)} heads need as many kernel_sizes, got {kernel_sizes}")


@keras.saving.register_keras_serializable(package="keras_evit")
class EfficientViTBackbone(keras_hub.models.Backbone):
    """EfficientViT-M feature extractor (Liu et al., CVPR 2023), channels last.

    Takes images normalized with the ImageNet mean and std (the image converter's output) and returns the
    last stage's map (stride 64); ``pyramid_outputs`` holds ``P4``, ``P5`` and ``P6`` (strides 16, 32, 64)
    for detection and segmentation heads. The input size is static, at least 64 px a side: attention
    windows and bias tables depend on it.

    Args:
        embed_dims, depths, num_heads: per stage, as in the variant table (``keras_evit.VARIANTS``).
        kernel_sizes: depthwise kernel sizes of the four cascaded attention heads.
        image_shape: ``(height, width, 3)``.
        dtype: the dtype policy of every layer.
    """

    presets = PresetsProperty()

    def __init__(self, embed_dims, depths, num_heads, kernel_sizes, image_shape=(DEFAULT_SIZE, DEFAULT_SIZE, 3),
                 dtype=None, **kwargs):
        check_config(embed_dims, depths, num_heads, kernel_sizes)
        image_shape = resolve_input_shape(image_shape, None, None)
        # === Functional Model ===
        inputs = keras.Input(shape=image_shape, name="images")
        stages = build_stages(inputs, embed_dims, depths, num_heads, kernel_sizes, dtype=dtype)
        super().__init__(inputs=inputs, outputs=stages[-1], dtype=dtype, **kwargs)

        # === Config ===
        self.embed_dims = tuple(int(d) for d in embed_dims)
        self.depths = tuple(int(d) for d in depths)
        self.num_heads = tuple(int(h) for h in num_heads)
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        self.image_shape = tuple(image_shape)
        self.pyramid_outputs = {f"P{level}": x for level, x in zip((4, 5, 6), stages)}

    def get_config(self):
        config = super().get_config()
        config.update({"embed_dims": list(self.embed_dims), "depths": list(self.depths),
                       "num_heads": list(self.num_heads), "kernel_sizes": list(self.kernel_sizes),
                       "image_shape": list(self.image_shape)})
        return config

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """keras-hub's ``from_preset``; ``efficientvit_m0_imagenet`` .. ``m5`` come from the verified
        official release (downloaded once, then cached as a preset folder). ``image_shape`` other than the
        preset's resizes the attention-bias tables (bicubic, with a warning), as the builders do."""
        image_shape = kwargs.pop("image_shape", None)
        check_preset(preset, load_weights)
        backbone = super().from_preset(resolve_preset(preset), load_weights=load_weights, **kwargs)
        return at_image_shape(backbone, image_shape)

    def load_weights(self, filepath, *args, **kwargs):
        """Keras' ``load_weights``, once the file is checked against this backbone: keras-hub's own
        ``from_preset`` entry points load a preset's weights here (``check_weights_before_load``)."""
        check_weights_before_load(self, filepath)
        return super().load_weights(filepath, *args, **kwargs)


def at_image_shape(backbone, image_shape):
    """``backbone`` itself, or a copy taking ``image_shape`` with the same weights (bias tables resized)."""
    from ..weights import assign_state_dict, state_dict_from_model

    if image_shape is None or tuple(image_shape) == backbone.image_shape:
        return backbone
    copy = backbone.__class__.from_config({**backbone.get_config(), "image_shape": tuple(image_shape)})
    state = state_dict_from_model(backbone, with_bn_counters=False, layout="keras")
    assign_state_dict(copy, state, source="the preset", layout="keras")
    return copy
