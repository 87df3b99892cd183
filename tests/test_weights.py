"""Checkpoint formats, key layouts and the clear errors of weights=PATH."""

import argparse
import os

import numpy as np
import pytest

import keras_evit as ke
from keras_evit.weights import CheckpointError, read_checkpoint, state_dict_from_model
from keras_evit.weights.checkpoint import _read_torch_zip
from keras_evit.weights.keymap import official_to_timm, timm_to_official

from conftest import outputs, random_images, raw_images, timm_vs_keras


@pytest.fixture(scope="module")
def m0(ref):
    tm = ref.create_timm_model("m0", seed=1)
    return tm, ref.timm_state_dict(tm)


def _save_pth(path, state, **extra):
    import torch

    torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, **extra},
               path)


def _logits_match(ref, tm, model, size=224):
    return timm_vs_keras(ref, tm, model, raw_images(1, size))


def test_key_maps_are_inverse(m0):
    _, state = m0
    for key in state:
        assert official_to_timm(timm_to_official(key)) == key
    assert timm_to_official("stages.1.downsample.patchmerge.se.fc1.weight") == "blocks2.1.se.fc1.weight"
    assert timm_to_official("stages.2.blocks.1.mixer.m.attn.qkvs.0.conv.weight") == \
        "blocks3.4.mixer.m.attn.qkvs.0.c.weight"
    assert timm_to_official("patch_embed.conv4.bn.bias") == "patch_embed.6.bn.bias"


def test_official_pth_with_training_state(ref, m0, tmp_path):
    """Official files pickle training args too: loaded safely, idxs dropped, parity kept."""
    tm, state = m0
    path = str(tmp_path / "efficientvit_m0.pth")
    _save_pth(path, ref.official_state_dict(state), epoch=299, args=argparse.Namespace(lr=1e-3))
    model = ke.EfficientViTM0(weights=path, classifier_activation=None)
    assert _logits_match(ref, tm, model) <= 1e-4


def test_restricted_reader_matches_torch(ref, m0, tmp_path):
    import torch

    _, state = m0
    path = str(tmp_path / "ckpt.pth")
    _save_pth(path, ref.official_state_dict(state), args=argparse.Namespace(lr=1e-3))
    ours = _read_torch_zip(path)["model"]
    theirs = torch.load(path, weights_only=False)["model"]
    assert set(ours) == set(theirs)
    for key in theirs:
        np.testing.assert_array_equal(ours[key], theirs[key].numpy())


def test_restricted_reader_never_runs_pickled_code(tmp_path):
    import torch

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = str(tmp_path / "evil.pth")
    torch.save({"model": {"x": torch.zeros(2)}, "payload": Evil()}, path)
    state = read_checkpoint(path)
    assert not marker.exists()
    assert np.array_equal(state["model"]["x"], np.zeros(2, np.float32))


def test_timm_safetensors_and_2d_pointwise_weights(ref, m0, tmp_path):
    from safetensors.numpy import save_file

    tm, state = m0
    squeezed = {k: (v[:, :, 0, 0] if v.ndim == 4 and v.shape[2:] == (1, 1) else v) for k, v in state.items()}
    path = str(tmp_path / "model.safetensors")
    save_file({k: np.ascontiguousarray(v) for k, v in squeezed.items()}, path)
    model = ke.EfficientViTM0(weights=path, classifier_activation=None)
    assert _logits_match(ref, tm, model) <= 1e-4


def test_state_dict_roundtrip_loads_into_timm(ref, m0):
    tm, state = m0
    model = ke.EfficientViTM0(weights=None)
    ke.weights.assign_state_dict(model, state)
    exported = state_dict_from_model(model)
    fresh = ref.create_timm_model("m0", seed=5)
    import torch

    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)
    x = random_images(1, 224)
    np.testing.assert_allclose(ref.timm_logits(fresh, x), ref.timm_logits(tm, x), atol=1e-6)


def test_include_top_false_skips_head_and_keeps_features(ref, m0, tmp_path):
    tm, state = m0
    path = str(tmp_path / "w.npz")
    np.savez(path, **state)
    model = ke.EfficientViTM0(include_top=False, weights=path, pooling="avg", include_preprocessing=False)
    x = random_images(1, 224)
    import torch

    with torch.no_grad():
        expected = tm.forward_head(tm.forward_features(torch.from_numpy(x.transpose(0, 3, 1, 2))),
                                   pre_logits=True).numpy()
    np.testing.assert_allclose(outputs(model, x), expected, atol=1e-4)


def test_keras_weights_into_other_resolution(m0, tmp_path):
    _, state = m0
    src = ke.EfficientViTM0(weights=None)
    ke.weights.assign_state_dict(src, state)
    path = str(tmp_path / "m0.weights.h5")
    src.save_weights(path)
    with pytest.warns(UserWarning, match="Resized attention-bias tables"):
        model = ke.EfficientViTM0(weights=path, input_shape=(288, 288, 3), include_top=False)
    assert model.output.shape[1:] == (5, 5, 192)


