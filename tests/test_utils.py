"""atomic_output: outputs appear whole or not at all, for files and folders."""

import os

import pytest

from keras_evit.utils import atomic_output


def test_file_replaced_only_on_success(tmp_path):
    path = tmp_path / "m.tflite"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(str(path)) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["m.tflite"]
    with atomic_output(str(path)) as tmp:
        assert tmp.endswith(".tflite")
        open(tmp, "w").write("new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["m.tflite"]


def test_directory_output(tmp_path):
    path = tmp_path / "m.mlpackage"
    (path / "old").mkdir(parents=True)
    with pytest.raises(RuntimeError):
        with atomic_output(str(path), directory=True) as tmp:
            os.makedirs(os.path.join(tmp, "half"))
            raise RuntimeError("killed")
    assert os.listdir(path) == ["old"] and os.listdir(tmp_path) == ["m.mlpackage"]
    with atomic_output(str(path), directory=True) as tmp:
        assert tmp.endswith(".mlpackage") and not os.path.exists(tmp)
        os.makedirs(os.path.join(tmp, "Data"))
    assert os.listdir(path) == ["Data"] and os.listdir(tmp_path) == ["m.mlpackage"]


@pytest.fixture
def full_disk(tmp_path):
    """A 2 MB tmpfs: a real ENOSPC (needs root and mount; skipped elsewhere)."""
    import subprocess

    mount = tmp_path / "full"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.parametrize("argv", [["convert", "none", "--model", "m0"],
                                  pytest.param(["export", "--weights", "none", "--format", "onnx", "--image-size", "64",
                                                "--verify-limit", "2", "--no-metadata"], marks=pytest.mark.slow)])
def test_full_disk_is_a_clear_error_not_a_crash(full_disk, argv):
    import subprocess
    import sys

    suffix = ".weights.h5" if argv[0] == "convert" else ".onnx"
    out = str(full_disk / f"m0{suffix}")
    result = subprocess.run([sys.executable, "-m", "keras_evit.cli", *argv, "--output", out], capture_output=True,
                            text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 2, result.stderr[-2000:]  # not 139 (the h5py segfault)
    assert "no space left on the device" in result.stderr
    assert os.listdir(full_disk) == []  # no partial file left behind
