"""The training-step profiler: op grouping, and a real trace of a tiny fit step read back."""

import json
import os
import subprocess
import sys

import pytest

from keras_evit.benchmarks import step_profile as sp


def test_op_group():
    assert sp.op_group("StatefulPartitionedCall/adam_w/Mul_3", "Mul") == ("optimizer", "optimizer")
    assert sp.op_group("StatefulPartitionedCall/agc_adam_w/Mul_3", "Mul", "agc_adam_w") == ("optimizer", "optimizer")
    assert sp.op_group("StatefulPartitionedCall/agc_adam_w/Mul_3", "Mul")[0] == "forward"
    assert sp.op_group("m/gradient_tape/m/stages-0/dw0-m/bn/FusedBatchNormGradV3",
                       "FusedBatchNormGradV3") == ("backward", "batchnorm")
    assert sp.op_group("m/stages-0/dw0-m/conv/depthwise", "_MklNativeDepthwiseConv2dNative") == \
        ("forward", "depthwise conv")
    assert sp.op_group("m/gradient_tape/m/patch_embed/conv1/conv/Conv2DBackpropFilter",
                       "_MklNativeConv2DBackpropFilter") == ("backward", "conv")
    assert sp.op_group("m/attn/MatMul", "_MklBatchMatMulV2") == ("forward", "attention")
    assert sp.op_group("m/attn/split", "SplitV") == ("forward", "slice/concat")
    assert sp.op_group("m/add", "AddV2") == ("forward", "elementwise")
    assert sp.op_group("m/x", "Cast") == ("forward", "cast")
    assert sp.op_group("m/gradient_tape/m/stages-0/dw0-m/bn/Cast_1", "Cast") == ("backward", "cast")
    assert sp.op_group("m/x", "Identity") == ("forward", "other")


@pytest.mark.slow
@pytest.mark.parametrize("runtime, policy", [("keras", "float32"), ("keras-mixed", "mixed_bfloat16")])
def test_profile_command_end_to_end(tmp_path, runtime, policy):
    """`keras-evit bench --train --profile` in a fresh process: table, JSON with every phase, PNG; keras-mixed
    profiles the step `train --mixed-precision` runs (bfloat16 without a GPU), with its casts."""
    out_json, out_png = tmp_path / "p.json", tmp_path / "p.png"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", "keras_evit.cli", "bench", "--train", "--profile", "--model", "m0",
                             "--image-size", "64", "--train-batch-size", "4", "--train-steps", "2",
                             "--train-warmup", "1", "--train-runtimes", runtime, "--json", str(out_json),
                             "--plot", str(out_png)], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "batchnorm" in result.stdout and "total" in result.stdout and policy in result.stdout
    profile = json.loads(out_json.read_text())
    assert profile["policy"] == policy and profile["machine"]["cpus"] >= 1
    casts = sum(r["ms_per_step"] for r in profile["rows"] if r["group"] == "cast")
    total = sum(r["ms_per_step"] for r in profile["rows"])
    assert (casts > 0.02 * total) == (runtime == "keras-mixed"), (casts, total)
    phases = {r["phase"] for r in profile["rows"]}
    groups = {r["group"] for r in profile["rows"]}
    assert phases == {"forward", "backward", "optimizer"}
    assert {"conv", "depthwise conv", "batchnorm", "attention", "optimizer"} <= groups
    assert all(r["ms_per_step"] > 0 for r in profile["rows"])
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_profile_takes_only_keras_runtimes(capsys):
    from keras_evit.cli import main

    assert main(["bench", "--train", "--profile", "--train-runtimes", "timm"]) == 2
    assert "--profile takes --train-runtimes keras" in capsys.readouterr().err


def test_compare_file_is_checked(tmp_path):
    good = {"model": "m0", "rows": [{"phase": "forward", "group": "conv", "ms_per_step": 1.5}]}
    (tmp_path / "good.json").write_text(json.dumps(good))
    assert sp.read_profile(str(tmp_path / "good.json"))["rows"][0]["ms_per_step"] == 1.5
    for name, text in [("garbage", "{not json"), ("norows", "{}"), ("badgroup", json.dumps(
            {"rows": [{"phase": "forward", "group": "rm -rf", "ms_per_step": 1}]})), ("neg", json.dumps(
            {"rows": [{"phase": "forward", "group": "conv", "ms_per_step": -1}]}))]:
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match="not a saved step profile"):
            sp.read_profile(str(tmp_path / name))
    with pytest.raises(ValueError, match="not a saved step profile"):
        sp.read_profile(str(tmp_path / "missing.json"))
