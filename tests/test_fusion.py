import keras
import numpy as np

from keras_evit.compat import sublayers
import pytest

import keras_evit as ke

from conftest import outputs, random_images, randomize


@pytest.mark.parametrize("variant,shape", [("m0", (224, 224, 3)), ("m5", (160, 208, 3))])
def test_fused_matches_unfused(variant, shape):
    model = ke.build_model(variant, weights=None, input_shape=shape, classifier_activation=None)
    randomize(model)
    fused = ke.fuse_batchnorm(model)
    assert not [layer for layer in sublayers(fused) if isinstance(layer, keras.layers.BatchNormalization)]
    x = random_images(2, shape[0], shape[1])
    expected = outputs(model, x)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(outputs(fused, x), expected, atol=1e-4)


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
    np.testing.assert_allclose(outputs(loaded, x), outputs(fused, x), atol=1e-6)


@pytest.mark.parametrize("variant,shape", [("m0", (224, 224, 3)), ("m2", (131, 97, 3))])
def test_folded_normalization_matches(variant, shape):
    """The deploy stem takes raw pixels with the normalization folded into conv1 (border outputs
    corrected: zero padding in normalized space is mean padding in raw space), odd sizes included."""
    from conftest import raw_images

    model = randomize(ke.build_model(variant, weights=None, input_shape=shape, classifier_activation=None))
    folded = ke.fold_normalization(ke.fuse_batchnorm(model))
    assert not [layer for layer in folded.layers if isinstance(layer, keras.layers.Rescaling)]
    stem = folded.get_layer("patch_embed")
    assert stem.input_scale is not None and np.abs(stem.border_bias.numpy()).max() > 0
    x = raw_images(2, shape[0], shape[1])
    expected = outputs(model, x)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(outputs(folded, x), expected, atol=1e-4)


def test_fold_leaves_normalized_input_models_alone():
    fused = ke.fuse_batchnorm(ke.EfficientViTM0(weights=None, include_preprocessing=False))
    assert ke.fold_normalization(fused) is fused


def _nested_classifier(mixed=False):
    """The keras.applications transfer-learning pattern: a backbone called as a layer, a Dense softmax head."""
    base = ke.EfficientViTM0(weights=None, include_top=False, input_shape=(96, 96, 3))
    randomize(base)
    inputs = keras.Input((96, 96, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    outputs = keras.layers.Dense(3, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="user_model")


def test_nested_backbone_fuses_folds_and_gives_features():
    from conftest import raw_images

    from keras_evit.weights.artifacts import is_softmax_output, with_activation

    model = _nested_classifier()
    x = raw_images(2, 96)
    expected = outputs(model, x)
    deployed = ke.fold_normalization(ke.fuse_batchnorm(model))
    assert not [layer for layer in sublayers(deployed) if isinstance(layer, keras.layers.BatchNormalization)]
    np.testing.assert_allclose(outputs(deployed, x), expected, atol=1e-5)
    features = ke.feature_extractor(model)
    assert [tuple(o.shape[1:3]) for o in features.outputs] == [(6, 6), (3, 3), (2, 2)]
    maps = ke.attention_maps(model, x)
    assert len(maps) == 6
    # a Dense softmax head is the model's own softmax: never doubled, and stripped exactly for logits
    assert is_softmax_output(model) and with_activation(model, "softmax") is model
    logits = outputs(with_activation(model, None), x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.softmax(logits)), expected, atol=1e-6)


def test_normalized_input_model_gets_raw_input_with_the_normalization_folded():
    """A model that takes normalized images (include_preprocessing=False, or one calling such a backbone)
    becomes a raw-RGB model whose normalization folds into the stem, through the nesting: what export ships."""
    from conftest import raw_images, randomize

    from keras_evit.models.fusion import _normalized_stems
    from keras_evit.preprocessing import has_preprocessing, raw_input_model

    plain = randomize(ke.EfficientViTM0(weights=None, include_preprocessing=False, input_shape=(96, 96, 3),
                                        classifier_activation=None))
    inputs = keras.Input((96, 96, 3))
    nested = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(
        ke.EfficientViTM0(weights=None, include_top=False, include_preprocessing=False,
                          input_shape=(96, 96, 3))(inputs))))
    x = raw_images(2, 96)
    for model in (plain, nested):
        raw = raw_input_model(model)
        assert has_preprocessing(raw) and raw_input_model(raw) is raw
        assert len(_normalized_stems(ke.fuse_batchnorm(raw))) == 1
        deployed = ke.fold_normalization(ke.fuse_batchnorm(raw))
        assert not [layer for layer in sublayers(deployed) if isinstance(layer, keras.layers.Rescaling)
                    and layer.name == "preprocessing"]  # folded: no separate pass over the image
        expected = outputs(model, ke.normalize_images(x))
        np.testing.assert_allclose(outputs(deployed, x), expected, atol=2e-5 * np.abs(expected).max() + 1e-6)
