"""The ordinary Keras ways, each step in a fresh process from files on disk: a backbone called as a layer
under a `Dense` softmax head, saved under mixed precision, then loaded, cloned, fused, predicted and
exported under float32."""

import os
import re

import numpy as np
import pytest

from conftest import run_python, require

SAVE = """
import sys, keras, numpy as np
import keras_evit as ke
def build():
    base = ke.EfficientViTM0(weights=None, include_top=False, input_shape=(96, 96, 3))
    inputs = keras.Input((96, 96, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    outputs = keras.layers.Dense(3, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs)
reference = build()  # float32: what the fused copy must compute
rng = np.random.RandomState(0)
for w in reference.weights:  # non-trivial BN statistics, so the outputs are not near-uniform
    if "moving_variance" in w.path: w.assign(rng.uniform(0.75, 1.25, w.shape))
    elif "moving_mean" in w.path or "beta" in w.path: w.assign(rng.normal(0, 0.1, w.shape))
reference.layers[-1].set_weights([rng.normal(0, 2.0, (192, 3)), np.zeros(3)])
keras.mixed_precision.set_global_policy("mixed_float16")
model = build()
model.set_weights(reference.get_weights())
model.save(sys.argv[1])
image = ke.load_image(sys.argv[2], 96)[None]
np.save(sys.argv[1] + ".npy", model.predict(image, verbose=0))
np.save(sys.argv[1] + ".float32.npy", reference.predict(image, verbose=0))
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
loaded = model.predict(image, verbose=0)
print("load", float(np.abs(loaded - expected).max()))  # the file keeps its mixed_float16 policy
print("clone", float(np.abs(clone.predict(image, verbose=0) - loaded).max()))
float32 = np.load(sys.argv[1] + ".float32.npy")  # the fused copy computes in float32
print("fuse", float(np.abs(fused.predict(image, verbose=0) - float32).max()))
"""


@pytest.mark.slow  # four fresh processes, one a TFLite export
def test_mixed_precision_nested_model_loads_predicts_and_exports_under_float32(sample_dir, tmp_path):
    path = str(tmp_path / "user.keras")
    image = os.path.join(sample_dir, sorted(f for f in os.listdir(sample_dir) if f.endswith(".JPEG"))[0])
    run_python(["-c", SAVE, path, image])
    expected = np.load(path + ".npy")
    assert expected.max() > 0.5  # a confident prediction: a second softmax would flatten it visibly

    diffs = dict(line.split() for line in run_python(["-c", LOAD, path, image]).splitlines() if line[:4] in
                 ("load", "clon", "fuse"))
    assert set(diffs) == {"load", "clone", "fuse"}
    assert float(diffs["load"]) <= 2e-3 and float(diffs["clone"]) <= 1e-5, diffs  # same policy, other kernels
    assert float(diffs["fuse"]) <= 1e-4, diffs  # float32 as the float32 model; float16 would be ~3e-3 off

    # predict prints the model's own probability (its Dense softmax is not doubled), with the user's names
    labels = tmp_path / "labels.txt"
    labels.write_text("wasp\nant\nbee\n")
    out = run_python(["-m", "keras_evit.cli", "predict", image, "--weights", path, "--top", "1",
                      "--labels", str(labels)])
    score = float(re.search(r"1\. (?:wasp|ant|bee)\s+(\d\.\d+)", out).group(1))
    assert score == pytest.approx(float(expected.max()), abs=5e-3), out  # float16 when saved

    tflite = str(tmp_path / "user.tflite")
    out = run_python(["-m", "keras_evit.cli", "export", "--weights", path, "--no-metadata", "--verify-dir", sample_dir,
                "--verify-limit", "8", "--output", tflite])
    assert os.path.isfile(tflite) and "PASS" in out, out


