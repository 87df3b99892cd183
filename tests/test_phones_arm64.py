"""keras_evit.export.phones.arm64: our default export files on LiteRT's aarch64 build under qemu."""

import json
import os
import shutil

import numpy as np
import pytest

from keras_evit.export.phones import arm64
from tests.conftest import missing, run_python


def test_compare_rows_flags_an_fp32_file_off_by_more_than_the_tolerance():
    keras_out = np.array([[0.1, 0.9], [0.8, 0.2]], np.float32)
    good = keras_out + 1e-6
    bad = keras_out + np.array([[0.0, 0.0], [0.0, 0.7]], np.float32)  # second image's top-1 flips
    rows = arm64.compare_rows(keras_out, {"litert": good, "litert-int8": good},
                              {"litert": bad, "litert-int8": good}, "cortex-a53")
    fp32, int8 = rows
    assert fp32["fp32_within_tolerance"] is False and "fp32_within_tolerance" not in int8
    assert fp32["top1_vs_keras"] == 0.5 and fp32["top1_vs_x86"] == 0.5 and fp32["x86_top1_vs_keras"] == 1.0
    assert fp32["max_abs_vs_x86"] == pytest.approx(0.7, abs=1e-5)
    assert int8["bitwise_equal_to_x86"] and int8["top1_vs_keras"] == 1.0 and int8["cpu"] == "cortex-a53"


@pytest.mark.parametrize("cpu", sorted(arm64.CPUS))
def test_the_root_describes_the_emulated_core(tmp_path, cpu):
    """cpuinfo (asked by XNNPACK) reads the root's files: the part number picks core-tuned kernels."""
    arm64._describe_cpu(str(tmp_path), cpu)
    text = (tmp_path / "proc" / "cpuinfo").read_text()
    assert f"CPU part\t: {arm64.CPUS[cpu][1]:#05x}" in text and "CPU implementer\t: 0x41" in text
    assert (tmp_path / "sys" / "devices" / "system" / "cpu" / "possible").read_text() == "0\n"


def test_setup_leaves_a_foreign_folder_alone(tmp_path):
    folder = tmp_path / "root"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep")
    with pytest.raises(RuntimeError, match="not a finished arm64 root"):
        arm64.setup(str(folder), log=lambda m: None)
    assert (folder / "mine.txt").read_text() == "keep" and sorted(os.listdir(tmp_path)) == ["root"]


def test_setup_names_a_missing_tool_and_its_package(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install qemu-user-static"):
        arm64.setup(str(tmp_path / "root"), log=lambda m: None)
    assert not os.listdir(tmp_path)


def test_compare_without_a_root_says_how_to_make_one(tmp_path):
    with pytest.raises(RuntimeError, match="phones.arm64 setup"):
        arm64.main(["compare", "--root", str(tmp_path / "none"), "--weights", "none", "--images", str(tmp_path)])


def _ready_root():
    root = arm64.default_root()
    if arm64.root_ready(root) is None:
        missing(f"no arm64 root at {root}: make install-arm64 (qemu-user-static, debootstrap, then "
                "python -m keras_evit.export.phones.arm64 setup)")
    if shutil.which(arm64.QEMU) is None:
        missing("qemu-user-static is not installed (make install-arm64)")
    return root


@pytest.mark.slow
def test_default_files_agree_on_arm_kernels(tmp_path, sample_dir):
    """The files `keras-evit export` writes, on aarch64 LiteRT as a Cortex-A53 and a Cortex-A76, in a fresh
    process: fp32 within 1e-4 of x86 LiteRT and Keras (logits of random weights: not flattened by softmax)."""
    _ready_root()
    images = sample_dir
    out = tmp_path / "arm64.json"
    stdout = run_python(["-m", "keras_evit.export.phones.arm64", "compare", "--weights", "none", "--model", "m0",
                         "--image-size", "96", "--images", images, "--limit", "6", "--calibration-limit", "8",
                         "--logits", "--files", "litert,litert-int8-mixed,litert-int8-io",
                         "--cpus", "cortex-a53,cortex-a76", "--json", str(out), "--plot", str(tmp_path / "a.png")],
                        timeout=1200)
    report = json.loads(out.read_text())
    assert report["arm64"]["machine"] == "aarch64" and report["x86"]["machine"] == "x86_64", report
    rows = {(r["cpu"], r["file"]): r for r in report["rows"]}
    assert len(rows) == 6 and (tmp_path / "a.png").stat().st_size > 0
    for cpu in ("cortex-a53", "cortex-a76"):
        fp32 = rows[(cpu, "litert")]
        assert fp32["max_abs_vs_x86"] <= 1e-4 and fp32["max_abs_vs_keras"] <= 1e-4, fp32
        assert fp32["top1_vs_keras"] == 1.0 and fp32["fp32_within_tolerance"]
        for name in ("litert-int8-mixed", "litert-int8-io"):  # int8 outputs differ by rounding, not by kind
            assert np.isfinite(rows[(cpu, name)]["max_abs_vs_keras"])
    assert "fp32 within 0.0001 of x86 and Keras: yes" in stdout
