import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from keras_evit.compat import sublayers
import pytest

# the shared sample data beside the checkout (../shared/data), or wherever KERAS_EVIT_DATA points
SHARED = os.environ.get("KERAS_EVIT_DATA") or os.path.normpath(
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
IMAGENET_SAMPLE = os.path.join(SHARED, "imagenet-sample")
HYMENOPTERA = os.path.join(SHARED, "hymenoptera")


def pytest_collection_modifyitems(config, items):
    """The slow end-to-end cases first: with two workers the run then ends on short tests, not on one
    worker finishing a multi-minute case while the other idles."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def missing(what):
    """Skips a test whose data or tool is absent; fails it where the full suite is required (``make test``
    sets KERAS_EVIT_REQUIRE_REFERENCE=1), so CI never passes by skipping."""
    if os.environ.get("KERAS_EVIT_REQUIRE_REFERENCE") == "1":
        pytest.fail(f"{what} (required by make test)")
    pytest.skip(what, allow_module_level=True)


def require(module):
    """``module`` imported, for a test that needs an optional package ``make install-test`` installs: absent,
    the test skips, or fails under ``make test`` (see ``missing``)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing(f"{module} is not installed ({exc}): make install-test installs it")


def run_python(args, timeout=900, **kwargs):
    """``python ARGS`` in a fresh process, as a user runs a step; its stdout (its stderr's tail on failure)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def need_ants_bees_and_mediapipe():
    """The ants/bees folder and MediaPipe's environment, for the journeys that end on the phone runtime."""
    from keras_evit.export.metadata import mediapipe_python

    if not os.path.isdir(HYMENOPTERA):
        missing(f"{HYMENOPTERA} is missing (set KERAS_EVIT_DATA to the shared data folder)")
    if mediapipe_python() is None:
        missing("MediaPipe's environment is missing: run `keras-evit setup-mediapipe` (make test does)")


def ants_bees_phone_journey(tmp_path, fit_script, predict_script, every, export_args):
    """The transfer-learning journey to the phone, each step in a fresh process from files on disk:
    ``fit_script TRAIN_DIR MODEL`` (writes MODEL and MODEL.labels.txt), ``predict_script MODEL CROPS FILES...``
    (saves the crops and Keras' probabilities), ``keras-evit export`` with ``export_args``, then MediaPipe.
    Returns (export's stdout, Keras' (ants, bees) probabilities, MediaPipe's)."""
    need_ants_bees_and_mediapipe()
    path, crops, tflite = str(tmp_path / "model.keras"), str(tmp_path / "crops.npy"), str(tmp_path / "model.tflite")
    run_python(["-c", fit_script, os.path.join(HYMENOPTERA, "train"), path])
    run_python(["-c", predict_script, path, crops, *ants_bees_val_files(every)])
    out = run_python(["-m", "keras_evit.cli", "export", "--weights", path, "--labels", path + ".labels.txt",
                      "--verify-dir", os.path.join(HYMENOPTERA, "val"), "--output", tflite, *export_args])
    assert "2 labels in metadata" in out, out
    return out, np.load(crops + ".keras.npy"), mediapipe_ants_bees(tflite, np.load(crops))


def ants_bees_val_files(every):
    """Every ``every``-th image of the ants/bees validation folder (ants first)."""
    val = os.path.join(HYMENOPTERA, "val")
    files = [os.path.join(val, c, f) for c in ("ants", "bees") for f in sorted(os.listdir(os.path.join(val, c)))]
    return files[::every]


def mediapipe_ants_bees(tflite, images):
    """MediaPipe's (ants, bees) scores for each image, classified from ``tflite`` as an app would."""
    from keras_evit.export.metadata import mediapipe_classify

    rows = mediapipe_classify(tflite, images, top=2)
    return np.array([[dict((name, score) for _, name, score in row)[c] for c in ("ants", "bees")] for row in rows])


def _reference_or_skip():
    """The timm oracle; CI sets KERAS_EVIT_REQUIRE_REFERENCE=1 so a missing install fails loudly."""
    try:
        from keras_evit import reference

        reference.import_timm()
        return reference
    except ImportError as exc:
        if os.environ.get("KERAS_EVIT_REQUIRE_REFERENCE") == "1":
            raise
        pytest.skip(f"torch/timm reference not installed: {exc}")


@pytest.fixture(scope="session")
def ref():
    return _reference_or_skip()


@pytest.fixture(scope="session")
def sample_dir():
    if not os.path.isdir(IMAGENET_SAMPLE):
        missing(f"{IMAGENET_SAMPLE} not present (set KERAS_EVIT_DATA to the shared data folder)")
    return IMAGENET_SAMPLE


def raised_without_blocking(load, *args, timeout=120, **kwargs):
    """What ``load(*args, **kwargs)`` raised, run in a thread so that a load blocked on a pipe fails the test
    (after ``timeout`` seconds) instead of hanging it; a load that returns fails it too."""
    import threading

    raised = []

    def attempt():
        try:
            load(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001  (the caller checks what was raised)
            raised.append(exc)

    reader = threading.Thread(target=attempt, daemon=True)
    reader.start()
    reader.join(timeout)
    assert raised, f"{load.__qualname__}{args}: blocked, or loaded"
    return raised[0]


def declare_empty_gzip_dataset(h5_path, pick, shape, chunks=(1 << 20,)):
    """Replaces the dataset ``pick(names)`` chooses among an HDF5 file's datasets by a float32 one declaring
    ``shape`` in empty gzip chunks: a few KB on disk that a reader reading it whole allocates in full."""
    import h5py

    with h5py.File(h5_path, "a") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        name = pick(names)
        del f[name]
        f.create_dataset(name, shape=shape, dtype="float32", chunks=chunks, compression="gzip")


def random_images(n, height, width=None, seed=0):
    """Normalized-scale inputs, for models built with include_preprocessing=False."""
    return np.random.RandomState(seed).randn(n, height, width or height, 3).astype("float32")


def raw_images(n, height, width=None, seed=0):
    """RGB 0..255 float inputs, for models with in-model preprocessing (the default)."""
    return np.random.RandomState(seed).uniform(0, 255, (n, height, width or height, 3)).astype("float32")


def outputs(model, x):
    """``model``'s outputs on ``x`` from eager calls: predict's numbers without tracing a graph first (3-6 s
    a model). Tests of predict itself, and of what a user runs, call predict."""
    from keras_evit.models.inference import outputs as eager_outputs

    return eager_outputs(model, np.asarray(x, np.float32))


def timm_vs_keras(ref, tm, km, x):
    """max |timm - keras| logits on ``x`` (raw RGB for in-model-preprocessing models, else normalized)."""
    import keras_evit as ke
    from keras_evit.preprocessing import has_preprocessing

    expected = ref.timm_logits(tm, ke.normalize_images(x) if has_preprocessing(km) else x)
    got = outputs(km, x)
    assert np.abs(expected).max() > 0.1, "degenerate reference output"
    return float(np.abs(expected - got).max())


def randomize(model, seed=0):
    """Non-trivial BN statistics/affines and attention biases, so outputs are O(1), not ~0."""
    import keras

    import keras_evit as ke

    rng = np.random.RandomState(seed)
    for layer in sublayers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.75, 1.25, n), rng.randn(n) * 0.1, rng.randn(n) * 0.1,
                               rng.uniform(0.75, 1.25, n)])
        elif isinstance(layer, ke.layers.CascadedGroupAttention):
            layer.attention_biases.assign(rng.randn(*layer.attention_biases.shape) * 0.5)
    return model
