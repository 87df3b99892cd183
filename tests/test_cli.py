import os

import numpy as np
import pytest

import keras_evit as ke
from keras_evit.cli import main

from conftest import outputs, raw_images, timm_vs_keras


@pytest.fixture(scope="module")
def m0_weights(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("w") / "m0.weights.h5")
    ke.EfficientViTM0(weights=None).save_weights(path)
    return path


def test_predict(sample_dir, m0_weights, capsys):
    images = [os.path.join(sample_dir, f) for f in ("n01440764_tench.JPEG", "n01530575_brambling.JPEG")]
    assert main(["predict", *images, "--model", "m0", "--weights", m0_weights, "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("  1. ") == 2 and out.count("  3. ") == 2 and "n0" in out


def test_predict_takes_folders(tmp_path, m0_weights, capsys):
    """A folder stands for the images in it, sorted (classified 16 at a time, in order); a folder without any
    is reported and the rest go on."""
    from PIL import Image

    folder, empty = tmp_path / "photos", tmp_path / "empty"
    folder.mkdir()
    empty.mkdir()
    for i in range(17):
        Image.new("RGB", (40, 30), (15 * i, 100, 200)).save(folder / f"{i:02d}.png")
    (folder / "notes.txt").write_text("not an image")
    assert main(["predict", str(folder), str(empty), "--model", "m0", "--weights", m0_weights, "--top", "1"]) == 2
    captured = capsys.readouterr()
    listed = [line for line in captured.out.splitlines() if not line.startswith(" ")]
    assert listed == [str(folder / f"{i:02d}.png") for i in range(17)]
    assert captured.out.count("  1. ") == 17
    assert f"error: folder {empty} holds no image file" in captured.err


def test_predict_unreadable_image(tmp_path, m0_weights, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    assert main(["predict", str(bad), "--model", "m0", "--weights", m0_weights]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_convert_official_checkpoint(ref, tmp_path, capsys):
    import torch

    tm = ref.create_timm_model("m0")
    state = ref.official_state_dict(ref.timm_state_dict(tm))
    ckpt = str(tmp_path / "efficientvit_m0.pth")
    torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}}, ckpt)
    out = str(tmp_path / "m0.weights.h5")
    assert main(["convert", ckpt, "--model", "m0", "--output", out]) == 0
    model = ke.EfficientViTM0(weights=out, classifier_activation=None)
    assert timm_vs_keras(ref, tm, model, raw_images(1, 224)) <= 1e-4
    assert sorted(os.listdir(tmp_path)) == ["efficientvit_m0.pth", "m0.weights.h5"]


def test_convert_bad_checkpoint_leaves_nothing(tmp_path, capsys):
    ckpt = tmp_path / "bad.pth"
    ckpt.write_bytes(b"garbage")
    out = tmp_path / "m0.weights.h5"
    assert main(["convert", str(ckpt), "--model", "m0", "--output", str(out)]) == 2
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["bad.pth"]


def test_unknown_model(capsys, m0_weights):
    assert main(["predict", "x.jpg", "--model", "b1", "--weights", m0_weights]) == 2
    assert "Unknown EfficientViT variant" in capsys.readouterr().err


def test_demo_runs_offline(sample_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_EVIT_HOME", str(tmp_path))
    monkeypatch.setenv("KERAS_EVIT_WEIGHTS_URL", "http://127.0.0.1:9/none")  # closed port: offline
    assert main(["demo", "--model", "m0", "--limit", "4", "--images", sample_dir]) == 0
    out = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in out and "4 images" in out and "top-1" in out


@pytest.mark.slow  # a clone and a fresh process
def test_demo_runs_on_a_plain_clone(tmp_path):
    """The README's first command on a clone with no shared data beside it: the bundled photos."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    clone = tmp_path / "keras-evit"
    subprocess.run(["git", "clone", "-q", "--depth", "1", "file://" + repo, str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_EVIT_SAMPLE_DIR", "KERAS_EVIT_DATA")}
    env.update(KERAS_EVIT_HOME=str(tmp_path / "cache"), KERAS_EVIT_WEIGHTS_URL="http://127.0.0.1:9/none")
    proc = subprocess.run([sys.executable, "-m", "keras_evit.cli", "demo", "--model", "m0"], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert os.path.join(str(clone), "keras_evit", "data", "samples") in proc.stdout
    assert "cat.jpg" in proc.stdout and "4 images" in proc.stdout


@pytest.mark.parametrize("argv,match", [
    (["predict", "x.jpg", "--top", "-3"], "must be >= 1"),
    (["predict", "x.jpg", "--image-size", "100000"], "out of range"),
    (["finetune", "--data", "digits", "--output", "r", "--batch-size", "0"], "must be 1..65536"),
    (["train", "--data", "digits", "--output", "r", "--epochs", "0"], "must be >= 1"),
    (["export", "--image-size", "8", "--output", "x.tflite"], "out of range"),
    (["export", "--format", "onnx", "--batch-size", "1000000000", "--output", "x.onnx"], "must be 0..1024"),
    (["evaluate", "--data", "digits", "--weights", "none", "--batch-size", "1000000000"], "must be 1..65536"),
    (["bench", "--threads", "-1"], "must be 1..1024"),
    (["bench", "--batch-sizes", "1,0"], "must be 1..1024"),
    (["analyze", "heads", "--images", "x", "--overlay-index", "-100"], "must be 0..1000000"),
])
def test_bad_numbers_are_refused_by_the_parser(argv, match, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and match in capsys.readouterr().err


def test_predict_goes_on_after_a_bad_image(sample_dir, tmp_path, m0_weights, capsys):
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)
    good = os.path.join(sample_dir, "n01440764_tench.JPEG")
    assert main(["predict", str(bomb), good, "--model", "m0", "--weights", m0_weights]) == 2
    captured = capsys.readouterr()
    assert "decompression bomb" in captured.err and good in captured.out


def test_outputs_are_checked_before_any_work(tmp_path, capsys):
    (tmp_path / "existing").mkdir()
    assert main(["export", "--weights", "none", "--output", str(tmp_path / "existing"),
                 "--format", "onnx"]) == 2
    assert "should end with .onnx" in capsys.readouterr().err
    folder_named_like_file = tmp_path / "m.onnx"
    folder_named_like_file.mkdir()
    assert main(["export", "--weights", "none", "--format", "onnx", "--output", str(folder_named_like_file)]) == 2
    assert "is an existing folder" in capsys.readouterr().err
    assert main(["convert", "missing.pth", "--output", str(tmp_path / "out.txt")]) == 2
    assert "should end with .weights.h5 or .keras" in capsys.readouterr().err


def test_every_output_is_distinct_and_writable(tmp_path, capsys):
    out = str(tmp_path / "m.tflite")
    assert main(["export", "--weights", "none", "--output", out, "--report", out]) == 2
    assert "--output and --report both name" in capsys.readouterr().err
    ckpt = tmp_path / "m.keras"
    ckpt.write_bytes(b"x")
    assert main(["convert", str(ckpt), "--output", str(ckpt)]) == 2
    assert "is also an input: it would be overwritten" in capsys.readouterr().err
    assert main(["analyze", "heads", "--images", str(tmp_path), "--json", str(tmp_path / "r.json"),
                 "--plot", str(tmp_path / "r.json")]) == 2
    assert "--json and --plot both name" in capsys.readouterr().err
    assert main(["bench", "--json", "/proc/keras_evit.json"]) == 2  # not writable, even as root
    assert "/proc is not writable" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["m.keras"] and ckpt.read_bytes() == b"x"


def test_evaluate_batch_is_bounded_before_any_work(capsys):
    assert main(["evaluate", "--data", "digits", "--weights", "none", "--batch-size", "5000"]) == 2
    assert "over evaluate's 4096" in capsys.readouterr().err


def test_overlay_index_is_checked_before_the_model_loads(sample_dir, capsys):
    assert main(["analyze", "heads", "--images", sample_dir, "--limit", "3", "--overlay", "o.png",
                 "--overlay-index", "5", "--weights", "no-such-file.weights.h5"]) == 2
    assert "--overlay-index 5: " in capsys.readouterr().err


def test_missing_extra_names_what_to_install(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if the mobile extra were not installed
    assert main(["export", "--weights", "none", "--format", "onnx", "--image-size", "64", "--verify-limit", "1",
                 "--output", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'keras-evit[mobile]'" in capsys.readouterr().err


def test_every_subcommand_is_registered():
    from keras_evit.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(commands) == {"predict", "convert", "demo", "info", "export", "setup-mediapipe", "bench", "train",
                             "finetune", "evaluate", "analyze"}


def test_setup_mediapipe_answers_without_tensorflow():
    """The console script on a machine already set up (as `make install-test` runs it each time): a venv
    check, no TensorFlow start-up."""
    import subprocess
    import sys

    from conftest import missing
    from keras_evit.export.metadata import mediapipe_python

    if mediapipe_python() is None:
        missing("MediaPipe's environment is missing: run `keras-evit setup-mediapipe` (make test does)")
    probe = ("import sys; sys.argv = ['keras-evit', 'setup-mediapipe']\n"
             "from keras_evit.cli import main\n"
             "code = main()\n"
             "print('RESULT', code, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert "RESULT 0 False False" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]

def test_info_prints_the_facts_table_row(capsys):
    import json

    from keras_evit.cli import main

    assert main(["info", "--model", "EfficientViTM5"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["architecture"] == "efficientvit_m5" and facts["top1"] == 77.1 and facts["license"] == "MIT"
    assert facts["url"].endswith("/efficientvit_m5.pth") and facts["interpolation"] == "bicubic"


@pytest.mark.slow
def test_convert_renames_a_legacy_keras_file(tmp_path, capsys):
    """Models saved before the rename ("stages.0.blocks.0": Keras on PyTorch refuses dots) convert in one line."""
    import keras

    from keras_evit.weights.artifacts import rename_layers

    model = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3), classes=3, classifier_activation=None)
    legacy = rename_layers(model, "-", ".")  # the names models had before the rename
    assert legacy.get_layer("stages.1.blocks.0") is not None
    old, new = str(tmp_path / "old.keras"), str(tmp_path / "new.keras")
    legacy.save(old)
    assert main(["convert", old, "--output", new]) == 0
    converted = keras.models.load_model(new)
    assert not [layer.name for layer in converted.layers if "." in layer.name]
    x = raw_images(2, 64)
    np.testing.assert_allclose(outputs(converted, x), outputs(model, x), atol=1e-5)
    assert ke.feature_extractor(converted).output[0].shape[1:] == (4, 4, 64)
