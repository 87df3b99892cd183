import os

import numpy as np
import pytest

import keras_evit as ke
from keras_evit.cli import main


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
    x = np.random.RandomState(0).randn(1, 224, 224, 3).astype("float32")
    assert np.abs(ref.timm_logits(tm, x) - model.predict(x, verbose=0)).max() <= 1e-4
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
    assert "RANDOM weights" in out and "4 images" in out and "top-1" in out
