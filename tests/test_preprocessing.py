import csv
import os

import numpy as np
import pytest

import keras_evit as ke
from keras_evit.preprocessing import imagenet_classes

from conftest import HYMENOPTERA


def test_preprocess_input_values():
    x = np.array([[[[0, 128, 255]]]], np.uint8)
    y = ke.preprocess_input(x)
    expected = (np.array([0, 128, 255]) / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(y[0, 0, 0], expected, rtol=1e-6)
    assert y.dtype == np.float32
    np.testing.assert_allclose(ke.preprocess_input(x.astype("float32")), y)
    with pytest.raises(ValueError, match="3 channels last"):
        ke.preprocess_input(np.zeros((1, 3, 4, 4)))


def test_classes_match_sample_labels(sample_dir):
    with open(os.path.join(sample_dir, "labels.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [(r["synset"], r["name"]) for r in rows] == imagenet_classes()


def test_decode_predictions_order():
    preds = np.zeros((2, 1000), np.float32)
    preds[0, [1, 999, 3]] = [0.5, 0.3, 0.2]
    preds[1, 0] = 1.0
    decoded = ke.decode_predictions(preds, top=3)
    assert [d[1] for d in decoded[0]] == ["goldfish", "toilet_tissue", "tiger_shark"]
    assert decoded[1][0] == ("n01440764", "tench", 1.0)
    with pytest.raises(ValueError, match=r"\(batch, 1000\)"):
        ke.decode_predictions(np.zeros((1, 10)))


def test_eval_transform(sample_dir):
    from PIL import Image

    path = os.path.join(sample_dir, "n01440764_tench.JPEG")
    image = ke.load_image(path)
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8
    with Image.open(path) as src:
        w, h = src.size
        short = min(w, h)
        resized = src.convert("RGB").resize((256 * w // short, 256 * h // short), Image.BICUBIC)
    left, top = round((resized.width - 224) / 2), round((resized.height - 224) / 2)
    expected = np.asarray(resized)[top:top + 224, left:left + 224]
    np.testing.assert_array_equal(image, expected)


def test_greyscale_and_gif_become_rgb(tmp_path):
    from PIL import Image

    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((300, 200), 90, np.uint8)).save(grey)
    assert ke.load_image(str(grey)).shape == (224, 224, 3)
    gif = os.path.join(HYMENOPTERA, "train", "ants", "imageNotFound.gif")
    if os.path.exists(gif):
        assert ke.load_image(gif, 96).shape == (96, 96, 3)


def test_unreadable_image_names_path(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ValueError, match="cannot read image .*broken.jpg"):
        ke.load_image(str(bad))
    with pytest.raises(FileNotFoundError, match="image not found"):
        ke.load_image(str(tmp_path / "missing.jpg"))
