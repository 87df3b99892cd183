"""Keras -> TFLite (LiteRT) with builtin ops only: fp32, fp16, dynamic-range int8, full int8, and
int8 with float attention (``int8-mixed``)."""

import collections
import contextlib
import functools
import hashlib
import io
import os
import re
import tempfile
import weakref

import numpy as np

from keras_evit.utils import atomic_output

from .deploy import deploy_model, input_spec

QUANTIZE_MODES = ("none", "fp16", "dynamic", "int8", "int8-mixed")
CALIBRATED_MODES = ("int8", "int8-mixed")
# XNNPACK has no int8 kernels for these: in a full-int8 file each one splits the delegate graph and
# runs on TFLite's slower builtin kernels (M0: 32 partitions, int8 slower than fp32 on x86). Kept
# in float, every conv/dense stays int8 and the attention runs on XNNPACK's fp32 kernels.
FLOAT_OPS = ("BATCH_MATMUL", "SOFTMAX", "RELU")


def _saved_model(model, batch_size, directory):
    """Keras 3 ExportArchive -> SavedModel, the conversion path TensorFlow recommends for Keras 3.

    The endpoint alone brings every variable it reads; the model itself is not tracked, because tracking it
    makes SavedModel trace it a second time for its default signature (the same file, ~10 s slower for M0).
    """
    import keras

    archive = keras.export.ExportArchive()
    archive.add_endpoint("serve", functools.partial(model.__call__, training=False),
                         input_signature=[input_spec(model, batch_size)])
    archive.write_out(directory, verbose=False)


def _representative(images, batch_size):
    def gen():
        for start in range(0, len(images) - batch_size + 1, batch_size):
            yield [images[start:start + batch_size].astype(np.float32)]
    return gen


def check_quantize(quantize):
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"unknown quantization {quantize!r}: choose one of {', '.join(QUANTIZE_MODES)}")


def check_calibration(quantize, calibration_images, batch_size):
    if quantize not in CALIBRATED_MODES:
        return
    if calibration_images is None:
        raise ValueError(f"{quantize} needs calibration images: pass --calibration-dir DIR "
                         "(a folder of images, e.g. ../shared/data/imagenet-sample)")
    if len(calibration_images) < batch_size:
        raise ValueError(f"{quantize} calibration has {len(calibration_images)} image(s), fewer than the export "
                         f"batch size {batch_size}: add images to the calibration folder or lower --batch-size")


def with_pixel_extremes(images, batch_size):
    """``images`` plus a black and a white batch, so the calibrated input range is exactly 0..255."""
    shape = (batch_size,) + tuple(images.shape[1:])
    return np.concatenate([np.zeros(shape, np.float32), np.full(shape, 255.0, np.float32),
                           np.asarray(images, np.float32)])


def _checked_calibration(quantize, calibration_images, batch_size, int8_io):
    """The calibration images a conversion takes, after checking the mode's arguments."""
    check_quantize(quantize)
    check_calibration(quantize, calibration_images, batch_size)
    if int8_io and quantize != "int8":
        raise ValueError(f"--int8-io needs --quantize int8 ({quantize} keeps float input/output)")
    if int8_io:  # integer input is raw pixel bytes: pin its range to 0..255 so scale 1, zero point 0
        return with_pixel_extremes(calibration_images, batch_size)
    return calibration_images


def convert_tflite(model, quantize="none", calibration_images=None, batch_size=1, int8_io=False,
                   float_ops=FLOAT_OPS):
    """TFLite flatbuffer bytes. ``calibration_images``: preprocessed float images for ``int8``;
    ``float_ops``: the op types ``int8-mixed`` keeps in float."""
    calibration_images = _checked_calibration(quantize, calibration_images, batch_size, int8_io)
    with tempfile.TemporaryDirectory() as saved:
        _saved_model(model, batch_size, saved)
        return _convert_saved_model(saved, quantize, calibration_images, batch_size, int8_io, float_ops)


def _convert_saved_model(saved, quantize, calibration_images, batch_size, int8_io, float_ops=FLOAT_OPS):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize in CALIBRATED_MODES:
        converter.representative_dataset = _representative(calibration_images, batch_size)
    if quantize == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:  # uint8, not int8: the integer type MediaPipe and most app code accept
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
    if quantize == "int8-mixed":
        return _mixed_int8(converter, calibration_images, batch_size, float_ops)
    return converter.convert()


def _mixed_int8(converter, calibration_images, batch_size, float_ops):
    """Full-int8 calibration with ``float_ops`` left in float (TFLite's selective quantization)."""
    import tensorflow as tf

    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(float_ops))
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=_representative(calibration_images[:batch_size], batch_size),
        debug_options=options)
    return debugger.get_nondebug_quantized_model()