TRANSFER = """
import json, sys, keras
keras.mixed_precision.set_global_policy("mixed_float16")
import keras_evit as ke
from keras_evit.training import build_before_fit
train_dir, out = sys.argv[1], sys.argv[2]
train = keras.utils.image_dataset_from_directory(train_dir, image_size=(64, 64), batch_size=16, seed=0)
base = ke.EfficientViTM0(weights=None, include_top=False, input_shape=(64, 64, 3))
base.trainable = False
inputs = keras.Input((64, 64, 3))
x = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
x = keras.layers.Dropout(0.2)(x)
outputs = keras.layers.Dense(len(train.class_names), activation="softmax", dtype="float32")(x)
model = keras.Model(inputs, outputs)
model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
build_before_fit(model, train)  # the README's advice: TensorFlow then traces each fit once
model.fit(train.take(4), epochs=1, verbose=2)
base.trainable = True  # then the whole network, at a lower rate
model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy", metrics=["accuracy"])
build_before_fit(model, train)
model.fit(train.take(4), epochs=1, verbose=2)
model.save(out)
open(out + ".labels.txt", "w").write("\\n".join(train.class_names) + "\\n")
"""


CROPS = """
import sys, numpy as np, keras, keras_evit as ke
x = np.stack([ke.load_image(f, 64) for f in sys.argv[3:]]).astype("float32")
np.save(sys.argv[2], x)
np.save(sys.argv[2] + ".keras.npy", keras.models.load_model(sys.argv[1]).predict(x, verbose=0))
"""


@pytest.mark.slow  # a fit, a reload, an int8-mixed export and MediaPipe, each in a fresh process
def test_keras_transfer_learning_recipe_to_mediapipe(tmp_path):
    """keras.applications' transfer-learning recipe (image_dataset_from_directory, a frozen backbone called as
    a layer, a Dense softmax head, then unfrozen, all under mixed precision), model.save, reload, `keras-evit
    export` int8-mixed with the user's class names, and MediaPipe classifies the validation images."""
    from conftest import HYMENOPTERA, ants_bees_phone_journey

    _, keras_p, phone_p = ants_bees_phone_journey(
        tmp_path, TRANSFER, CROPS, 8, ["--quantize", "int8-mixed", "--calibration-dir",
                                       os.path.join(HYMENOPTERA, "train"), "--calibration-limit", "32",
                                       "--verify-limit", "16"])
    assert np.abs(phone_p - keras_p).max() <= 0.05, (phone_p, keras_p)


@pytest.mark.slow  # two fresh processes per pair
@pytest.mark.parametrize("saved_on,loaded_on", [("tensorflow", "jax"), ("jax", "torch"), ("torch", "tensorflow")])
def test_mixed_precision_file_moves_between_backends(saved_on, loaded_on, sample_dir, tmp_path):
    """Saved under mixed_float16 on one backend, loaded, cloned and fused under float32 on another."""
    for backend in (saved_on, loaded_on):
        if backend != "tensorflow":
            require(backend)
    path = str(tmp_path / f"{saved_on}.keras")
    image = os.path.join(sample_dir, sorted(f for f in os.listdir(sample_dir) if f.endswith(".JPEG"))[0])
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    run_python(["-c", SAVE, path, image], env={**env, "KERAS_BACKEND": saved_on})
    out = run_python(["-c", LOAD + "print('backend', keras.backend.backend())", path, image],
               env={**env, "KERAS_BACKEND": loaded_on})
    diffs = dict(line.split() for line in out.splitlines() if line.split()[:1] in (["load"], ["clone"], ["fuse"],
                                                                                   ["backend"]))
    assert diffs.pop("backend") == loaded_on
    assert set(diffs) == {"load", "clone", "fuse"}
    assert float(diffs["load"]) <= 2e-3 and float(diffs["clone"]) <= 1e-5, diffs  # same policy, other kernels
    assert float(diffs["fuse"]) <= 1e-4, diffs  # float32 as the float32 model; float16 would be ~3e-3 off
