"""keras-evit: EfficientViT-M0..M5 for Keras 3 / TensorFlow, made for phones.

The repo's top-level ``export/`` and ``training/`` folders install as ``keras_evit.export`` and
``keras_evit.training`` (never as generic top-level names).
"""

import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))

# The layout, declared (not discovered): installed name -> folder in this repo.
PACKAGE_DIR = {
    "keras_evit": "keras_evit",
    "keras_evit.layers": "keras_evit/layers",
    "keras_evit.models": "keras_evit/models",
    "keras_evit.weights": "keras_evit/weights",
    "keras_evit.hub": "keras_evit/hub",
    "keras_evit.cli": "keras_evit/cli",
    "keras_evit.benchmarks": "keras_evit/benchmarks",
    "keras_evit.export": "export",
    "keras_evit.export.phones": "export/phones",
    "keras_evit.training": "training",
    "keras_evit.training.examples": "training/examples",
}

# Versions seen working together (Python 3.11, CPU, 2026-11).
CORE = [
    "tensorflow==2.21.0",
    "keras==3.15.1",
    # TensorFlow's and Keras' dtype extension: 0.7.0 takes 0.55 s longer to import (0.6 s vs 0.07 s), in
    # every process that imports TensorFlow
    "ml_dtypes==0.6.0",
    "numpy>=1.26,<3",
    "h5py==3.14.0",
    "pillow==13.0.0",
    "safetensors==0.8.0",
    "tqdm==4.70.1",
]
MOBILE = [
    "ai-edge-litert==2.3.0",
    "onnx==1.23.2",
    "onnxruntime==1.32.0",
    "tf2onnx==1.17.0",
    "matplotlib==3.11.2",
    "coremltools==9.0",
]
TRAIN = [
    "matplotlib==3.11.2",
    "tensorboard==2.21.0",
    "tensorflow-datasets==4.9.10",
]
# keras-hub tasks and presets (keras_evit.hub); it brings tensorflow-text 2.21, which TensorFlow 2.21 shares
HUB = ["keras-hub==0.32.0"]
# torch must be the local CPU build: install it first (`pip install torch==2.13.0`), then timm with
# --no-deps (its torchvision dependency has no CPU wheel here); see the Makefile.
REFERENCE = ["torch==2.13.0", "pyyaml>=6", "huggingface_hub>=0.20"]
# MediaPipe (TFLite metadata writer, Tasks client) pins protobuf<5 and numpy<2, which TensorFlow 2.21
# cannot share: `keras-evit setup-mediapipe` installs mediapipe==0.10.21 in a venv of its own.
# grain: keras-hub's test helpers (TestCase) import it
TEST = ["pytest==9.0.3", "pytest-xdist==3.8.0", "hypothesis==6.155.2", "grain==0.2.18", "ruff==0.14.0"]
TEST += MOBILE + TRAIN + HUB

setup(
    name="keras-evit",
    version="0.1.0",
    description="EfficientViT-M0..M5 (MSRA, CVPR 2023) for Keras 3: exact to timm, exportable to TFLite/ONNX",
    long_description=(open(os.path.join(HERE, "README.md")).read()
                      if os.path.exists(os.path.join(HERE, "README.md")) else ""),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=list(PACKAGE_DIR),
    package_dir=PACKAGE_DIR,
    package_data={"keras_evit": ["data/*.json", "data/samples/*", "data/digits/*"],
                  "keras_evit.export.phones": ["*.md", "*.sh"]},
    install_requires=CORE,
    extras_require={"mobile": MOBILE, "train": TRAIN, "hub": HUB, "reference": REFERENCE, "test": TEST},
    entry_points={"console_scripts": ["keras-evit=keras_evit.cli:main"]},
)