def test_wrong_variant_is_named(m0, tmp_path):
    _, state = m0
    path = str(tmp_path / "w.npz")
    np.savez(path, **state)
    with pytest.raises(CheckpointError, match="holds efficientvit_m0 weights, not efficientvit_m1"):
        ke.EfficientViTM1(weights=path)


def test_missing_tensor_is_named(m0, tmp_path):
    _, state = m0
    state = dict(state)
    del state["stages.1.blocks.0.mixer.m.attn.dws.2.conv.weight"]
    path = str(tmp_path / "w.npz")
    np.savez(path, **state)
    with pytest.raises(CheckpointError, match="1 tensors missing.*attn.dws.2.conv.weight"):
        ke.EfficientViTM0(weights=path)


def test_head_size_mismatch_explains_fix(m0, tmp_path):
    _, state = m0
    path = str(tmp_path / "w.npz")
    np.savez(path, **state)
    with pytest.raises(CheckpointError, match="include_top=False"):
        ke.EfficientViTM0(weights=path, classes=10)


def test_nothing_assigned_when_validation_fails(m0, tmp_path):
    _, state = m0
    state = dict(state)
    state["head.linear.bias"] = np.zeros(7, np.float32)
    model = ke.EfficientViTM0(weights=None)
    before = [np.array(w) for w in model.get_weights()]
    with pytest.raises(CheckpointError):
        ke.weights.assign_state_dict(model, state)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("content,match", [(b"", "corrupt or truncated|not a readable"),
                                           (b"not a zip at all", "not a readable PyTorch checkpoint")])
def test_corrupt_files(tmp_path, content, match):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        read_checkpoint(str(path))


def test_unsupported_and_missing_paths(tmp_path):
    other = tmp_path / "w.ckpt.txt"
    other.write_text("x")
    with pytest.raises(CheckpointError, match="unsupported weights file"):
        read_checkpoint(str(other))
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        ke.EfficientViTM0(weights=str(tmp_path / "nope.pth"))
    os.mkfifo(tmp_path / "pipe.npz")  # a pipe would block the reader: refused, and not called missing
    (tmp_path / "folder.weights.h5").mkdir()
    for name in ("pipe.npz", "folder.weights.h5"):
        with pytest.raises(CheckpointError, match=f"{name}' is not a regular file"):
            ke.EfficientViTM0(weights=str(tmp_path / name))


def test_keras_weights_of_another_variant_are_named(tmp_path):
    path = str(tmp_path / "m0.weights.h5")
    ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3)).save_weights(path)
    with pytest.raises(CheckpointError, match="holds efficientvit_m0 weights, not efficientvit_m1"):
        ke.EfficientViTM1(weights=path)
    garbage = tmp_path / "junk.weights.h5"
    garbage.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(CheckpointError, match="junk.weights.h5 is not a readable EfficientViT .weights.h5"):
        ke.EfficientViTM0(weights=str(garbage))


@pytest.mark.parametrize("saved,loaded", [
    ({"input_shape": (128, 128, 3)}, {}),                                          # full 128 -> full 224
    ({"include_top": False}, {"include_top": False, "input_shape": (160, 160, 3)}),  # headless 224 -> 160
    ({"input_shape": (96, 96, 3)}, {"include_top": False}),                       # full 96 -> headless 224
])
def test_keras_weights_of_any_resolution_load(tmp_path, saved, loaded):
    """A .weights.h5 of any square resolution, with or without its head, loads into a model of any
    resolution: every weight as saved, the attention-bias tables resized to the new windows."""
    from conftest import randomize

    source = randomize(ke.EfficientViTM0(weights=None, **saved))
    path = str(tmp_path / "m0.weights.h5")
    source.save_weights(path)
    model = ke.EfficientViTM0(weights=path, **loaded)
    by_path = {w.path: w for w in source.weights}
    compared = 0
    for w in model.weights:
        if w.path in by_path and "attention_biases" not in w.path:
            np.testing.assert_array_equal(w.numpy(), by_path[w.path].numpy())
            compared += 1
    assert compared >= 560
    for w in model.weights:
        if "attention_biases" in w.path and w.path in by_path and w.shape == by_path[w.path].shape:
            np.testing.assert_allclose(w.numpy(), by_path[w.path].numpy(), atol=1e-6)


def test_keras_weights_put_in_place_after_their_checks_are_never_loaded(tmp_path, monkeypatch):
    """A .weights.h5's declared sizes are checked on the file Keras then reads: one moved into its path in
    between is not what loads."""
    from keras_evit.weights import pretrained

    model = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3))
    path, other = tmp_path / "m0.weights.h5", tmp_path / "other.weights.h5"
    bias = model.get_layer("head").linear.bias
    for target, value in ((path, 1.0), (other, 2.0)):
        bias.assign(np.full(bias.shape, value, np.float32))
        model.save_weights(str(target))
    check = pretrained.check_declared_sizes

    def check_then_swap(*args):
        result = check(*args)
        os.replace(other, path)
        return result

    monkeypatch.setattr(pretrained, "check_declared_sizes", check_then_swap)
    loaded = ke.EfficientViTM0(weights=str(path), input_shape=(64, 64, 3))
    assert np.all(np.asarray(loaded.get_layer("head").linear.bias) == 1.0) and not other.exists()
