import json
import os

import pytest

from keras_evit.cli import main


@pytest.mark.slow  # builds and times 13 runtimes, then the memory of six of them on the same files: about 2 minutes
def test_bench_speed_then_memory_on_the_same_files(tmp_path, capsys, ref):
    """Speed of every shipped file beside its twin and the reference; then `--memory --reuse` on the files that
    run left in --workdir (a re-measure on a quiet machine exports nothing again)."""
    work = str(tmp_path / "work")
    out_json, out_png = str(tmp_path / "b.json"), str(tmp_path / "b.png")
    code = main(["bench", "--model", "m0", "--runtimes", "litert,onnxruntime,torch", "--twins", "--threads", "1",
                 "--batch-sizes", "1", "--image-size", "64", "--min-time", "0.05",
                 "--workdir", work, "--json", out_json, "--plot", out_png])
    assert code == 0
    table = capsys.readouterr().out
    assert "torch-onnx" in table and "x ref" in table and "litert-int8" in table
    rows = json.load(open(out_json))["rows"]
    runtimes = {r["runtime"] for r in rows}
    shipped = {"litert", "litert-fp16", "litert-int8", "litert-int8-io", "litert-int8-mixed"}
    twins = {r + "@normalized" for r in (shipped | {"onnxruntime"}) - {"litert-int8-io"}}
    assert shipped | {"onnxruntime", "torch", "torch-onnx"} | twins \
        == runtimes
    assert all("error" not in r and r["img_per_s"] > 0 for r in rows)
    # each shipped file (raw RGB in) is timed beside its normalized-input twin in the same run
    assert all(r["vs_normalized_twin"] > 0 for r in rows
               if r["runtime"] in (shipped | {"onnxruntime"}) - {"litert-int8-io"})
    assert "normalized-input twin" in table
    assert all(r["vs_reference"] > 0 for r in rows)  # every runtime got its ratio to the same-batch reference
    assert os.path.getsize(out_png) > 10_000

    files = {f: os.path.getmtime(os.path.join(work, f)) for f in os.listdir(work)}
    out_json, out_png = str(tmp_path / "m.json"), str(tmp_path / "m.png")
    assert main(["bench", "--memory", "--twins", "--model", "m0", "--runtimes", "litert-int8-mixed,onnxruntime,torch",
                 "--threads", "1", "--batch-sizes", "1", "--image-size", "64", "--workdir", work, "--reuse",
                 "--json", out_json, "--plot", out_png]) == 0
    captured = capsys.readouterr()
    assert "export" not in captured.err, captured.err  # every file it measures was there
    assert {f: os.path.getmtime(os.path.join(work, f)) for f in os.listdir(work)} == files
    rows = json.load(open(out_json))["rows"]
    assert {r["runtime"] for r in rows} == {"litert-int8-mixed", "onnxruntime", "torch", "torch-onnx",
                                            "litert-int8-mixed@normalized", "onnxruntime@normalized"}
    # each child measured its own peak: the model, arena and activations on top of its imports
    assert all("error" not in r and 0 < r["model_mb"] < r["peak_rss_mb"] for r in rows), rows
    assert all(r["vs_reference"] > 0 for r in rows)
    assert [r["vs_reference"] for r in rows if r["runtime"] == "torch-onnx"] == [1.0]
    assert "over imports MB" in captured.out and os.path.getsize(out_png) > 10_000


def test_bench_unknown_runtime(capsys):
    assert main(["bench", "--runtimes", "tensorrt"]) == 2
    assert "unknown runtime" in capsys.readouterr().err


