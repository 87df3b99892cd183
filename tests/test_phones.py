"""export/phones/android_benchmark.sh against a fake adb (records calls, answers like a phone)."""

import os
import stat
import subprocess

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "export", "phones", "android_benchmark.sh")

FAKE_ADB = """#!/usr/bin/env bash
echo "$*" >> "$ADB_LOG"
case "$1" in
  devices) printf 'List of devices attached\\n'; [ -n "$ADB_DEVICE" ] && printf 'R58M123\\tdevice\\n'; exit 0 ;;
  push) exit 0 ;;
  pull) echo "profile" > "$3"; exit 0 ;;
  shell)
    case "$2" in
      getprop) echo "Pixel-Fake" ;;
      */benchmark_model) echo "INFO: Inference timings in us: Init: 5000, First inference: 9000, Warmup (avg): 2100, Inference (avg): 2000" ;;
    esac ;;
esac
"""


def _setup(tmp_path, device=True):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(FAKE_ADB)
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "m0.tflite").write_bytes(b"TFL3")
    (tmp_path / "benchmark_model").write_bytes(b"\x7fELF")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", ADB_LOG=str(tmp_path / "adb.log"),
               ADB_DEVICE="1" if device else "")
    return env


def _run(tmp_path, env, *args):
    return subprocess.run(["bash", SCRIPT, *args], cwd=tmp_path, env=env, capture_output=True, text=True)


def test_android_script_runs_every_backend(tmp_path):
    env = _setup(tmp_path)
    proc = _run(tmp_path, env, "m0.tflite", "./benchmark_model")
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "adb.log").read_text().splitlines()
    runs = [c for c in calls if "benchmark_model --graph=/data/local/tmp/m0.tflite" in c]
    flags = ["--num_threads=1 --use_xnnpack=true", "--num_threads=4 --use_xnnpack=true",
             "--use_xnnpack=false", "--use_gpu=true", "--use_nnapi=true",
             "--enable_op_profiling=true --op_profiling_output_mode=proto"]
    assert len(runs) == 6 and all(any(f in r for r in runs) for f in flags)
    assert "pull /data/local/tmp/op_profile.pb m0.android.t1.profile.pb" in calls
    assert (tmp_path / "m0.android.t1.profile.pb").exists()
    assert "push m0.tflite /data/local/tmp/m0.tflite" in calls
    report = (tmp_path / "m0.android.txt").read_text()
    assert report.count("Inference (avg): 2000") == 5 and "Pixel-Fake" in report
    assert "op profile: m0.android.t1.profile.pb" in report


@pytest.mark.parametrize("device,args,match", [
    (False, ["m0.tflite", "./benchmark_model"], "no Android device attached"),
    (True, ["missing.tflite", "./benchmark_model"], "model file not found"),
    (True, ["m0.tflite", "./nope"], "benchmark_model binary not found"),
])
def test_android_script_errors(tmp_path, device, args, match):
    proc = _run(tmp_path, _setup(tmp_path, device), *args)
    assert proc.returncode == 2 and match in proc.stderr
    assert not (tmp_path / "m0.android.txt").exists()
