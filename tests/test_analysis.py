"""Attention maps as a Keras feature, and the paper's head-similarity metric (Fig. 4)."""

import os

import numpy as np
import pytest
from keras import ops

import keras_evit as ke
from keras_evit.analysis import attention_blocks, head_similarity, stitch_windows

from conftest import outputs, raw_images, randomize, require


@pytest.fixture(scope="module")
def model():
    return randomize(ke.EfficientViTM0(weights=None, input_shape=(128, 128, 3), classifier_activation=None))


def test_maps_do_not_change_outputs_and_have_the_window_layout(model):
    x = raw_images(2, 128)
    before = outputs(model, x)
    maps = ke.attention_maps(model, x)
    after = outputs(model, x)
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


@pytest.mark.slow  # an ONNX export and a profiled run
def test_runtime_groups_sum_to_the_total(tmp_path):
    require("onnxruntime")
    from keras_evit.export import to_onnx
    from keras_evit.benchmarks.runtime_profile import GROUP_ORDER, group_of, grouped, onnx_profile

    model = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3))
    path = to_onnx(model, str(tmp_path / "m0.onnx"), batch_size=1)
    per_op = onnx_profile(path, (1, 64, 64, 3), threads=1, runs=3)
    groups = grouped(per_op)
    assert list(groups) == list(GROUP_ORDER)
    assert sum(groups.values()) == pytest.approx(sum(per_op.values()))
    assert groups["conv"] > 0 and groups["matmul/dense"] > 0 and groups["softmax"] > 0
    assert group_of("Transpose") == "reshape/copy" and group_of("Add") == "element-wise"


@pytest.mark.slow
def test_runtime_tflite_without_a_profiler_exports_and_says_how(tmp_path, capsys):
    from keras_evit.cli import main

    code = main(["analyze", "runtime", "--format", "tflite", "--model", "m0", "--image-size", "64",
                 "--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--enable_op_profiling=true --op_profiling_output_mode=proto" in err
    assert (tmp_path / "m0.tflite").stat().st_size > 1e6  # the file to profile is there


def test_runtime_without_workdir_leaves_no_temp_folder(tmp_path, capsys, monkeypatch):
    """Its own temp folder is removed on every exit path (here a profiler that fails); without a profiler,
    a file nobody could keep is not even exported."""
    import tempfile

    from keras_evit.cli import main

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["analyze", "runtime", "--format", "tflite", "--model", "m0", "--image-size", "64"]) == 2
    assert "--workdir DIR to keep the files to profile" in capsys.readouterr().err
    failing = tmp_path / "benchmark_model"
    failing.write_text("#!/bin/sh\necho simulated crash >&2\nexit 3\n")
    failing.chmod(0o755)
    import keras_evit.export

    written = []

    def to_tflite(model, path):  # the profiler fails before reading it: what it holds does not matter here
        with open(path, "wb") as f:
            f.write(b"TFL3")
        written.append(path)
        return path

    monkeypatch.setattr(keras_evit.export, "to_tflite", to_tflite)
    assert main(["analyze", "runtime", "--format", "tflite", "--model", "m0", "--image-size", "64",
                 "--benchmark-model", str(failing)]) == 2
    assert "benchmark_model failed (exit 3)" in capsys.readouterr().err
    assert [os.path.basename(os.path.dirname(p))[:19] for p in written] == ["keras_evit_analyze_"]
    assert not [name for name in os.listdir(tmp_path) if name.startswith("keras_evit_analyze_")]


def _write_litert_profile(path, top_level, delegated=()):
    """A BenchmarkProfilingData proto as benchmark_model writes it: (node_type, avg us) per op."""
    from keras_evit.benchmarks.runtime_profile import benchmark_profiling_data

    data = benchmark_profiling_data()
    data.model_name = "m0"
    subgraph = data.runtime_profile.subgraph_profiles.add(subgraph_name="main", subgraph_index=0)
    for i, (kind, us) in enumerate(top_level):
        op = subgraph.per_op_profiles.add(node_type=kind, name=f"op{i}", run_order=i, times_called=50)
        op.inference_microseconds.avg = us
    if delegated:
        delegate = data.runtime_profile.delegate_profiles.add(delegate_name="XNNPACK")
        for i, (kind, us) in enumerate(delegated):
            op = delegate.per_op_profiles.add(node_type=kind, name=f"x{i}", times_called=50)
            op.inference_microseconds.avg = us
    path.write_bytes(data.SerializeToString())
    return str(path)


def test_litert_profile_groups_sum_to_the_total(tmp_path, capsys):
    """Builtin ops count as themselves; a delegate node is replaced by the delegate's own operators."""
    from keras_evit.cli import main
    from keras_evit.benchmarks.runtime_profile import GROUP_ORDER, grouped, tflite_profile

    plain = _write_litert_profile(tmp_path / "cpu.profile.pb", [
        ("CONV_2D", 400), ("DEPTHWISE_CONV_2D", 100), ("RESHAPE", 30), ("TRANSPOSE", 20), ("ADD", 50),
        ("BATCH_MATMUL", 60), ("SOFTMAX", 15), ("MEAN", 5), ("FULLY_CONNECTED", 10), ("SOME_CUSTOM", 7)])
    per_op = tflite_profile(plain)
    groups = grouped(per_op)
    assert list(groups) == list(GROUP_ORDER) and sum(groups.values()) == pytest.approx(697)
    assert groups == pytest.approx({"reshape/copy": 50, "element-wise": 50, "normalization": 5, "conv": 500,
                                    "matmul/dense": 70, "softmax": 15, "other": 7})
    xnn = _write_litert_profile(tmp_path / "xnnpack.profile.pb", [("TfLiteXNNPackDelegate", 900), ("SOFTMAX", 15)], [
        ("Convolution (NHWC, F32) IGEMM", 500), ("Convolution (NHWC, F32) DWConv", 150), ("Copy (NC, X32)", 40),
        ("Transpose (ND, X32)", 30), ("Add (ND, F32)", 60), ("Batch Matrix Multiply (NC, F32) GEMM", 80),
        ("Fully Connected (NC, F32) GEMM", 20), ("Constant Pad (ND, X32)", 10), ("Mean (ND, F32)", 10)])
    groups = grouped(tflite_profile(xnn))
    assert sum(groups.values()) == pytest.approx(915)  # 900 in the delegate's ops + SOFTMAX, not 900 twice
    assert groups["conv"] == 650 and groups["reshape/copy"] == 80 and groups["matmul/dense"] == 100

    assert main(["analyze", "runtime", "--format", "tflite", "--profile-file", plain, "--profile-file", xnn,
                 "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")]) == 0
    out = capsys.readouterr().out
    assert "cpu" in out and "xnnpack" in out and (tmp_path / "r.png").exists()


