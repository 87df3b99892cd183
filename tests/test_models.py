import keras
import numpy as np
import pytest

import keras_evit as ke

from conftest import outputs, random_images, raw_images


def test_keras_roundtrip(tmp_path):
    model = ke.EfficientViTM1(weights=None, input_shape=(160, 192, 3))
    path = str(tmp_path / "m1.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = random_images(2, 160, 192)
    np.testing.assert_allclose(outputs(loaded, x), outputs(model, x), atol=1e-6)
    assert loaded.name == "efficientvit_m1"


@pytest.mark.parametrize("shape", [(64, 64, 3), (97, 131, 3), (224, 160, 3)])
def test_any_static_size_runs(shape):
    model = ke.EfficientViTM0(weights=None, input_shape=shape)
    out = outputs(model, random_images(1, shape[0], shape[1]))
    assert out.shape == (1, 1000)
    np.testing.assert_allclose(out.sum(), 1.0, rtol=1e-5)


def test_feature_extractor_strides():
    backbone = ke.EfficientViTM4(include_top=False, weights=None, input_shape=(384, 384, 3))
    feats = ke.feature_extractor(backbone)
    shapes = [tuple(o.shape[1:]) for o in feats.outputs]
    assert shapes == [(24, 24, 128), (12, 12, 256), (6, 6, 384)]  # strides 16, 32, 64
    outs = outputs(feats, random_images(1, 384))
    assert [o.shape[1:] for o in outs] == shapes


def test_include_top_pooling_and_classes():
    assert ke.EfficientViTM0(weights=None, include_top=False).output.shape[1:] == (4, 4, 192)
    assert ke.EfficientViTM0(weights=None, include_top=False, pooling="max").output.shape[1:] == (192,)
    model = ke.EfficientViTM0(weights=None, classes=7, classifier_activation=None)
    assert model.output.shape[1:] == (7,)
    assert model.layers[-1].name == "head"


def test_input_tensor():
    inputs = keras.Input((128, 128, 3))
    model = ke.EfficientViTM0(weights=None, input_tensor=inputs, include_top=False, pooling="avg")
    assert model.inputs[0] is inputs


@pytest.mark.parametrize("kwargs,match", [
    (dict(input_shape=(32, 32, 3)), "too small"),
    (dict(input_shape=(None, None, 3)), "static height and width"),
    (dict(input_shape=(3, 224, 224)), "channels-first"),
    (dict(input_shape=(224, 224)), r"\(height, width, channels\)"),
    (dict(pooling="mean", include_top=False), "pooling"),
    (dict(weights=3), "weights must be"),
])
def test_bad_arguments(kwargs, match):
    kwargs.setdefault("weights", None)
    with pytest.raises(ValueError, match=match):
        ke.EfficientViTM0(**kwargs)


def test_transfer_learning_head_trains():
    """A frozen backbone as the first layer of a Sequential: fit moves the head and nothing else."""
    backbone = ke.EfficientViTM0(weights=None, include_top=False, pooling="avg", input_shape=(64, 64, 3))
    backbone.trainable = False
    model = keras.Sequential([backbone, keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = raw_images(8, 64), np.array([0, 1] * 4)
    frozen, head = backbone.get_weights(), model.layers[-1].get_weights()
    history = model.fit(x, y, epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.array_equal(a, b) for a, b in zip(frozen, backbone.get_weights()))  # BN statistics too
    assert not np.array_equal(head[0], model.layers[-1].get_weights()[0])
