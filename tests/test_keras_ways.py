"""The ordinary Keras ways, each step in a fresh process from files on disk: a backbone called as a layer
under a `Dense` softmax head, saved under mixed precision, then loaded, cloned, fused, predicted and
exported under float32."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

SAVE = """
import sys, keras, numpy as np
keras.mixed_precision.set_global_policy("mixed_float16")
import keras_evit as ke
base = ke.EfficientViTM0(weights=None, include_top=False, input_shape=(96, 96, 3))
rng = np.random.RandomState(0)
for w in base.weights:  # non-trivial BN statistics, so the outputs are not near-uniform
    if "moving_variance" in w.path: w.assign(rng.uniform(0.75, 1.25, w.shape))
    elif "moving_mean" in w.path or "beta" in w.path: w.assign(rng.normal(0, 0.1, w.shape))
inputs = keras.Input((96, 96, 3))
x = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
outputs = keras.layers.Dense(3, activation="softmax", dtype="float32")(x)
model = keras.Model(inputs, outputs)
model.layers[-1].set_weights([rng.normal(0, 2.0, (192, 3)), np.zeros(3)])
model.save(sys.argv[1])
image = ke.load_image(sys.argv[2], 96)[None]
np.save(sys.argv[1] + ".npy", model.predict(image, verbose=0))
"""

LOAD = """
import sys, keras, numpy as np
import keras_evit as ke
model = keras.models.load_model(sys.argv[1])
image = ke.load_image(sys.argv[2], 96)[None]
expected = np.load(sys.argv[1] + ".npy")
clone = keras.models.clone_model(model)
clone.set_weights(model.get_weights())
fused = ke.fuse_batchnorm(model, dtype="float32")
for name, m in (("load", model), ("clone", clone), ("fuse", fused)):
    print(name, float(np.abs(m.predict(image, verbose=0) - expected).max()))
"""


def _run(args, **kwargs):
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow  # four fresh processes, one a TFLite export
def test_mixed_precision_nested_model_loads_predicts_and_exports_under_float32(sample_dir, tmp_path):
    path = str(tmp_path / "user.keras")
    image = os.path.join(sample_dir, sorted(f for f in os.listdir(sample_dir) if f.endswith(".JPEG"))[0])
    _run(["-c", SAVE, path, image])
    expected = np.load(path + ".npy")
    assert expected.max() > 0.5  # a confident prediction: a second softmax would flatten it visibly

    diffs = dict(line.split() for line in _run(["-c", LOAD, path, image]).splitlines() if line[:4] in
                 ("load", "clon", "fuse"))
    assert set(diffs) == {"load", "clone", "fuse"}
    assert all(float(v) <= 2e-3 for v in diffs.values()), diffs  # float16 activations vs float32

    # predict prints the model's own probability (its Dense softmax is not doubled), with the user's names
    labels = tmp_path / "labels.txt"
    labels.write_text("wasp\nant\nbee\n")
    out = _run(["-m", "keras_evit.cli", "predict", image, "--weights", path, "--top", "1", "--labels", str(labels)])
    score = float(re.search(r"1\. (?:wasp|ant|bee)\s+(\d\.\d+)", out).group(1))
    assert score == pytest.approx(float(expected.max()), abs=2e-3), out

    tflite = str(tmp_path / "user.tflite")
    out = _run(["-m", "keras_evit.cli", "export", "--weights", path, "--no-metadata", "--verify-dir", sample_dir,
                "--verify-limit", "8", "--output", tflite])
    assert os.path.isfile(tflite) and "PASS" in out, out
