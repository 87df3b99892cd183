import keras
import numpy as np

from keras_evit.compat import sublayers
import pytest

import keras_evit as ke

from conftest import random_images, randomize


@pytest.mark.parametrize("variant,shape", [("m0", (224, 224, 3)), ("m5", (160, 208, 3))])
def test_fused_matches_unfused(variant, shape):
    model = ke.build_model(variant, weights=None, input_shape=shape, classifier_activation=None)
    randomize(model)
    fused = ke.fuse_batchnorm(model)
    assert not [l for l in sublayers(fused) if isinstance(l, keras.layers.BatchNormalization)]
    x = random_images(2, shape[0], shape[1])
    expected = model.predict(x, verbose=0)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(fused.predict(x, verbose=0), expected, atol=1e-4)


def test_fused_parameter_count():
    """Spec 1.11: BN-fused M0 has 2.335M parameters."""
    fused = ke.fuse_batchnorm(ke.EfficientViTM0(weights=None))
    assert fused.count_params() == 2_334_916


def test_fused_model_saves_and_loads(tmp_path):
    fused = ke.fuse_batchnorm(ke.EfficientViTM0(weights=None, include_top=False, pooling="avg"))
    path = str(tmp_path / "fused.keras")
    fused.save(path)
    loaded = keras.models.load_model(path)
    x = random_images(1, 224)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), fused.predict(x, verbose=0), atol=1e-6)
