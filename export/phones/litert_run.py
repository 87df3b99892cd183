"""Runs .tflite files on images with whatever LiteRT this Python has; no keras_evit or TensorFlow needed.

    python litert_run.py SPEC.json

SPEC: {"inputs": "images.npy", "files": {"name": "file.tflite"}, "output": "outputs.npz", "threads": 1}.
Used by ``keras_evit.export.phones.arm64`` in the aarch64 Python under emulation and in this one, so both
sides run the same code (``export/runners.py``, loaded by path: importing the package would need TensorFlow).
"""

import importlib.util
import json
import os
import platform
import sys

import numpy as np


def _runner_class():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runners.py")
    spec = importlib.util.spec_from_file_location("keras_evit_runners", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TFLiteRunner


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    images = np.load(spec["inputs"])
    runner_class = _runner_class()
    outputs = {name: runner_class(path, threads=spec.get("threads", 1))(images)
               for name, path in spec["files"].items()}
    tmp = spec["output"] + ".partial.npz"
    np.savez(tmp, **outputs)
    os.replace(tmp, spec["output"])
    import ai_edge_litert

    print(json.dumps({"machine": platform.machine(), "litert": getattr(ai_edge_litert, "__version__", "?"),
                      "files": len(outputs)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