@pytest.mark.slow  # two processes starting TensorFlow: ~10 s
def test_bench_says_which_int8_kernels_run_and_no_amx_denies_them():
    """Every bench names the int8 kernels XNNPACK takes on this CPU; --no-amx (its own process: the denial
    cannot be undone) takes AMX away where the CPU has it."""
    import subprocess
    import sys

    from keras_evit.benchmarks.cpu import cpu_facts

    kernels = cpu_facts()["int8_kernels"]
    for flags, expected in (([], kernels), (["--no-amx"], kernels.replace("AMX tiles", "AVX-512 VNNI (AMX denied)"))):
        proc = subprocess.run([sys.executable, "-m", "keras_evit.cli", "bench", *flags, "--runtimes", "tensorrt"],
                              capture_output=True, text=True)
        assert proc.returncode == 2 and f"XNNPACK's int8 kernels here are {expected}\n" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_bench_large_batch_mixed_precision(tmp_path, capsys):
    """The GPU protocol path (forced on CPU with --large-batch): TF and XLA under a mixed policy."""
    out_json = str(tmp_path / "b.json")
    assert main(["bench", "--model", "m0", "--runtimes", "keras", "--threads", "1", "--batch-sizes", "1",
                 "--image-size", "64", "--min-time", "0.05", "--large-batch", "4", "--json", out_json]) == 0
    rows = json.load(open(out_json))["rows"]
    amp = {r["runtime"]: r for r in rows if r["batch_size"] == 4}
    assert set(amp) == {"keras-amp", "xla-amp"}
    assert all(r["policy"].startswith("mixed_") and r["img_per_s"] > 0 for r in amp.values())
    assert "xla-amp" in capsys.readouterr().out
    import keras

    assert keras.mixed_precision.global_policy().name == "float32"  # policy restored


@pytest.mark.slow  # compiles a Keras training step and a timm one: about a minute
def test_train_bench_end_to_end_tiny(tmp_path, capsys, ref):
    out_json, out_png = str(tmp_path / "t.json"), str(tmp_path / "t.png")
    assert main(["bench", "--train", "--model", "m0", "--train-runtimes", "keras,keras-mixed,keras-torch,timm",
                 "--image-size", "64", "--train-batch-size", "4", "--train-steps", "2", "--train-warmup", "1",
                 "--train-repeats", "2", "--json", out_json, "--plot", out_png]) == 0
    rows = json.load(open(out_json))["rows"]
    assert [r["runtime"] for r in rows] == ["keras", "keras-mixed", "keras-torch", "timm"]
    assert all(r["img_per_s"] > 0 and len(r["repeats"]) == 2 and r["vs_timm"] > 0 for r in rows)
    # keras-mixed trained under `train --mixed-precision`'s policy (no GPU here: bfloat16), the others in float32;
    # keras-torch ran Keras' fit on the PyTorch backend
    assert [r["policy"] for r in rows] == ["float32", "mixed_bfloat16", "float32", "float32"]
    assert [r["backend"] for r in rows] == ["tensorflow", "tensorflow", "torch", "pytorch (timm)"]
    assert "x timm" in capsys.readouterr().out and os.path.getsize(out_png) > 5_000


def test_train_memory_bench_refuses_keras_mixed(capsys):
    """--memory compares equal precision with timm's float32: the mixed-precision runtime is refused there."""
    assert main(["bench", "--train", "--memory", "--train-runtimes", "keras-mixed"]) == 2
    assert "unknown training runtime" in capsys.readouterr().err


def test_train_bench_unknown_runtime(capsys):
    assert main(["bench", "--train", "--train-runtimes", "keras,tensorrt"]) == 2
    assert "unknown training runtime" in capsys.readouterr().err


@pytest.mark.slow
def test_input_pipeline_bench_end_to_end_tiny(tmp_path, capsys):
    """Both pipelines in their own processes on real JPEGs; the table, JSON and PNG it promises."""
    from conftest import HYMENOPTERA, missing

    if not os.path.isdir(HYMENOPTERA):
        missing(f"the shared hymenoptera images are not at {HYMENOPTERA}")
    out = tmp_path / "input.json"
    assert main(["bench", "--input-pipeline", "--input-folder", HYMENOPTERA, "--threads", "1", "--min-time", "0.5",
                 "--train-batch-size", "8", "--image-size", "64", "--json", str(out),
                 "--plot", str(tmp_path / "input.png")]) == 0
    text = capsys.readouterr().out
    assert "limit: decode + resize" in text and "cores of this machine feed one GPU" in text
    rows = json.loads(out.read_text())["rows"]
    assert {r["pipeline"] for r in rows} == {"training input", "limit: decode + resize"}
    assert all(r["images_per_s"] > 0 for r in rows) and (tmp_path / "input.png").stat().st_size > 1000