@pytest.mark.parametrize("content,match", [(b"", "not a benchmark_model op profile"),
                                           (b"\xff\xff\xff garbage", "not a BenchmarkProfilingData"),
                                           (None, "no such profile file")])
def test_litert_profile_rejects_what_is_not_one(tmp_path, content, match):
    from keras_evit.benchmarks.runtime_profile import tflite_profile

    path = tmp_path / "bad.pb"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        tflite_profile(str(path))


def test_litert_profile_without_times_is_an_error(tmp_path):
    from keras_evit.benchmarks.runtime_profile import tflite_profile

    with pytest.raises(ValueError, match="no per-op times"):
        tflite_profile(_write_litert_profile(tmp_path / "empty.pb", []))


def test_litert_profile_of_zeros_is_an_error(tmp_path):
    from keras_evit.benchmarks.runtime_profile import tflite_profile

    with pytest.raises(ValueError, match="every op time in the profile is zero"):
        tflite_profile(_write_litert_profile(tmp_path / "zeros.pb", [("CONV_2D", 0), ("ADD", 0)]))


def test_profiles_with_the_same_name_are_both_kept(tmp_path, capsys):
    """Two phones' profiles named alike: each keyed by its full path, neither dropped."""
    import json

    from keras_evit.cli import main

    (tmp_path / "pixel").mkdir()
    (tmp_path / "galaxy").mkdir()
    a = _write_litert_profile(tmp_path / "pixel" / "m0.profile.pb", [("CONV_2D", 400)])
    b = _write_litert_profile(tmp_path / "galaxy" / "m0.profile.pb", [("CONV_2D", 300)])
    report = tmp_path / "r.json"
    assert main(["analyze", "runtime", "--format", "tflite", "--profile-file", a, "--profile-file", b,
                 "--json", str(report)]) == 0
    assert sorted(json.loads(report.read_text())["per_op_us"]) == sorted([a, b])
    assert main(["analyze", "runtime", "--format", "tflite", "--profile-file", a, "--profile-file", a]) == 2
    assert "the same --profile-file is given twice" in capsys.readouterr().err
