"""Keras -> Core ML (.mlpackage, ML Program) for iOS through coremltools' TensorFlow 2 frontend.

Converted from a single concrete function (coremltools refuses Keras 3 SavedModels, which hold
several). Core ML can only *run* on macOS/iOS, so on other systems the file is converted and
structurally checked but its outputs cannot be verified.
"""

import os
import sys

from keras_evit.utils import atomic_output

from .deploy import deploy_model, input_spec


def to_coreml(model, output, precision="fp16", batch_size=1, fuse=True, metadata=None):
    """With ``metadata`` (see ``export.metadata.model_info``) a raw-RGB model gets an image input (Vision
    and CVPixelBuffer take it as is) and a classifier output carrying the class labels."""
    import coremltools as ct
    import tensorflow as tf

    from keras_evit.preprocessing import has_preprocessing

    if precision not in ("fp16", "fp32"):
        raise ValueError(f"Core ML precision must be fp16 or fp32, got {precision!r}")
    raw = has_preprocessing(model)
    spec = input_spec(model, batch_size)
    model = deploy_model(model, fuse)
    fn = tf.function(lambda image: model(image, training=False)).get_concrete_function(spec)
    options = {}
    if metadata is not None:
        options["classifier_config"] = ct.ClassifierConfig(class_labels=list(metadata["labels"]))
        if raw:  # 0..255 RGB straight from the camera/photo; the model normalizes inside
            options["inputs"] = [ct.ImageType(name=fn.inputs[0].name.split(":")[0], shape=tuple(spec.shape),
                                              color_layout=ct.colorlayout.RGB, scale=1.0, channel_first=False)]
    mlmodel = ct.convert([fn], source="tensorflow", convert_to="mlprogram",
                         minimum_deployment_target=ct.target.iOS16,
                         compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                         **options)
    if metadata is not None:
        mlmodel.short_description = metadata["description"]
        mlmodel.author, mlmodel.license, mlmodel.version = metadata["author"], metadata["license"], metadata["version"]
    output = os.fspath(output)
    with atomic_output(output, directory=True) as tmp:
        mlmodel.save(tmp)
    return output


def coreml_io(path):
    """[(name, shape)] of inputs and outputs, read from the saved spec (works on any OS)."""
    import coremltools as ct

    spec = ct.utils.load_spec(path)

    def describe(feature):
        kind = feature.type.WhichOneof("Type")
        if kind == "multiArrayType":
            return tuple(feature.type.multiArrayType.shape)
        if kind == "imageType":
            return f"image {feature.type.imageType.height}x{feature.type.imageType.width} RGB"
        return kind

    return ([(f.name, describe(f)) for f in spec.description.input],
            [(f.name, describe(f)) for f in spec.description.output])


def can_run_coreml():
    return sys.platform == "darwin"
