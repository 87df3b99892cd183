"""``EfficientViTImageClassifier``: the keras-hub image-classification task with EfficientViT's own head,
its preprocessor, and an image converter doing the reference's eval transform."""

import keras
import keras_hub

from ..configs import CROP_PCT, DEFAULT_SIZE
from ..layers import NormLinear
from ..layers.preprocessing import IMAGENET_OFFSET, IMAGENET_SCALE
from .backbone import EfficientViTBackbone, at_image_shape
from .presets import PresetsProperty, check_preset, check_weights_before_load, resolve_preset


@keras.saving.register_keras_serializable(package="keras_evit")
class EfficientViTImageConverter(keras_hub.layers.ImageConverter):
    """RGB 0..255 in, normalized images out, as the reference evaluates (timm's eval transform): shorter side
    resized to ``image_size / crop_pct`` (256 px for 224), bicubic with antialiasing, center crop, then
    ``(x / 255 - mean) / std``, the normalization ``include_preprocessing=True`` models do inside.
    ``crop_pct=1`` is keras-hub's plain resize-to-aspect. Channels last."""

    backbone_cls = EfficientViTBackbone
    presets = PresetsProperty()

    def __init__(self, image_size=(DEFAULT_SIZE, DEFAULT_SIZE), scale=None, offset=None, crop_pct=CROP_PCT,
                 interpolation="bicubic", antialias=True, crop_to_aspect_ratio=True, **kwargs):
        if scale is None and offset is None:  # the same normalization as the builders' ImageNormalization
            scale, offset = IMAGENET_SCALE, IMAGENET_OFFSET
        if not 0.0 < float(crop_pct) <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        super().__init__(image_size=image_size, scale=scale, offset=offset, interpolation=interpolation,
                         antialias=antialias, crop_to_aspect_ratio=crop_to_aspect_ratio, **kwargs)
        self.crop_pct = float(crop_pct)

    def _eval_resize(self, images):
        """The reference's geometry: the shorter side resized to ``int(min(image_size) / crop_pct)`` (aspect
        kept, bicubic, antialiased), the center ``image_size`` cut out (offsets rounded as timm/PIL), values
        rounded to 0..255 levels as PIL's uint8 output is."""
        import tensorflow as tf
        from keras import ops

        out_h, out_w = self.image_size
        short = int(min(out_h, out_w) / self.crop_pct)
        if isinstance(images, tf.Tensor):  # tf.data / tf.function: keras-hub runs converters in TensorFlow
            shape = tf.shape(images)
            height, width = tf.cast(shape[-3], tf.float64), tf.cast(shape[-2], tf.float64)
            scale = short / tf.minimum(height, width)
            new_h = tf.maximum(tf.cast(tf.floor(height * scale), tf.int32), out_h)
            new_w = tf.maximum(tf.cast(tf.floor(width * scale), tf.int32), out_w)
            x = tf.image.resize(tf.cast(images, tf.float32), tf.stack([new_h, new_w]), method="bicubic",
                                antialias=True)
            top = tf.cast(tf.round(tf.cast(new_h - out_h, tf.float64) / 2), tf.int32)
            left = tf.cast(tf.round(tf.cast(new_w - out_w, tf.float64) / 2), tf.int32)
            return tf.clip_by_value(tf.round(x[..., top:top + out_h, left:left + out_w, :]), 0.0, 255.0)
        images = ops.convert_to_tensor(images)
        height, width = ops.shape(images)[-3], ops.shape(images)[-2]
        if height <= width:
            new_h, new_w = short, int(short * width / height)
        else:
            new_h, new_w = int(short * height / width), short
        new_h, new_w = max(new_h, out_h), max(new_w, out_w)
        x = ops.image.resize(ops.cast(images, "float32"), (new_h, new_w), interpolation="bicubic", antialias=True)
        top, left = int(round((new_h - out_h) / 2.0)), int(round((new_w - out_w) / 2.0))
        return ops.clip(ops.round(x[..., top:top + out_h, left:left + out_w, :]), 0.0, 255.0)

    def call(self, inputs):
        if self.crop_pct < 1.0 and self.image_size is not None and not isinstance(inputs, (dict, list, tuple)):
            inputs = self._eval_resize(inputs)  # then keras-hub's resize is to the same size: a no-op
        return super().call(inputs)

    def get_config(self):
        config = super().get_config()
        config["crop_pct"] = self.crop_pct
        return config

    @classmethod
    def from_preset(cls, preset, **kwargs):
        return super().from_preset(resolve_preset(preset), **kwargs)


