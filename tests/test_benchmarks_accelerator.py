"""The accelerator protocol (Keras on JAX beside timm with autocast), run as on a machine without TensorFlow."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import require, run_python
from keras_evit.benchmarks import accelerator

# a sitecustomize that makes TensorFlow (and what needs it) missing, as on the accelerator machine: importing
# it fails as a module that is not installed does
NO_TENSORFLOW = textwrap.dedent("""
    import importlib.abc, importlib.machinery, sys

    class _Missing(importlib.abc.Loader):
        def create_module(self, spec):
            raise ModuleNotFoundError(f"No module named {spec.name!r}", name=spec.name)

        def exec_module(self, module):
            pass

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("tensorflow", "tf_keras", "keras_hub", "tensorflow_text"):
                return importlib.machinery.ModuleSpec(name, _Missing(), origin=None)
            return None

    sys.meta_path.insert(0, _Finder())
""")


def test_ratios_are_taken_per_model_and_task(monkeypatch):
    rates = {("m0", "inference", "keras-jax"): 3000.0, ("m0", "inference", "timm"): 2000.0,
             ("m0", "training", "timm"): 500.0}

    def fake_child(spec, timeout):
        key = (spec["variant"], spec["task"], spec["framework"])
        if key not in rates:
            return {**spec, "error": "out of memory"}
        return {**spec, "images_per_s": rates[key], "ms_per_batch": 1e3 * spec["batch_size"] / rates[key],
                "peak_device_mb": None, "device": "cpu: cpu"}

    monkeypatch.setattr(accelerator, "_child", fake_child)
    rows = accelerator.run(["m0"], ["inference", "training"], ["keras-jax", "timm"],
                           {"inference": 1024, "training": 256}, 224, "bfloat16", 1.0, 1, 60, log=lambda m: None)
    assert [(r["task"], r["framework"], r["batch_size"]) for r in rows] == [
        ("inference", "keras-jax", 1024), ("inference", "timm", 1024),
        ("training", "keras-jax", 256), ("training", "timm", 256)]
    assert [r.get("vs_timm") for r in rows] == [1.5, 1.0, None, 1.0]
    table = accelerator.format_table(rows)
    assert "error: out of memory" in table and "1.50" in table


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "inference,serving"], "unknown ['serving']"),
    (["--frameworks", "keras-tf"], "unknown ['keras-tf']"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
])
def test_bad_flags_are_refused_before_anything_runs(argv, message, capsys):
    with pytest.raises(SystemExit):
        accelerator.parse_args(argv)
    assert message in capsys.readouterr().err


def _no_tensorflow_env(tmp_path):
    """Environment of a fresh process on JAX that cannot import TensorFlow, checked to be so."""
    require("jax")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_TENSORFLOW)
    # XLA's CPU back end unoptimized: a check of the script compiles faster, and its speed does not matter
    env = dict(os.environ, KERAS_BACKEND="jax", XLA_FLAGS="--xla_backend_optimization_level=0",
               PYTHONPATH=os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]))
    blocked = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True)
    assert blocked.returncode != 0 and "No module named 'tensorflow'" in blocked.stderr
    return env


@pytest.mark.parametrize("task", ["inference", pytest.param("training", marks=pytest.mark.slow)])
def test_runs_without_tensorflow_end_to_end(task, tmp_path, ref):
    """Both frameworks, in fresh processes that cannot import TensorFlow (the accelerator machine has none), on
    the CPU at a tiny size, in float16 (Keras adds loss scaling to training, timm a GradScaler): a check of
    the script, not of speed. (Training is slow here: XLA compiles the whole training step for the CPU.)"""
    env = _no_tensorflow_env(tmp_path)
    out_json, out_png = tmp_path / "a.json", tmp_path / "a.png"
    stdout = run_python(["-m", "keras_evit.benchmarks.accelerator", "--model", "m0", "--tasks", task,
                         "--image-size", "64", "--batch-size", "2", "--train-batch-size", "2", "--min-time", "0",
                         "--warmup", "1", "--dtype", "float16", "--json", str(out_json), "--plot", str(out_png)],
                        env=env)
    rows = json.loads(out_json.read_text())["rows"]
    assert [(r["task"], r["framework"]) for r in rows] == [(task, "keras-jax"), (task, "timm")]
    assert all("error" not in r and r["images_per_s"] > 0 and r["device"].startswith("cpu") for r in rows), rows
    assert rows[0]["policy"] == "mixed_float16" and rows[1]["autocast"] == "float16"
    assert rows[1]["vs_timm"] == 1.0 and rows[0]["vs_timm"] > 0
    assert "x timm" in stdout and out_png.stat().st_size > 5_000
