"""keras-evit bench --train --memory: training peak memory of Keras fit beside timm eager, each in its own process."""

import json
import os

import pytest

from keras_evit.cli import main
from keras_evit.benchmarks import training_memory


def test_ratios_are_taken_per_model_and_batch(monkeypatch):
    measured = {("m0", "keras", 8): 300.0, ("m0", "timm", 8): 200.0, ("m0", "keras", 16): 500.0,
                ("m0", "timm", 16): 250.0}

    def fake_child(spec):
        key = (spec["variant"], spec["runtime"], spec["batch_size"])
        if spec["runtime"] == "keras-xla":
            return {"model": key[0], "runtime": key[1], "batch_size": key[2], "error": "out of memory"}
        return {"model": key[0], "runtime": key[1], "batch_size": key[2], "train_mb": measured[key],
                "peak_rss_mb": measured[key] + 900, "allocator_peak_mb": None}

    monkeypatch.setattr(training_memory, "_child", fake_child)
    rows = training_memory.run(["m0"], ["keras", "keras-xla", "timm"], [8, 16], 64, 1, 1, log=lambda m: None)
    ratios = {(r["runtime"], r["batch_size"]): r.get("vs_timm") for r in rows}
    assert ratios == {("keras", 8): 1.5, ("keras-xla", 8): None, ("timm", 8): 1.0,
                      ("keras", 16): 2.0, ("keras-xla", 16): None, ("timm", 16): 1.0}
    table = training_memory.format_table(rows)
    assert "error: out of memory" in table and "2.00" in table


def test_unknown_runtime_is_refused_before_anything_runs(capsys):
    assert main(["bench", "--train", "--memory", "--train-runtimes", "keras,tensorrt"]) == 2
    assert "unknown training runtime" in capsys.readouterr().err


@pytest.mark.slow  # a Keras training step and a timm one, each in a fresh process
def test_train_memory_bench_end_to_end_tiny(tmp_path, capsys, ref):
    out_json, out_png = str(tmp_path / "m.json"), str(tmp_path / "m.png")
    assert main(["bench", "--train", "--memory", "--model", "m0", "--train-runtimes", "keras,keras-torch,timm",
                 "--batch-sizes", "2", "--image-size", "64", "--train-steps", "1", "--json", out_json,
                 "--plot", out_png]) == 0
    rows = json.load(open(out_json))["rows"]
    assert [r["runtime"] for r in rows] == ["keras", "keras-torch", "timm"]
    assert all("error" not in r and 0 < r["train_mb"] < r["peak_rss_mb"] for r in rows), rows
    keras_row, torch_row, timm_row = rows
    assert keras_row["allocator_peak_mb"] > 0
    assert torch_row["allocator_peak_mb"] is None and timm_row["allocator_peak_mb"] is None  # PyTorch keeps none
    assert timm_row["vs_timm"] == 1.0 and keras_row["vs_timm"] > 0 and torch_row["vs_timm"] > 0
    # both count the activations their backward pass reads: at least the 64 px input batch itself
    assert all(r["kept_for_backward_mb"] > 2 * 64 * 64 * 3 * 4 / 2**20 for r in rows)
    assert "over imports MB" in capsys.readouterr().out and os.path.getsize(out_png) > 5_000
