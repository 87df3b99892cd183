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
