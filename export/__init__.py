"""Mobile export: TFLite (fp32 / fp16 / dynamic int8 / full int8 / int8-mixed) and ONNX, each verified on write."""

import os

import numpy as np

from keras_evit.utils import atomic_output

from .onnx import DEFAULT_OPSET, to_onnx
from .runners import ONNXRunner, TFLiteRunner
from .tflite import QUANTIZE_MODES, check_calibration, check_quantize, gpu_compatibility, non_builtin_ops, to_tflite
from .verify import compare, describe

__all__ = ["DEFAULT_OPSET", "QUANTIZE_MODES", "ExportError", "compare", "describe", "export_model",
           "gpu_compatibility", "non_builtin_ops", "to_onnx", "to_tflite"]

FORMATS = ("tflite", "onnx", "coreml")


class ExportError(RuntimeError):
    """An export that failed its verification; no file was left behind."""


def check_export_args(fmt, quantize, output, calibration_images=None, int8_io=False):
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: choose tflite, onnx or coreml")
    check_quantize(quantize)
    if fmt == "onnx" and quantize != "none":
        raise ValueError("ONNX export is fp32 only: use --format tflite for fp16/int8")
    if fmt == "coreml" and quantize not in ("none", "fp16"):
        raise ValueError("Core ML export supports --quantize none (fp32) or fp16")
    if fmt == "tflite":
        check_calibration(quantize, calibration_images, 1)
    if int8_io and (fmt, quantize) != ("tflite", "int8"):
        raise ValueError("--int8-io needs --format tflite --quantize int8")
    suffix = ".mlpackage" if fmt == "coreml" else "." + fmt
    if not str(output).endswith(suffix):
        raise ValueError(f"--output should end with {suffix}, got {output!r}")


def export_model(model, output, fmt="tflite", quantize="none", calibration_images=None, batch_size=1,
                 int8_io=False, verify_images=None, opset=DEFAULT_OPSET, metadata=None):
    """Exports, verifies against ``model`` on ``verify_images``, then renames into place.

    ``metadata``: :func:`keras_evit.export.metadata.model_info` facts written into the file (TFLite
    metadata for MediaPipe/LiteRT, ONNX ``metadata_props``, Core ML classifier labels), or None.
    Returns a report dict. fp32/fp16 files failing their threshold raise :class:`ExportError`
    and are not kept; int8 results are reported (cosine similarity, top-1 agreement).
    """
    check_export_args(fmt, quantize, output, calibration_images, int8_io)
    if fmt == "coreml":
        return _export_coreml(model, output, quantize, batch_size, metadata)
    report = {"output": os.fspath(output), "format": fmt, "quantize": quantize, "batch_size": batch_size,
              "metadata": metadata is not None}
    expected = None
    if verify_images is not None:  # the model's outputs first: one that overflows fails before any conversion
        from keras_evit.models.fusion import float32_copy
        from keras_evit.models.inference import outputs

        x = np.asarray(verify_images, np.float32)  # checked as the file computes: in float32
        expected = outputs(float32_copy(model), x)
        _check_finite(output, "the model", expected)
    with atomic_output(output) as tmp:
        if fmt == "tflite":
            to_tflite(model, tmp, quantize, calibration_images, batch_size, int8_io)
            if metadata is not None:
                from .metadata import write_tflite_metadata

                write_tflite_metadata(tmp, metadata)
            report["non_builtin_ops"] = non_builtin_ops(tmp)
            report["gpu_delegate_compatible"], report["gpu_report"] = gpu_compatibility(tmp)
            runner = TFLiteRunner(tmp)
        else:
            from .metadata import onnx_metadata

            to_onnx(model, tmp, opset=opset, batch_size=batch_size,
                    metadata_props=onnx_metadata(metadata) if metadata is not None else None)
            report["opset"] = opset
            runner = ONNXRunner(tmp)
        if expected is not None:
            outputs = runner(x)
            _check_finite(output, "the exported model", outputs)
            result = compare(expected, outputs, quantize)
            report["verification"] = result
            if result["passed"] is False:
                raise ExportError(f"{output}: verification failed, file not written. {describe(result)}")
        report["bytes"] = os.path.getsize(tmp)
    return report


def _check_finite(output, what, values):
    if not np.isfinite(values).all():
        raise ExportError(f"{output}: {what} outputs NaN/Inf on its verification images (non-finite or "
                          "overflowing weights): file not written")


def _export_coreml(model, output, quantize, batch_size, metadata=None):
    from .coreml import can_run_coreml, coreml_io, to_coreml

    to_coreml(model, output, "fp16" if quantize == "fp16" else "fp32", batch_size, metadata=metadata)
    inputs, outputs = coreml_io(output)
    size = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(output) for f in files)
    note = ("Core ML runs only on macOS/iOS: converted and structurally checked, outputs not verified here"
            if not can_run_coreml() else "run on this Mac: use coremltools' MLModel.predict to compare")
    return {"output": os.fspath(output), "format": "coreml", "quantize": quantize, "batch_size": batch_size,
            "inputs": inputs, "outputs": outputs, "bytes": size, "note": note}