def op_names(tflite_path):
    from ai_edge_litert.interpreter import Interpreter

    from keras_evit.compat import tflite_ops

    return [op["op_name"] for op in tflite_ops(Interpreter(model_path=tflite_path))]


def xnnpack_partitions(tflite_path):
    """(number of XNNPACK partitions, names of the ops it left to LiteRT's own kernels) for a file.

    Each op XNNPACK declines splits the delegated graph and runs on a slower kernel; a file that
    XNNPACK takes whole has one partition and no such ops. A node is outside the delegate when none of
    its outputs is a partition's output and its result reaches a partition's input, the graph output,
    or another such node.
    """
    import collections

    from ai_edge_litert.interpreter import Interpreter

    from keras_evit.compat import tflite_ops

    interpreter = Interpreter(model_path=os.fspath(tflite_path), num_threads=1)
    interpreter.allocate_tensors()
    nodes = tflite_ops(interpreter)
    partitions = [n for n in nodes if n["op_name"] == "DELEGATE"]
    ops = [n for n in nodes if n["op_name"] != "DELEGATE"]
    partition_out = {int(t) for n in partitions for t in n["outputs"]}
    needed = {int(t) for n in partitions for t in n["inputs"]} | {d["index"] for d in interpreter.get_output_details()}
    readers = collections.defaultdict(list)
    for op in ops:
        for t in op["inputs"]:
            readers[int(t)].append(op["index"])
    outside = {}
    for op in reversed(ops):  # topological order: every reader comes later
        outs = {int(t) for t in op["outputs"]}
        outside[op["index"]] = not outs & partition_out and bool(
            outs & needed or any(outside.get(r) for t in outs for r in readers[t]))
    return len(partitions), [op["op_name"] for op in ops if outside[op["index"]]]


def non_builtin_ops(tflite_path):
    """Flex (Select TF) and custom ops, which stock mobile runtimes do not have."""
    return sorted({name for name in op_names(tflite_path)
                   if not re.fullmatch(r"[A-Z0-9_]+", name) or name in ("CUSTOM", "DELEGATE")})


def gpu_compatibility(tflite_path):
    """(compatible, report) from the TFLite analyzer's GPU-delegate check."""
    import tensorflow as tf

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        tf.lite.experimental.Analyzer.analyze(model_path=tflite_path, gpu_compatibility=True)
    report = buffer.getvalue()
    compatible = "looks compatible with GPU delegate" in report
    issues = [line.strip() for line in report.splitlines() if "GPU COMPATIBILITY WARNING" in line
              or "not supported" in line.lower()]
    return compatible, "\n".join(issues) if issues else ("compatible" if compatible else report[-2000:])


SAVED_MODELS_KEPT = 4  # a model and its twin at two batch sizes: what one bench run exports in turn
_saved_models = collections.OrderedDict()  # (id(model), fuse, batch) -> (weakref, weights digest, temp dir)


def _weights_digest(model):
    digest = hashlib.blake2b(digest_size=16)
    for weight in model.weights:
        value = np.ascontiguousarray(weight.numpy())
        digest.update(f"{weight.path}{value.dtype}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def deployed_saved_model(model, batch_size, fuse=True):
    """Directory of the SavedModel of ``deploy_model(model, fuse)`` at ``batch_size``. The last few stay
    on disk for as long as the model lives and its weights are unchanged, so exporting one model in
    several modes (as ``bench`` does) folds, traces and saves it once; any change to the weights makes a
    new one."""
    key, digest = (id(model), bool(fuse), batch_size), _weights_digest(model)
    found = _saved_models.get(key)
    if found is not None and found[0]() is model and found[1] == digest:
        _saved_models.move_to_end(key)
        return found[2].name
    directory = tempfile.TemporaryDirectory(prefix="keras_evit_savedmodel_")
    _saved_model(deploy_model(model, fuse), batch_size, directory.name)
    _saved_models[key] = (weakref.ref(model), digest, directory)
    while len(_saved_models) > SAVED_MODELS_KEPT:
        _saved_models.popitem(last=False)[1][2].cleanup()
    return directory.name


def to_tflite(model, output, quantize="none", calibration_images=None, batch_size=1, int8_io=False, fuse=True):
    """Writes a builtin-ops-only .tflite (atomically) and returns its path."""
    calibration_images = _checked_calibration(quantize, calibration_images, batch_size, int8_io)
    data = _convert_saved_model(deployed_saved_model(model, batch_size, fuse), quantize, calibration_images,
                                batch_size, int8_io)
    with atomic_output(output) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
        bad = non_builtin_ops(tmp)
        if bad:
            raise RuntimeError(f"TFLite conversion produced non-builtin ops {bad}; refusing to write {output}")
    return os.fspath(output)
