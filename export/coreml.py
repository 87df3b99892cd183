"""Keras -> Core ML (.mlpackage, ML Program) for iOS through coremltools' TensorFlow 2 frontend.

Converted from a single concrete function (coremltools refuses Keras 3 SavedModels, which hold
several). Core ML can only *run* on macOS/iOS, so on other systems the file is converted and
structurally checked but its outputs cannot be verified.
"""

import os
import sys

from keras_evit.utils import atomic_output

from .tflite import deploy_model, input_spec


def to_coreml(model, output, precision="fp16", batch_size=1, fuse=True):
    import coremltools as ct
    import tensorflow as tf

    if precision not in ("fp16", "fp32"):
        raise ValueError(f"Core ML precision must be fp16 or fp32, got {precision!r}")
    model = deploy_model(model, fuse)
    fn = tf.function(lambda image: model(image, training=False)).get_concrete_function(input_spec(model, batch_size))
    mlmodel = ct.convert([fn], source="tensorflow", convert_to="mlprogram",
                         minimum_deployment_target=ct.target.iOS16,
                         compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32)
    output = os.fspath(output)
    with atomic_output(output, directory=True) as tmp:
        mlmodel.save(tmp)
    return output


def coreml_io(path):
    """[(name, shape)] of inputs and outputs, read from the saved spec (works on any OS)."""
    import coremltools as ct

    spec = ct.utils.load_spec(path)
    shape = lambda f: tuple(f.type.multiArrayType.shape)  # noqa: E731
    return [(f.name, shape(f)) for f in spec.description.input], [(f.name, shape(f)) for f in spec.description.output]


def can_run_coreml():
    return sys.platform == "darwin"
