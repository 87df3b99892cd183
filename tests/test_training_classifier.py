"""The classifier runs train and evaluate: built by the model builders, pretrained features with a new head
(timm's reset_classifier), or a run's own head kept."""

import numpy as np

import keras_evit as ke
from keras_evit.training.classifier import build_classifier
from keras_evit.weights import state_dict_from_model

from conftest import outputs

SHAPE = (64, 64, 3)


def _saved(tmp_path, classes):
    model = ke.EfficientViTM0(weights=None, input_shape=SHAPE, classes=classes, classifier_activation=None)
    for var in model.weights:  # not the builder's init, so a loaded value is told from a fresh one
        var.assign(np.random.RandomState(len(var.path)).normal(0, 0.1, var.shape).astype(var.dtype))
    path = str(tmp_path / f"m0_{classes}.weights.h5")
    model.save_weights(path)
    return model, path


def _split(model):
    state = state_dict_from_model(model, with_bn_counters=False)
    return ({k: v for k, v in state.items() if not k.startswith("head.")},
            {k: v for k, v in state.items() if k.startswith("head.")})


def test_other_classes_load_the_features_and_start_a_new_head(tmp_path):
    saved, path = _saved(tmp_path, classes=3)
    model = build_classifier("m0", 5, path, image_size=64)
    assert model.outputs[0].shape[-1] == 5 and model.layers[-1].name == "head"  # the builder's own head
    body, head = _split(model)
    saved_body, saved_head = _split(saved)
    assert all(np.array_equal(body[k], saved_body[k]) for k in saved_body)
    fresh_body, fresh_head = _split(ke.EfficientViTM0(weights=None, input_shape=SHAPE, classes=5))
    assert all(np.array_equal(head[k], fresh_head[k]) for k in fresh_head if "running" in k or "bn" in k)
    assert not np.array_equal(head["head.linear.weight"][:3], saved_head["head.linear.weight"])


def test_a_runs_own_head_is_kept(tmp_path):
    saved, path = _saved(tmp_path, classes=3)
    model = build_classifier("m0", 3, path, image_size=64)
    x = np.random.RandomState(0).uniform(0, 255, (2, *SHAPE)).astype("float32")
    np.testing.assert_allclose(outputs(model, x), outputs(saved, x), atol=1e-5)


def test_a_checkpoint_in_torch_layout_gets_a_new_head_too(tmp_path):
    saved, _ = _saved(tmp_path, classes=1000)
    path = str(tmp_path / "m0.npz")
    np.savez(path, **state_dict_from_model(saved))
    model = build_classifier("m0", 4, path, image_size=64)
    body, head = _split(model)
    saved_body, _ = _split(saved)
    assert all(np.array_equal(body[k], saved_body[k]) for k in saved_body) and head["head.linear.weight"].shape[0] == 4


def test_a_foreign_weights_file_for_a_new_head_is_named(tmp_path):
    import keras
    import pytest

    from keras_evit.weights import CheckpointError

    path = str(tmp_path / "other.weights.h5")
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save_weights(path)
    with pytest.raises(CheckpointError, match="not a readable EfficientViT .weights.h5 file. Re-save"):
        build_classifier("m0", 5, path, image_size=64)
