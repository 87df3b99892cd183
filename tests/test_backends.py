"""The same model code on JAX and PyTorch, each in its own process (Keras picks its backend at import): timm
parity, every weight format, fit (and rematerialized fit), fusion, features, .keras (one saved under TensorFlow
included). TensorFlow, the backend the test process runs, has each of these checks in the default suite
(test_parity, test_weights, test_models, test_fusion, test_layers_remat). In the slow suite (which .ci/run runs):
about 2 minutes."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_evit as ke

from conftest import require

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = textwrap.dedent('''
    import json, sys
    import numpy as np
    import keras
    import keras_evit as ke
    from keras_evit import reference
    from keras_evit.models.inference import outputs
    from keras_evit.weights import assign_state_dict

    backend, workdir = sys.argv[1], sys.argv[2]
    assert keras.backend.backend() == backend, keras.backend.backend()
    out = {}
    tm = reference.create_timm_model("m0", img_size=128)
    state = reference.timm_state_dict(tm)
    x = np.random.RandomState(0).uniform(0, 255, (2, 128, 128, 3)).astype("float32")
    expected = reference.timm_logits(tm, ke.normalize_images(x))

    model = ke.EfficientViTM0(weights=None, input_shape=(128, 128, 3), classifier_activation=None)
    assign_state_dict(model, state, variant="m0")
    # predict once (the compiled path); the other checks call models directly: a compile each adds nothing
    out["parity"] = float(np.abs(model.predict(x, verbose=0) - expected).max())
    plain = ke.EfficientViTM0(weights=None, input_shape=(128, 128, 3), classifier_activation=None,
                              include_preprocessing=False)
    assign_state_dict(plain, state, variant="m0")
    out["parity_no_preprocessing"] = float(np.abs(outputs(plain, ke.normalize_images(x)) - expected).max())

    formats = {}
    np.savez(workdir + "/w.npz", **state)
    formats["npz"] = ke.EfficientViTM0(weights=workdir + "/w.npz", input_shape=(128, 128, 3),
                                       classifier_activation=None)
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, workdir + "/w.safetensors")
    formats["safetensors"] = ke.EfficientViTM0(weights=workdir + "/w.safetensors", input_shape=(128, 128, 3),
                                               classifier_activation=None)
    import torch
    torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}}, workdir + "/w.pth")
    formats["pth"] = ke.EfficientViTM0(weights=workdir + "/w.pth", input_shape=(128, 128, 3),
                                       classifier_activation=None)
    model.save_weights(workdir + "/w.weights.h5")
    formats["weights.h5"] = ke.EfficientViTM0(weights=workdir + "/w.weights.h5", input_shape=(128, 128, 3),
                                              classifier_activation=None)
    formats["tf.weights.h5"] = ke.EfficientViTM0(weights=workdir + "/tf.weights.h5", input_shape=(128, 128, 3),
                                                 classifier_activation=None)
    # each load gives exactly the weights of `model`, whose logits match timm's
    reference_weights = model.get_weights()
    weight_diff = lambda m: max(float(np.abs(a - b).max()) for a, b in zip(m.get_weights(), reference_weights))
    out["formats"] = {k: weight_diff(m) for k, m in formats.items()}

    fused = ke.fuse_batchnorm(model)
    out["fused"] = float(np.abs(outputs(fused, x) - expected).max())
    feats = outputs(ke.feature_extractor(model), x)
    out["features"] = [list(f.shape[1:]) for f in feats]

    model.save(workdir + f"/{backend}.keras")
    again = keras.models.load_model(workdir + f"/{backend}.keras")
    out["keras_roundtrip"] = weight_diff(again)
    out["keras_roundtrip_layers"] = [(l.name, type(l).__name__) for l in again.layers] == \
        [(l.name, type(l).__name__) for l in model.layers]
    from keras_evit.weights.artifacts import load_keras_file
    from_tf = load_keras_file(workdir + "/tf.keras")  # checked as --weights checks it, then Keras' load_model
    out["keras_from_tf"] = float(np.abs(outputs(from_tf, x) - expected).max())

    small = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3), classes=3, classifier_activation=None)
    small.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    small.optimizer.build(small.trainable_variables)  # the README's advice: TensorFlow then traces fit once
    before = [w.copy() for w in small.get_weights()]
    train_x = np.random.RandomState(1).uniform(0, 255, (8, 64, 64, 3)).astype("float32")
    train_y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    history = small.fit(train_x, train_y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    out["fit_loss"] = float(history.history["loss"][-1])
    out["fit_changed"] = sum(not np.array_equal(a, b) for a, b in zip(before, small.get_weights()))
    # rematerialized, the same fit gives the same weights and BatchNorm statistics (moved once per step), on a small
    # model of the same layers (test_layers_remat.mini); on JAX with Keras' "larger_than" mode: our layers
    # rematerialized inside rematerialized layers (on PyTorch that mode fails in Keras' own Rescaling)
    import contextlib
    from test_layers_remat import mini
    fits = []
    for scope in (contextlib.nullcontext(),
                  keras.RematScope(mode="larger_than") if backend == "jax" else ke.remat_scope()):
        keras.utils.set_random_seed(0)
        net = keras.Sequential([mini(scope), keras.layers.Dense(3)])
        net.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        net.fit(train_x / 64 - 2, train_y, batch_size=4, epochs=1, verbose=0, shuffle=False)
        fits.append(net.get_weights())
    out["remat_weights"] = max(float(np.abs(a - b).max()) for a, b in zip(*fits))

    import tensorflow as tf
    ds = tf.data.Dataset.from_tensor_slices(x.astype("uint8")).map(ke.normalize_images).batch(2)
    out["tf_data"] = float(np.abs(next(iter(ds)).numpy() - ke.normalize_images(x.astype("uint8"))).max())
    print("RESULT " + json.dumps(out))
''')


@pytest.fixture(scope="module")
def tf_files(tmp_path_factory, ref):
    """A .keras and a .weights.h5 saved under TensorFlow, for the other backends to load."""
    workdir = tmp_path_factory.mktemp("backends")
    from keras_evit.weights import assign_state_dict

    tm = ref.create_timm_model("m0", img_size=128)
    model = ke.EfficientViTM0(weights=None, input_shape=(128, 128, 3), classifier_activation=None)
    assign_state_dict(model, ref.timm_state_dict(tm), variant="m0")
    model.save(str(workdir / "tf.keras"))
    model.save_weights(str(workdir / "tf.weights.h5"))
    return workdir


@pytest.mark.slow  # a fresh process per backend: about 2 minutes; CI runs the slow suite too
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_backend(backend, tf_files):
    if backend == "jax":
        require("jax")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", CHILD, backend, str(tf_files)], capture_output=True, text=True,
                            timeout=600, env=env, cwd=HERE)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT ", 1)[1])
    print(backend, out)
    assert out["parity"] <= 1e-4 and out["parity_no_preprocessing"] <= 1e-4
    assert set(out["formats"]) == {"npz", "safetensors", "pth", "weights.h5", "tf.weights.h5"}
    assert max(out["formats"].values()) <= 1e-6
    assert out["fused"] <= 1e-4
    assert out["features"] == [[8, 8, 64], [4, 4, 128], [2, 2, 192]]
    assert out["keras_roundtrip"] == 0.0 and out["keras_roundtrip_layers"] and out["keras_from_tf"] <= 1e-4
    assert np.isfinite(out["fit_loss"]) and out["fit_changed"] > 0
    assert out["remat_weights"] <= 1e-4  # statistics moved twice: 0.4-0.9
    assert out["tf_data"] <= 1e-6


NO_TENSORFLOW = textwrap.dedent('''
    import sys
    import keras, numpy as np
    import keras_evit as ke
    from keras_evit.optimizers import AGCAdamW

    model = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3), classes=3)
    model.compile(AGCAdamW(learning_rate=1e-3, weight_decay=0.05, agc_clip=0.02),
                  keras.losses.SparseCategoricalCrossentropy())
    x = np.random.RandomState(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    model.fit(x, np.array([0, 1, 2, 0]), batch_size=2, epochs=1, verbose=0)
    model.predict(x, verbose=0)
    print("RESULT", keras.backend.backend(), "tensorflow" in sys.modules)
''')


def test_training_on_pytorch_loads_no_tensorflow():
    """On the PyTorch backend, building, training (keras-evit's AdamW, BatchNorm's and the strided convolutions'
    PyTorch kernels) and predicting load no TensorFlow: ~0.5 GB a PyTorch user does not pay."""
    env = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", NO_TENSORFLOW], capture_output=True, text=True, timeout=300,
                            env=env)
    assert "RESULT torch False" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
