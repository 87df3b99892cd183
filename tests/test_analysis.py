"""Attention maps as a Keras feature, and the paper's head-similarity metric (Fig. 4)."""

import os

import numpy as np
import pytest
from keras import ops

import keras_evit as ke
from keras_evit.analysis import attention_blocks, head_similarity, stitch_windows

from conftest import raw_images, randomize


@pytest.fixture(scope="module")
def model():
    return randomize(ke.EfficientViTM0(weights=None, input_shape=(128, 128, 3), classifier_activation=None))


def test_maps_do_not_change_outputs_and_have_the_window_layout(model):
    x = raw_images(2, 128)
    before = model.predict(x, verbose=0)
    maps = ke.attention_maps(model, x)
    after = model.predict(x, verbose=0)
    np.testing.assert_array_equal(before, after)
    assert [name for name, _ in attention_blocks(model)] == list(maps)
    # stage 1 of a 128 px M0 is 8x8 -> two 7x7 windows a side (padded to 14x14); stages 2, 3: one window
    assert maps["stages-0-blocks-0"].shape == (2, 2, 2, 4, 49, 49)
    assert maps["stages-1-blocks-0"].shape == (2, 1, 1, 4, 16, 16)
    assert maps["stages-2-blocks-0"].shape == (2, 1, 1, 4, 4, 4)
    np.testing.assert_allclose(maps["stages-0-blocks-0"].sum(-1), 1.0, rtol=1e-5)  # rows are softmaxes


def test_maps_reproduce_the_layer_output():
    """softmax(Q K^T * scale + bias) @ V, cascaded head to head and projected, is what the layer computes."""
    layer = ke.layers.CascadedGroupAttention(3, (5, 5, 5), key_dim=8)
    x = np.random.RandomState(0).randn(2, 4, 4, 12).astype("float32")
    layer(x)  # builds it
    layer.attention_biases.assign(np.random.RandomState(1).randn(3, 16).astype("float32"))
    out, maps = layer(x, return_attention_scores=True)
    maps = ops.convert_to_numpy(maps)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(x)), ops.convert_to_numpy(out))
    bias = ops.convert_to_numpy(layer.attention_biases)[:, layer._bias_index]
    splits = np.split(x, 3, axis=-1)
    feat, heads = splits[0], []
    for i in range(3):
        if i:
            feat = feat + splits[i]
        qkv = ops.convert_to_numpy(layer.qkvs[i](feat))
        q = ops.convert_to_numpy(layer.dws[i](qkv[..., :8])).reshape(2, 16, 8)
        k, v = qkv[..., 8:16].reshape(2, 16, 8), qkv[..., 16:].reshape(2, 16, 4)
        logits = q @ k.transpose(0, 2, 1) * 8 ** -0.5 + bias[i]
        expected = np.exp(logits - logits.max(-1, keepdims=True))
        expected /= expected.sum(-1, keepdims=True)
        np.testing.assert_allclose(maps[:, i], expected, atol=1e-5)
        feat = (maps[:, i] @ v).reshape(2, 4, 4, 4)
        heads.append(feat)
    projected = ops.convert_to_numpy(layer.proj(np.maximum(np.concatenate(heads, -1), 0)))
    np.testing.assert_allclose(projected, ops.convert_to_numpy(out), atol=1e-5)


def test_head_similarity_of_identical_and_orthogonal_heads():
    head = np.random.RandomState(0).rand(1, 2, 2, 1, 9, 9)
    assert head_similarity(np.repeat(head, 4, axis=3)) == pytest.approx(1.0)
    disjoint = np.zeros((1, 1, 1, 3, 3, 3))
    for h in range(3):
        disjoint[0, 0, 0, h, :, h] = 1.0  # each head attends to its own token only
    assert head_similarity(disjoint) == pytest.approx(0.0)
    assert np.isnan(head_similarity(head))  # one head: nothing to compare


def test_stitched_windows_cover_the_feature_grid(model):
    maps = ke.attention_maps(model, raw_images(1, 128))["stages-0-blocks-0"]
    grid = stitch_windows(maps, 8, 8)
    assert grid.shape == (1, 4, 8, 8)
    one = stitch_windows(maps, 8, 8, query=(3, 5))
    np.testing.assert_allclose(one[0, :, :7, :7].sum(axis=(1, 2)), 1.0, rtol=1e-5)  # query (3,5) is in window (0,0)
    assert one[0, :, 7:, :].sum() == 0 and one[0, :, :, 7:].sum() == 0


def test_analyze_heads_cli(tmp_path, sample_dir, capsys):
    import json

    from keras_evit.cli import main

    out = {k: str(tmp_path / f"heads.{k}") for k in ("json", "png")}
    overlay = str(tmp_path / "overlay.png")
    assert main(["analyze", "heads", "--model", "m0", "--weights", "none", "--images", sample_dir, "--limit", "4",
                 "--image-size", "96", "--json", out["json"], "--plot", out["png"], "--overlay", overlay]) == 0
    rows = json.load(open(out["json"]))["rows"]
    assert [r["block"] for r in rows][:2] == ["stages-0-blocks-0", "stages-1-blocks-0"] and len(rows) == 6
    assert all(0.0 <= r["similarity"] <= 1.0 + 1e-9 for r in rows)
    assert os.path.getsize(out["png"]) > 5_000 and os.path.getsize(overlay) > 5_000
    assert "head similarity per block" in capsys.readouterr().out


def test_runtime_groups_sum_to_the_total(tmp_path):
    pytest.importorskip("onnxruntime")
    from keras_evit.export import to_onnx
    from keras_evit.export.runtime_profile import GROUP_ORDER, group_of, grouped, onnx_profile

    model = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3))
    path = to_onnx(model, str(tmp_path / "m0.onnx"), batch_size=1)
    per_op = onnx_profile(path, (1, 64, 64, 3), threads=1, runs=3)
    groups = grouped(per_op)
    assert list(groups) == list(GROUP_ORDER)
    assert sum(groups.values()) == pytest.approx(sum(per_op.values()))
    assert groups["conv"] > 0 and groups["matmul/dense"] > 0 and groups["softmax"] > 0
    assert group_of("Transpose") == "reshape/copy" and group_of("Add") == "element-wise"


def test_runtime_refuses_tflite_with_the_way_to_profile_it(capsys):
    from keras_evit.cli import main

    assert main(["analyze", "runtime", "--format", "tflite"]) == 2
    assert "benchmark_model --enable_op_profiling" in capsys.readouterr().err