@keras.saving.register_keras_serializable(package="keras_evit")
class EfficientViTImageClassifierPreprocessor(keras_hub.models.ImageClassifierPreprocessor):
    """keras-hub's image-classifier preprocessor with :class:`EfficientViTImageConverter`."""

    backbone_cls = EfficientViTBackbone
    image_converter_cls = EfficientViTImageConverter
    presets = PresetsProperty()

    @classmethod
    def from_preset(cls, preset, **kwargs):
        return super().from_preset(resolve_preset(preset), **kwargs)


@keras.saving.register_keras_serializable(package="keras_evit")
class EfficientViTImageClassifier(keras_hub.models.ImageClassifier):
    """EfficientViT-M image classifier: backbone, global pooling, the reference's BatchNorm + linear head.

    With the ImageNet presets and ``num_classes=1000`` its logits equal ``keras_evit.EfficientViTM*``'s;
    ``from_preset(name, num_classes=n)`` keeps the pretrained backbone under a new head. ``activation=None``
    (the default, as keras-hub) returns logits and ``compile()`` picks a from-logits loss.

    Args:
        backbone: an :class:`EfficientViTBackbone`.
        num_classes: classifier size.
        preprocessor: an :class:`EfficientViTImageClassifierPreprocessor` or None (inputs already normalized).
        pooling: "avg" (the reference) or "max".
        activation: None (logits) or a Keras activation such as "softmax".
        dropout: dropout before the linear layer.
        head_dtype: dtype policy of the head (default: the backbone's).
    """

    backbone_cls = EfficientViTBackbone
    preprocessor_cls = EfficientViTImageClassifierPreprocessor
    presets = PresetsProperty()

    def __init__(self, backbone, num_classes, preprocessor=None, pooling="avg", activation=None, dropout=0.0,
                 head_dtype=None, **kwargs):
        head_dtype = head_dtype or backbone.dtype_policy
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        if pooling == "avg":
            self.pooler = keras.layers.GlobalAveragePooling2D(dtype=head_dtype, name="pooler")
        elif pooling == "max":
            self.pooler = keras.layers.GlobalMaxPooling2D(dtype=head_dtype, name="pooler")
        else:
            raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")
        # named "head": the name the reference's weights are keyed by
        self.output_dense = NormLinear(num_classes, dropout=dropout, dtype=head_dtype, name="head")
        self.output_activation = (keras.layers.Activation(activation, dtype=head_dtype, name="predictions")
                                  if activation is not None else None)

        # === Functional Model ===
        inputs = self.backbone.input
        x = self.output_dense(self.pooler(self.backbone(inputs)))
        outputs = self.output_activation(x) if self.output_activation is not None else x
        keras_hub.models.Task.__init__(self, inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.activation = activation
        self.pooling = pooling
        self.dropout = dropout

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """keras-hub's ``from_preset``; ``efficientvit_m0_imagenet`` .. ``m5`` come from the verified
        official release (downloaded once, then cached as a preset folder). ``image_shape`` other than the
        preset's gives a classifier at that size: bias tables resized, the image converter's size set."""
        image_shape = kwargs.pop("image_shape", None)
        check_preset(preset, load_weights)
        task = super().from_preset(resolve_preset(preset), load_weights=load_weights, **kwargs)
        backbone = at_image_shape(task.backbone, image_shape)
        if backbone is task.backbone:
            return task
        preprocessor = task.preprocessor
        if preprocessor is not None and preprocessor.image_converter is not None:
            preprocessor.image_converter.image_size = tuple(image_shape[:2])
        copy = cls(backbone, task.num_classes, preprocessor=preprocessor, pooling=task.pooling,
                   activation=task.activation, dropout=task.dropout)
        for a, b in zip(task.output_dense.weights, copy.output_dense.weights):  # the head: no size in it
            b.assign(a)
        return copy

    def load_weights(self, filepath, *args, **kwargs):
        """Keras' ``load_weights``, once the file is checked against this classifier
        (``check_weights_before_load``)."""
        check_weights_before_load(self, filepath)
        return super().load_weights(filepath, *args, **kwargs)

    def load_task_weights(self, filepath):
        """keras-hub's ``load_task_weights`` (what its own ``from_preset`` entry points load a preset's
        ``task.weights.h5`` with), once the file is checked against this classifier."""
        check_weights_before_load(self, filepath)
        return super().load_task_weights(filepath)
