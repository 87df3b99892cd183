"""The training transforms: timm's (the reference's) RandAugment, crop, erasing and Mixup/CutMix, draw for draw."""

import math

import numpy as np
import pytest

from conftest import require

tf = require("tensorflow")

MAGNITUDES = (0.0, 3.3, 9.0, 10.0)


class _Sign:
    """A stand-in for a numpy Generator whose ``random()`` always returns ``value`` (fixes an op's sign)."""

    def __init__(self, value):
        self.value = value

    def random(self):
        return self.value


def _photo(seed=0, size=(72, 56)):
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size[1], :size[0]]
    image = np.stack([x * 255 // size[0], y * 255 // size[1], (x + y) % 256], -1) + rng.integers(0, 40, (*y.shape, 3))
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def test_rand_augment_is_timms_rand_m9_mstd05_inc1():
    """Same op list, magnitude, jitter, probability and layers as the transform timm builds for the paper."""
    from keras_evit.reference import import_timm
    from keras_evit.training.rand_augment import IMAGENET_FILL, RandAugment

    import_timm()
    from PIL import Image
    from timm.data.auto_augment import rand_augment_transform

    theirs = rand_augment_transform("rand-m9-mstd0.5-inc1", {"translate_const": 100, "img_mean": IMAGENET_FILL,
                                                             "interpolation": Image.BICUBIC})
    ours = RandAugment()
    assert [op.name for op in theirs.ops] == ours.names
    assert {(op.prob, op.magnitude, op.magnitude_std) for op in theirs.ops} == {(0.5, 9, 0.5)}
    assert theirs.num_layers == ours.num_ops == 2
    assert {(tuple(op.kwargs["fillcolor"]), op.kwargs["resample"]) for op in theirs.ops} == {(IMAGENET_FILL,
                                                                                             Image.BICUBIC)}


@pytest.mark.parametrize("sign", [0.25, 0.75])
def test_each_rand_augment_op_gives_timms_pixels(monkeypatch, sign):
    """Every op at magnitudes 0..10, both signs: the very pixels timm's op produces."""
    import random

    from keras_evit.reference import import_timm
    from keras_evit.training.rand_augment import IMAGENET_FILL, RandAugment

    import_timm()
    from PIL import Image
    from timm.data import auto_augment as timm_aa

    monkeypatch.setattr(random, "random", lambda: sign)  # timm's sign draw
    ours, image = RandAugment(), _photo()
    hparams = {"translate_const": 100, "img_mean": IMAGENET_FILL, "interpolation": Image.BICUBIC}
    checked = 0
    for name in ours.names:
        for magnitude in MAGNITUDES:
            op = timm_aa.AugmentOp(name, prob=1.0, magnitude=magnitude, hparams=hparams)
            try:
                expected = np.asarray(op(image))
            except ValueError:  # Pillow >= 11 refuses posterize(0 bits); the reference's Pillow gave black
                assert name == "PosterizeIncreasing" and magnitude == 10.0
                expected = np.zeros_like(np.asarray(image))
            got = np.asarray(ours.apply(name, image, magnitude, _Sign(sign)))
            np.testing.assert_array_equal(got, expected, err_msg=f"{name} at magnitude {magnitude}")
            checked += 1
    assert checked == 15 * len(MAGNITUDES)


def test_rand_augment_applies_one_op_per_image_on_average():
    """2 ops drawn uniformly from 15, each applied with probability 0.5, magnitude N(9, 0.5) clipped to 10."""
    from keras_evit.training.rand_augment import RandAugment

    calls = []

    class Recording(RandAugment):
        def apply(self, name, img, magnitude, rng):
            calls.append((name, magnitude))
            return img

    augment, rng, images = Recording(), np.random.default_rng(0), 3000
    for _ in range(images):
        augment(None, rng)
    assert abs(len(calls) / images - 1.0) < 0.05  # binomial(6000, 0.5) / 3000: sd 0.013
    assert {name for name, _ in calls} == set(augment.names)
    magnitudes = np.array([m for _, m in calls])
    assert magnitudes.max() <= 10.0 and abs(magnitudes.mean() - 9.0) < 0.05 and 0.4 < magnitudes.std() < 0.55


def test_random_resized_crop_boxes(monkeypatch):
    """Boxes of 8-100% of the area at aspect 3/4..4/3 inside the image; the central fallback for a strip."""
    from PIL import Image

    from keras_evit.training.augment import random_resized_crop

    boxes, crop = [], Image.Image.crop
    monkeypatch.setattr(Image.Image, "crop", lambda self, box: boxes.append(box) or crop(self, box))
    image, rng = _photo(size=(300, 200)), np.random.default_rng(0)
    for _ in range(300):
        out = random_resized_crop(image, 64, (0.08, 1.0), (3 / 4, 4 / 3), rng)
        assert out.size == (64, 64)
    areas, aspects = [], []
    for left, top, right, bottom in boxes:
        assert 0 <= left < right <= 300 and 0 <= top < bottom <= 200
        areas.append((right - left) * (bottom - top) / (300 * 200))
        aspects.append((right - left) / (bottom - top))
    assert 0.07 < min(areas) and max(areas) <= 1.0 and max(areas) > 0.6
    assert 0.72 < min(aspects) and max(aspects) < 1.39
    boxes.clear()
    random_resized_crop(_photo(size=(400, 12)), 32, (0.08, 1.0), (3 / 4, 4 / 3), rng)
    assert boxes == [((400 - 16) // 2, 0, (400 - 16) // 2 + 16, 12)]  # 12 px high at aspect 4/3, centred


def test_random_erasing_as_timms_pixel_mode():
    """A quarter of the images get one box of 2-33% of the area, filled with noise that the model's own
    normalization turns into N(0, 1), as timm's erasing of normalized images does."""
    from keras_evit.preprocessing import IMAGENET_MEAN, IMAGENET_STD
    from keras_evit.training.augment import random_erase

    rng, erased, values = np.random.default_rng(0), 0, []
    for _ in range(800):
        image = np.full((40, 48, 3), 300.0, np.float32)  # out of 0..255: the untouched pixels stand out
        random_erase(image, 0.25, rng)
        mask = image[..., 0] != 300.0
        if mask.any():
            erased += 1
            rows, cols = np.nonzero(mask)
            box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
            assert box == mask.sum() and 0.015 <= box / mask.size <= 0.34
            values.append((image[mask] / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD))
    assert 0.25 * 800 - 50 <= erased <= 0.25 * 800 + 50, erased  # binomial sd ~12
    values = np.concatenate(values)
    assert abs(values.mean()) < 0.02 and abs(values.std() - 1.0) < 0.02


def test_train_transform_is_a_function_of_the_key(tmp_path):
    """The same key gives the same image (a resumed run repeats its augmentation); paths and arrays both work."""
    from PIL import Image

    from keras_evit.training.augment import train_transform
    from keras_evit.training.recipe import get_recipe

    path = str(tmp_path / "photo.png")
    _photo(size=(90, 70)).save(path)
    fn = tf.function(train_transform(get_recipe("imagenet", image_size=64)))
    key = tf.constant([0, 3, 5], tf.int64)
    first = fn(tf.constant(path), key)
    assert first.shape == (64, 64, 3) and first.dtype == tf.float32
    np.testing.assert_array_equal(first, fn(tf.constant(path), key))
    np.testing.assert_array_equal(first, fn(tf.constant(np.asarray(Image.open(path))), key))
    others = [fn(tf.constant(path), tf.constant([0, 3, i], tf.int64)) for i in range(6, 12)]
    assert all(not np.array_equal(first, other) for other in others)


def test_an_image_array_that_is_not_rgb_is_a_clear_error():
    from keras_evit.training.augment import train_image
    from keras_evit.training.recipe import get_recipe

    recipe, rng = get_recipe("imagenet", image_size=64), np.random.default_rng(0)
    assert train_image(np.zeros((20, 30), np.uint8), recipe, None, rng).shape == (64, 64, 3)  # grey: RGB
    for shape in [(20, 30, 4), (20, 30, 3, 2), (30,)]:
        with pytest.raises(ValueError, match=r"must be \(H, W\), \(H, W, 1\) or \(H, W, 3\).*convert"):
            train_image(np.zeros(shape, np.uint8), recipe, None, rng)
    with pytest.raises(ValueError, match="training image is 30x0 pixels: empty"):
        train_image(np.zeros((0, 30, 3), np.uint8), recipe, None, rng)


def _mixed(recipe, key):
    """4 constant images (values 0, 100, 200, 50), classes 0..3, mixed with ``key``."""
    from keras_evit.training.augment import mix_batch

    values = np.array([0.0, 100.0, 200.0, 50.0], np.float32)
    images = tf.constant(np.broadcast_to(values[:, None, None, None], (4, 16, 20, 3)).copy())
    keys = tf.constant([[0, 1, key]] * 4, tf.int64)
    out, labels = mix_batch(recipe, 4)(images, tf.constant([0, 1, 2, 3]), keys)
    return values, np.asarray(out), np.asarray(labels)


def test_mixup_and_cutmix_pair_each_image_with_the_batch_mirror():
    """timm's batch mode: image i with image n-1-i, one weight per batch, the labels weighted as the pixels."""
    from keras_evit.training.recipe import get_recipe

    recipe = get_recipe("imagenet")
    kinds = set()
    for key in range(40):
        values, out, labels = _mixed(recipe, key)
        np.testing.assert_allclose(labels.sum(-1), 1.0, rtol=1e-6)
        lam = labels[0, 0]
        np.testing.assert_allclose(labels[0, 3], 1.0 - lam, atol=1e-6)
        if np.unique(out[0]).size > 1:  # CutMix: a box of the mirror image, weight = uncovered area
            kinds.add("cutmix")
            np.testing.assert_allclose(np.mean(out[0] == values[0]), lam, atol=1e-6)
            assert set(np.unique(out[0])) <= {values[0], values[3]}
        else:
            kinds.add("mixup")
            np.testing.assert_allclose(out[0], lam * values[0] + (1 - lam) * values[3], atol=1e-3)
        np.testing.assert_array_equal(out, _mixed(recipe, key)[1])  # a function of the key
    assert kinds == {"cutmix", "mixup"}
    lams = [_mixed(recipe, key)[2][1, 1] for key in range(40)]
    assert 0.2 < np.mean(lams) < 0.8 and len(set(np.round(lams, 6))) > 30


def test_no_mixing_gives_one_hot_labels():
    from keras_evit.training.recipe import get_recipe

    values, out, labels = _mixed(get_recipe("imagenet", mixup=0.0, cutmix=0.0), 3)
    np.testing.assert_array_equal(labels, np.eye(4))
    np.testing.assert_array_equal(out[:, 0, 0, 0], values)
    assert math.isclose(float(out.mean()), float(values.mean()))
