"""The user's journey from training to phone, every step in a fresh process, from files on disk:
finetune -> evaluate RUN_DIR/model.keras -> export with metadata -> MediaPipe classifies -> same accuracy.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import HYMENOPTERA

SIZE = 64


def keras_evit(*args, timeout=900):
    """`keras-evit ARGS` in a fresh process, as a user types it; returns stdout (fails on exit != 0)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-m", "keras_evit.cli", *args], capture_output=True, text=True,
                            timeout=timeout, env=env)
    assert result.returncode == 0, f"keras-evit {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _accuracy(text):
    return float(re.search(r"accuracy (\d\.\d+)", text).group(1))


def _mediapipe_accuracy(tflite, val_dir):
    """Top-1 accuracy of MediaPipe's ImageClassifier on the validation folders (labels from metadata)."""
    import keras_evit as ke
    from keras_evit.export.metadata import mediapipe_classify

    files, truth = [], []
    for name in sorted(os.listdir(val_dir)):
        for f in sorted(os.listdir(os.path.join(val_dir, name))):
            files.append(os.path.join(val_dir, name, f))
            truth.append(name)
    crops = np.stack([ke.load_image(f, SIZE) for f in files])  # the app's center crop (see README)
    got = mediapipe_classify(tflite, crops, top=1)
    return sum(row[0][1] == t for row, t in zip(got, truth)), len(files)


def _journey(tmp_path, epochs, steps, quantizations, every_step=True):
    from keras_evit.export.metadata import mediapipe_python

    if not os.path.isdir(HYMENOPTERA):
        pytest.skip("shared/data/hymenoptera not present")
    if mediapipe_python() is None:
        pytest.skip("MediaPipe environment not set up (keras-evit setup-mediapipe)")
    run = str(tmp_path / "run")
    data = f"folder:{HYMENOPTERA}"
    train_args = ["finetune", "--model", "m0", "--weights", "none", "--data", data, "--image-size", str(SIZE),
                  "--epochs", str(epochs), "--batch-size", "32", "--strategy", "default", "--output", run]
    if steps:
        train_args += ["--steps-per-epoch", str(steps)]
    keras_evit(*train_args)
    assert json.load(open(os.path.join(run, "classes.json"))) == ["ants", "bees"]

    evaluated = _accuracy(keras_evit("evaluate", "--weights", os.path.join(run, "model.keras"), "--data", data))
    if every_step:
        # plain Keras + the registration `import keras_evit` does, in a fresh process
        probe = ("import keras, keras_evit; m = keras.models.load_model(%r); print(m.name, m.output.shape)"
                 % os.path.join(run, "model.keras"))
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and "efficientvit_m0" in out.stdout, out.stderr[-2000:]
        assert _accuracy(keras_evit("evaluate", "--weights", run, "--data", data)) == evaluated
        predicted = keras_evit("predict", os.path.join(HYMENOPTERA, "val", "bees", sorted(os.listdir(
            os.path.join(HYMENOPTERA, "val", "bees")))[0]), "--weights", run, "--top", "2")
        assert re.search(r"1\. (ants|bees)", predicted)  # the run's own class names, not ImageNet's

    val = os.path.join(HYMENOPTERA, "val")
    results = {}
    for quantize in quantizations:
        tflite = str(tmp_path / f"run_{quantize}.tflite")
        keras_evit("export", "--weights", run, "--quantize", quantize, "--calibration-dir",
                   os.path.join(HYMENOPTERA, "train"), "--calibration-limit", "32", "--verify-dir", val,
                   "--verify-limit", "16", "--output", tflite)
        correct, total = _mediapipe_accuracy(tflite, val)
        results[quantize] = correct
        print(f"{quantize}: MediaPipe {correct}/{total} vs evaluate {evaluated * total:.0f}/{total}")
        limit = 0 if quantize == "none" else 2
        assert abs(correct - round(evaluated * total)) <= limit
    return results


def test_journey_short(tmp_path):
    """The default suite's version: one short epoch, the int8-mixed export."""
    _journey(tmp_path, epochs=1, steps=2, quantizations=["int8-mixed"], every_step=False)


@pytest.mark.slow
def test_journey_full(tmp_path):
    """Three full epochs; plain-Keras load, evaluate RUN_DIR, predict with the run's classes; fp32 equal,
    int8-mixed within 2 images."""
    _journey(tmp_path, epochs=3, steps=None, quantizations=["none", "int8-mixed"])
