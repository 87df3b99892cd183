"""Keras -> ONNX through tf2onnx, checked with onnx.checker."""

import os

from keras_evit.utils import atomic_output

from .deploy import deploy_model, input_spec

DEFAULT_OPSET = 17


def to_onnx(model, output, opset=DEFAULT_OPSET, batch_size=None, fuse=True, metadata_props=None):
    """Writes an ONNX model (NHWC input named "image"; ``batch_size=None`` keeps the batch dynamic).

    ``metadata_props``: {key: string} stored in the model (labels, preprocessing, ...)."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    model = deploy_model(model, fuse)

    @tf.autograph.experimental.do_not_convert
    def serve(image):
        return model(image, training=False)

    proto, _ = tf2onnx.convert.from_function(
        tf.function(serve), input_signature=[input_spec(model, batch_size)], opset=opset)
    for key, value in (metadata_props or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    with atomic_output(output) as tmp:
        with open(tmp, "wb") as f:
            f.write(proto.SerializeToString())
    return os.fspath(output)


def onnx_session(path, threads=None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
