"""Exported files that phone runtimes take untouched: MediaPipe Tasks' ImageClassifier is the client.

MediaPipe runs in its own environment (``keras-evit setup-mediapipe``); the client script imports
nothing of ours, so what it sees is what an app sees.
"""

import json
import os

import numpy as np
import pytest

import keras_evit as ke
from keras_evit.export import export_model
from keras_evit.export.images import load_folder
from keras_evit.export.metadata import mediapipe_classify, mediapipe_python, model_info, onnx_metadata

from conftest import missing, randomize

SIZE = 96
# the cases that read the three exported files run on one worker, so the files are made once
SHARES_EXPORTS = pytest.mark.xdist_group("mediapipe_exports")


@pytest.fixture(scope="module")
def mediapipe():
    if mediapipe_python() is None:
        if os.environ.get("KERAS_EVIT_REQUIRE_REFERENCE") == "1":
            pytest.fail("MediaPipe environment missing: run `keras-evit setup-mediapipe` (make install-test does)")
        missing("MediaPipe environment not set up (keras-evit setup-mediapipe)")


@pytest.fixture(scope="module")
def model():
    """Random weights with a confident head (peaked probabilities), so top-5 orders mean something.
    Seeded: the quantized files' agreement depends on the weights."""
    import keras

    keras.utils.set_random_seed(11)
    net = randomize(ke.EfficientViTM0(weights=None, input_shape=(SIZE, SIZE, 3)), seed=3)
    head = net.get_layer("head").linear
    head.kernel.assign(head.kernel * 30.0)
    return net


@pytest.fixture(scope="module")
def crops(sample_dir):
    return load_folder(sample_dir, SIZE, limit=24)[0]


def _top5_names(decoded):
    return [[name for _, name, _ in row] for row in decoded]


@pytest.fixture(scope="module")
def exported(mediapipe, model, crops, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mp")
    info = model_info(model, ke.preprocessing.imagenet_class_names())
    files = {}
    for quantize in ("none", "fp16", "int8-mixed"):
        path = str(folder / f"m0_{quantize}.tflite")
        export_model(model, path, "tflite", quantize, calibration_images=crops, verify_images=crops[:4], metadata=info)
        files[quantize] = path
    return files


def test_mediapipe_is_the_version_its_private_metadata_field_was_checked_against(mediapipe):
    """mediapipe_tool.py sets MetadataWriter._general_md (see keras_evit/compat.py)."""
    import subprocess

    from keras_evit.compat import MEDIAPIPE_VERSION_SEEN

    found = subprocess.run([mediapipe_python(), "-c", "import importlib.metadata as m; print(m.version('mediapipe'))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert found == MEDIAPIPE_VERSION_SEEN, "MediaPipe changed: re-check export/mediapipe_tool.py's _general_md"


@SHARES_EXPORTS
@pytest.mark.slow
def test_general_metadata_reaches_the_file(exported, model):
    """Version, author and license go in through the private field: their strings are in the file."""
    info = model_info(model, ke.preprocessing.imagenet_class_names())
    with open(exported["none"], "rb") as f:
        content = f.read()
    for field in ("name", "version", "author", "license", "description"):
        assert info[field].encode() in content, field


@SHARES_EXPORTS
@pytest.mark.slow  # three exports with metadata, then MediaPipe
def test_mediapipe_fp32_matches_keras(exported, model, crops):
    """Same top-5 class names as decode_predictions, scores within 1e-3."""
    keras_probs = model.predict(crops, verbose=0)
    assert keras_probs.max() > 0.05  # not a uniform distribution: the top-5 order means something
    expected = ke.decode_predictions(keras_probs, top=5)
    got = mediapipe_classify(exported["none"], crops.astype(np.uint8), top=5)
    assert [[name for _, name, _ in row] for row in got] == _top5_names(expected)
    diffs = [abs(g[2] - e[2]) for grow, erow in zip(got, expected) for g, e in zip(grow, erow)]
    assert max(diffs) <= 1e-3


@SHARES_EXPORTS
@pytest.mark.slow  # shares the three exports of the fp32 case
@pytest.mark.parametrize("quantize,top1,in_top5", [("fp16", 0.9, 1.0), ("int8-mixed", 0.75, 0.9)])
def test_mediapipe_quantized_files_load_and_agree(exported, model, crops, quantize, top1, in_top5):
    """Quantized files load in MediaPipe with no code of ours. What holds on these random weights:
    fp16 agrees with Keras' top-1 on >= 90% of images and always has it in its top 5; int8-mixed on
    >= 75%, and has it in its top 5 on >= 90% (trained weights agree more: docs/quantization.md)."""
    keras_top1 = model.predict(crops, verbose=0).argmax(-1)
    got = mediapipe_classify(exported[quantize], crops.astype(np.uint8), top=5)
    agree = np.mean([row[0][0] == k for row, k in zip(got, keras_top1)])
    found = np.mean([k in [c[0] for c in row] for row, k in zip(got, keras_top1)])
    print(f"{quantize}: MediaPipe top-1 agreement with Keras {agree:.1%}, Keras top-1 in top 5 {found:.1%}")
    assert agree >= top1 and found >= in_top5


@pytest.mark.slow
def test_integer_io_file_takes_uint8_in_mediapipe(mediapipe, model, crops, tmp_path):
    path = str(tmp_path / "m0_int8_io.tflite")
    info = model_info(model, ke.preprocessing.imagenet_class_names())
    report = export_model(model, path, "tflite", "int8", calibration_images=crops, int8_io=True,
                          verify_images=crops[:4], metadata=info)
    from keras_evit.export import TFLiteRunner

    runner = TFLiteRunner(path)
    assert runner.input["dtype"] == np.uint8 and runner.output["dtype"] == np.uint8
    assert runner.input["quantization"] == (1.0, 0)  # raw pixel bytes in, unchanged
    got = mediapipe_classify(path, crops.astype(np.uint8), top=5)
    assert len(got) == len(crops) and all(len(row) == 5 for row in got)
    print(f"int8 uint8-io: cosine vs Keras {report['verification']['cosine_mean']:.4f}")


def test_metadata_describes_raw_rgb_and_labels(model):
    info = model_info(model, ["ants", "bees"] + [f"c{i}" for i in range(998)])
    assert info["norm_mean"] == [0.0] and info["norm_std"] == [1.0]  # the model normalizes inside
    assert info["labels"][:2] == ["ants", "bees"] and "0..255" in info["input_description"]
    plain = ke.EfficientViTM0(weights=None, input_shape=(SIZE, SIZE, 3), include_preprocessing=False)
    assert model_info(plain, None)["norm_mean"] == pytest.approx([123.675, 116.28, 103.53])
    props = onnx_metadata(info)
    assert json.loads(props["labels"])[:2] == ["ants", "bees"] and all(isinstance(v, str) for v in props.values())


def test_exported_labels_are_one_line_per_class():
    from keras_evit.export.metadata import model_info

    import keras_evit as ke

    model = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3), classes=2)
    with pytest.raises(ValueError, match="control character"):
        model_info(model, ["ants", "bees\r"])
    with pytest.raises(ValueError, match="3 class names for a model with 2 outputs"):
        model_info(model, ["ants", "bees", "wasps"])
