"""The int8-matmul probe: symmetric right operands make XNNPACK take int8 BATCH_MATMUL, same results."""

import numpy as np
import pytest

from keras_evit.benchmarks.int8_attention import symmetric_right_operands
from keras_evit.export.tflite import xnnpack_partitions

TOKENS, DIM = 49, 16


def _attention_tflite(quantize):
    """A one-head attention (q k^T, softmax, times v) between two dense layers, as TFLite bytes."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    w_in = tf.constant(rng.normal(size=(DIM, 3 * DIM)).astype("float32") * 0.3)
    w_out = tf.constant(rng.normal(size=(DIM, DIM)).astype("float32") * 0.3)

    @tf.function(input_signature=[tf.TensorSpec((1, TOKENS, DIM), tf.float32)])
    def attend(x):
        q, k, v = tf.split(tf.matmul(x, w_in) + 0.5, 3, axis=-1)  # + 0.5: asymmetric ranges, as in a model
        weights = tf.nn.softmax(tf.matmul(q, k, transpose_b=True))
        return tf.matmul(tf.matmul(weights, v), w_out)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([attend.get_concrete_function()], attend)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.normal(size=(1, TOKENS, DIM)).astype("float32")] for _ in range(16))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def _run(path, x):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_symmetric_right_operands_put_int8_matmuls_on_xnnpack(tmp_path):
    before, after = tmp_path / "before.tflite", tmp_path / "after.tflite"
    before.write_bytes(_attention_tflite(quantize=True))
    after.write_bytes(symmetric_right_operands(before.read_bytes()))
    _, left_before = xnnpack_partitions(before)
    _, left_after = xnnpack_partitions(after)
    assert left_before.count("BATCH_MATMUL") == 2  # asymmetric K and V: TFLite's own kernels
    assert "BATCH_MATMUL" not in left_after and left_after.count("QUANTIZE") == 0  # XNNPACK takes both
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(after))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    matmuls = [op for op in interpreter._get_ops_details() if op["op_name"] == "BATCH_MATMUL"]
    assert len(matmuls) == 2
    assert all(tensors[op["inputs"][1]]["quantization"][1] == 0 for op in matmuls)
    x = np.random.default_rng(1).normal(size=(1, TOKENS, DIM)).astype("float32")
    y_before, y_after = _run(before, x), _run(after, x)
    scale = np.abs(y_before).max()
    assert scale > 0.1 and np.abs(y_after - y_before).max() <= 0.1 * scale  # one extra rounding, no more


def test_a_file_without_int8_matmuls_is_refused(tmp_path):
    with pytest.raises(ValueError, match="nothing to do"):
        symmetric_right_operands(_attention_tflite(quantize=False))
