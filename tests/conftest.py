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


def missing(what):
    """Skips a test whose data or tool is absent; fails it where the full suite is required (``make test``
    sets KERAS_EVIT_REQUIRE_REFERENCE=1), so CI never passes by skipping."""
    if os.environ.get("KERAS_EVIT_REQUIRE_REFERENCE") == "1":
        pytest.fail(f"{what} (required by make test)")
    pytest.skip(what)


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


def random_images(n, height, width=None, seed=0):
    """Normalized-scale inputs, for models built with include_preprocessing=False."""
    return np.random.RandomState(seed).randn(n, height, width or height, 3).astype("float32")


def raw_images(n, height, width=None, seed=0):
    """RGB 0..255 float inputs, for models with in-model preprocessing (the default)."""
    return np.random.RandomState(seed).uniform(0, 255, (n, height, width or height, 3)).astype("float32")


def timm_vs_keras(ref, tm, km, x):
    """max |timm - keras| logits on ``x`` (raw RGB for in-model-preprocessing models, else normalized)."""
    import keras_evit as ke
    from keras_evit.preprocessing import has_preprocessing

    expected = ref.timm_logits(tm, ke.normalize_images(x) if has_preprocessing(km) else x)
    got = km.predict(x, verbose=0)
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
