"""Keras -> ONNX through tf2onnx, checked with onnx.checker."""

import os

from keras_evit.utils import atomic_output

from .deploy import deploy_model, input_spec

DEFAULT_OPSET = 17
CHANNELS_FIRST = [0, 3, 1, 2]


def to_onnx(model, output, opset=DEFAULT_OPSET, batch_size=None, fuse=True, metadata_props=None):
    """Writes an ONNX model (NHWC input named "image"; ``batch_size=None`` keeps the batch dynamic).

    A model that takes raw pixels keeps its normalization as a per-channel multiply and add, moved behind
    the input's transpose to channels-first: there ONNX Runtime runs it as fast as a file fed normalized
    images, in as little memory (folded into the stem like the TFLite file, its border correction is a
    full-size add after the first conv, which costs ONNX Runtime a third more memory at batch 16).

    ``metadata_props``: {key: string} stored in the model (labels, preprocessing, ...)."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    model = deploy_model(model, fuse, fold_input=False)

    @tf.autograph.experimental.do_not_convert
    def serve(image):
        return model(image, training=False)

    proto, _ = tf2onnx.convert.from_function(
        tf.function(serve), input_signature=[input_spec(model, batch_size)], opset=opset)
    channels_first_input_ops(proto)
    for key, value in (metadata_props or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    with atomic_output(output) as tmp:
        with open(tmp, "wb") as f:
            f.write(proto.SerializeToString())
    return os.fspath(output)


def _constants(graph):
    from onnx import numpy_helper

    found = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return found


def channels_first_input_ops(proto):
    """Moves per-channel Mul/Add nodes between the NHWC input and its transpose to channels-first behind the
    transpose, in place; returns how many moved.

    ONNX Runtime broadcasts a 3-value constant over NHWC pixels three values at a time, far slower than
    over a channels-first plane. Graphs of any other shape are left as they are."""
    from onnx import numpy_helper

    graph = proto.graph
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = _constants(graph)
    channels = graph.input[0].type.tensor_type.shape.dim[-1].dim_value
    graph_outputs = {o.name for o in graph.output}
    chain, tensor = [], graph.input[0].name
    while len(consumers.get(tensor, [])) == 1 and tensor not in graph_outputs:
        node = consumers[tensor][0]
        if node.op_type not in ("Mul", "Add") or node.input[0] != tensor or node.input[1] not in constants:
            break
        value = constants[node.input[1]]
        if value.size != 1 and (value.size != channels or value.shape[-1] != channels):
            return 0  # not one value per channel
        chain.append(node)
        tensor = node.output[0]
    ends = consumers.get(tensor, [])
    if not chain or len(ends) != 1 or ends[0].op_type != "Transpose" or tensor in graph_outputs:
        return 0
    transpose = ends[0]
    perm = [list(a.ints) for a in transpose.attribute if a.name == "perm"]
    if perm != [CHANNELS_FIRST]:
        return 0
    # input -> Transpose -> the chain, each constant reshaped to (1, C, 1, 1) -> the transpose's consumers
    out, old_constants = transpose.output[0], {node.input[1] for node in chain}
    transpose.input[0], transpose.output[0] = graph.input[0].name, out + "/raw_nchw"
    previous = transpose.output[0]
    for i, node in enumerate(chain):
        value = constants[node.input[1]]
        name = f"{node.name or node.op_type}/nchw_{i}"
        graph.initializer.append(numpy_helper.from_array(
            value.reshape(1, -1, 1, 1).astype(value.dtype) if value.size > 1 else value, name))
        node.input[0], node.input[1] = previous, name
        previous = node.output[0]
    for consumer in consumers.get(out, []):
        for j, name in enumerate(consumer.input):
            if name == out:
                consumer.input[j] = previous
    moved = [transpose, *chain]
    rest = [node for node in graph.node if all(node is not m for m in moved)]
    del graph.node[:]
    graph.node.extend(moved + rest)
    _drop_unused_initializers(graph, old_constants)
    return len(chain)


def _drop_unused_initializers(graph, names):
    """Removes the initializers among ``names`` that no node reads any more."""
    used = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name in used or init.name not in names]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def onnx_session(path, threads=None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
