"""Run exported files: one call signature for LiteRT and ONNX Runtime."""

import numpy as np


def run_in_batches(run_batch, images, batch_size):
    """Feeds a fixed-batch model: chunks ``images``, padding the last chunk by repetition."""
    if not batch_size:
        return run_batch(images)
    outputs = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        if len(chunk) < batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk), 0)])
        outputs.append(run_batch(chunk))
    return np.concatenate(outputs)[:len(images)]


class TFLiteRunner:
    """LiteRT interpreter (XNNPACK on CPU); quantizes/dequantizes int8 inputs/outputs transparently."""

    def __init__(self, path, threads=None):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=path, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch_size = int(self.input["shape"][0])

    def _quantize(self, x):
        scale, zero = self.input["quantization"]
        if self.input["dtype"] == np.float32 or not scale:
            return x.astype(self.input["dtype"])
        info = np.iinfo(self.input["dtype"])
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(self.input["dtype"])

    def _dequantize(self, y):
        scale, zero = self.output["quantization"]
        if self.output["dtype"] == np.float32 or not scale:
            return y.astype(np.float32)
        return (y.astype(np.float32) - zero) * scale

    def invoke(self):
        self.interpreter.invoke()

    def set_input(self, x):
        self.interpreter.set_tensor(self.input["index"], self._quantize(x))

    def _run_batch(self, chunk):
        self.set_input(chunk)
        self.invoke()
        return self._dequantize(self.interpreter.get_tensor(self.output["index"]))

    def __call__(self, images):
        return run_in_batches(self._run_batch, images, self.batch_size)


class ONNXRunner:
    def __init__(self, path, threads=None, layout="NHWC"):
        from .onnx import onnx_session

        self.session = onnx_session(path, threads)
        spec = self.session.get_inputs()[0]
        self.name = spec.name
        self.batch_size = spec.shape[0] if isinstance(spec.shape[0], int) else None
        self.layout = layout

    def _run_batch(self, chunk):
        return self.session.run(None, {self.name: chunk})[0]

    def __call__(self, images):
        x = np.ascontiguousarray(images.transpose(0, 3, 1, 2) if self.layout == "NCHW" else images)
        return run_in_batches(self._run_batch, x.astype(np.float32), self.batch_size)
