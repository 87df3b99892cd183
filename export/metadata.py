"""What an exported file says about itself (name, version, license, input, labels), for every format.

TFLite metadata is written by MediaPipe's maintained ``metadata_writers`` in MediaPipe's own Python
environment (its pins fight TensorFlow's): ``keras-evit setup-mediapipe`` makes it once.
"""

import json
import os
import subprocess
import sys
import tempfile

from keras_evit.compat import MEDIAPIPE_VERSION_SEEN  # 1.2.x's Python metadata module is broken

PYTHON_ENV = "KERAS_EVIT_MEDIAPIPE_PYTHON"
TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mediapipe_tool.py")
TOOL_TIMEOUT_S = 600


def mediapipe_env_dir():
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(keras_home, "keras_evit-mediapipe")


def mediapipe_python():
    """The Python of MediaPipe's environment, or None when it has not been set up."""
    explicit = os.environ.get(PYTHON_ENV)
    if explicit:
        if not os.path.isfile(explicit):
            raise FileNotFoundError(f"{PYTHON_ENV}={explicit} does not exist")
        return explicit
    default = os.path.join(mediapipe_env_dir(), "bin", "python")
    return default if os.path.isfile(default) else None


def require_mediapipe():
    python = mediapipe_python()
    if python is None:
        raise RuntimeError(
            "TFLite metadata needs MediaPipe's metadata writer, in an environment of its own (its pins "
            "conflict with TensorFlow's): run `keras-evit setup-mediapipe` once, or pass --no-metadata")
    return python


def setup_mediapipe(log=print):
    """Creates MediaPipe's environment (a venv beside the Keras cache) unless it already works."""
    python = mediapipe_python()
    if python and _run([python, "-c", "import mediapipe.tasks.python.metadata.metadata_writers"], check=False):
        log(f"MediaPipe environment ready: {python}")
        return python
    target = mediapipe_env_dir()
    log(f"creating {target} with mediapipe=={MEDIAPIPE_VERSION_SEEN} (a few minutes, ~1 GB)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", target], check=True)
    python = os.path.join(target, "bin", "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    f"mediapipe=={MEDIAPIPE_VERSION_SEEN}"], check=True)
    log(f"MediaPipe environment ready: {python}")
    return python


def _run(command, check=True):
    result = subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    if check and result.returncode != 0:
        raise RuntimeError(f"{os.path.basename(command[1])} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout if check else result.returncode == 0


def model_info(model, class_names, probabilities=True):
    """The metadata of ``model`` as a plain dict (the same facts go into TFLite, ONNX and Core ML)."""
    from keras_evit import __version__
    from keras_evit.configs import CROP_PCT, IMAGENET_MEAN, IMAGENET_STD, INTERPOLATION, LICENSE
    from keras_evit.preprocessing import has_preprocessing
    from keras_evit.weights.artifacts import check_class_names

    units = int(model.outputs[0].shape[-1])
    labels = list(class_names) if class_names else [f"class_{i}" for i in range(units)]
    check_class_names(labels, "the model's class names")
    if len(labels) != units:
        raise ValueError(f"{len(labels)} class names for a model with {units} outputs")
    raw = has_preprocessing(model)
    height, width = model.inputs[0].shape[1:3]
    # MediaPipe computes (pixel - mean) / std with one value for all channels: raw models get 0 / 1
    return {
        "name": model.name,
        "version": f"keras-evit {__version__}",
        "description": (f"{model.name} (EfficientViT-M, Liu et al., CVPR 2023) image classifier, "
                        f"{len(labels)} classes, {'probabilities' if probabilities else 'logits'} out."),
        "author": "keras-evit",
        "license": f"{LICENSE} (EfficientViT code and weights: {LICENSE})",
        "labels": labels,
        "norm_mean": [0.0] if raw else [255 * m for m in IMAGENET_MEAN],
        "norm_std": [1.0] if raw else [255 * s for s in IMAGENET_STD],
        "input_description": (f"RGB image {height}x{width}, values 0..255 (float32 or uint8); the model "
                              "normalizes inside" if raw else f"RGB image {height}x{width}, ImageNet-normalized "
                              "per channel ((x/255 - mean)/std, mean {IMAGENET_MEAN}, std {IMAGENET_STD})"),
        "output_description": "class probabilities (softmax)" if probabilities else "class logits",
        "preprocessing": f"resize shorter side to size/{CROP_PCT} ({INTERPOLATION}), center crop"
                         + ("; RGB 0..255 in" if raw else ", normalize"),
    }


def write_tflite_metadata(path, info):
    """Rewrites the .tflite at ``path`` in place with MediaPipe metadata and the labels file inside."""
    python = require_mediapipe()
    with tempfile.TemporaryDirectory() as tmp:
        spec = os.path.join(tmp, "spec.json")
        with open(spec, "w", encoding="utf-8") as f:
            json.dump(info, f)
        out = os.path.join(tmp, "with_metadata.tflite")
        _run([python, TOOL, "write", os.fspath(path), out, spec])
        os.replace(out, path)


def mediapipe_classify(tflite_path, images, top=5):
    """[[(index, name, score), ...] per image] from MediaPipe Tasks' ImageClassifier (no code of ours)."""
    import numpy as np

    python = require_mediapipe()
    with tempfile.TemporaryDirectory() as tmp:
        arrays = os.path.join(tmp, "images.npy")
        np.save(arrays, np.asarray(images, np.uint8))
        out = _run([python, TOOL, "classify", os.fspath(tflite_path), arrays, str(int(top))])
    return [[tuple(c) for c in row] for row in json.loads(out.strip().splitlines()[-1])]


def onnx_metadata(info):
    """ONNX ``metadata_props``: strings only; labels as a JSON list."""
    keys = ("name", "version", "description", "author", "license", "input_description", "output_description",
            "preprocessing")
    props = {k: str(info[k]) for k in keys}
    props.update(labels=json.dumps(info["labels"]), norm_mean=json.dumps(info["norm_mean"]),
                 norm_std=json.dumps(info["norm_std"]))
    return props
