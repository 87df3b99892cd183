"""The LiteRT files ``keras-evit export`` writes with its default flags, by the names benchmarks and the
phone checks give them: each made by the same conversion, with the same metadata."""

import os

# runtime name -> (quantization, int8 io) of the .tflite it runs, each the file `keras-evit export
# --quantize Q [--int8-io]` writes; "--runtimes litert" means all of them
LITERT = {"litert": ("none", False), "litert-fp16": ("fp16", False), "litert-int8": ("int8", False),
          "litert-int8-io": ("int8", True), "litert-int8-mixed": ("int8-mixed", False)}


def export_shipped(model, runtime, batch_size, calibration, workdir, metadata, log, suffix="", reuse=False):
    """The file ``keras-evit export --quantize Q [--int8-io]`` writes (same conversion, same metadata)."""
    from . import export_model

    quantize, int8_io = LITERT[runtime]
    name = f"{model.name}_{quantize}{'_uint8io' if int8_io else ''}{suffix.replace('@', '_')}_b{batch_size}"
    path = os.path.join(workdir, name + ".tflite")
    if reuse and os.path.isfile(path):
        log(f"reusing {os.path.basename(path)}")
        return path
    log(f"exporting {os.path.basename(path)}")
    export_model(model, path, "tflite", quantize, calibration, batch_size, int8_io, metadata=metadata)
    return path


def shipped_metadata(model, class_names, log):
    """What the CLI writes into the file by default, when MediaPipe's writer is set up here."""
    from .metadata import mediapipe_python, model_info

    if mediapipe_python() is None:
        log("MediaPipe's metadata writer is not set up: files without metadata (the graph is the same)")
        return None
    return model_info(model, class_names)
