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


def test_train_transform_is_a_function_of_the_keys(tmp_path):
    """The same keys give the same pair (a resumed run repeats its augmentation); paths and arrays both work."""
    from PIL import Image

    from keras_evit.training.augment import train_transform
    from keras_evit.training.recipe import get_recipe

    paths = [str(tmp_path / f"photo{i}.png") for i in range(2)]
    for i, path in enumerate(paths):
        _photo(seed=i, size=(90, 70)).save(path)
    fn = tf.function(train_transform(get_recipe("imagenet", image_size=64), num_classes=3, batch_size=4))

    def pair(records, position):  # positions `position` and its mirror 3 - position of batch 0
        keys = [tf.constant([0, 3, p], tf.int64) for p in (position, 3 - position)]
        return fn(*((tf.constant(r), tf.constant(label), k) for r, label, k in zip(records, (0, 2), keys)))

    first, labels = pair(paths, 0)
    assert first.shape == (2, 64, 64, 3) and first.dtype == tf.float32 and labels.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(labels).sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(first, pair(paths, 0)[0])
    np.testing.assert_array_equal(first, pair([np.asarray(Image.open(p)) for p in paths], 0)[0])
    assert not np.array_equal(first, pair(paths, 1)[0])


def test_the_numpy_functions_run_no_autograph_code(monkeypatch, tmp_path):
    """A numpy function that AutoGraph rewrote runs its wrappers on every image, holding Python's lock."""
    import inspect

    import keras_evit.training.augment as augment
    from keras_evit.training.data import _decode, make_dataset

    callers = []

    def spy(function):
        def wrapped(*args, **kwargs):
            callers.extend(f"{frame.filename}:{frame.function}" for frame in inspect.stack())
            return function(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(augment, "train_image", spy(augment.train_image))
    monkeypatch.setattr(augment, "decode_image", spy(augment.decode_image))
    next(iter(make_dataset(_constant_source(np.arange(4) * 50), "train", 4, _plain(), training=True)))
    path = str(tmp_path / "photo.png")
    _photo().save(path)
    next(iter(tf.data.Dataset.from_tensor_slices(([path], [0])).map(_decode)))
    assert any("augment.py:" in name for name in callers)
    rewritten = [name for name in callers if "__autograph_generated" in name or name.endswith(":converted_call")]
    assert not rewritten, sorted(set(rewritten))


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


def _constant_source(values):
    """A data source of constant grey-level images, image i of class i."""
    from keras_evit.training.data import Source

    images = np.broadcast_to(np.asarray(values, np.uint8)[:, None, None, None], (len(values), 20, 20, 3)).copy()
    labels = np.arange(len(values), dtype=np.int32)
    return Source("arrays", [str(i) for i in range(len(values))],
                  {"train": (images, labels), "validation": (images, labels)},
                  {"train": len(values), "validation": len(values)})


def _plain(**overrides):
    """The ImageNet recipe at 64 px with only Mixup/CutMix left (a constant image stays constant)."""
    from keras_evit.training.recipe import get_recipe

    return get_recipe("imagenet", image_size=64, randaugment_magnitude=0, random_erasing=0.0, epochs=3,
                      **overrides)


@pytest.mark.parametrize("batch", [8, 7])
def test_mixup_and_cutmix_pair_each_image_with_the_batch_mirror(batch):
    """timm's batch mode through the training input: image j with image n-1-j, one weight per batch, labels
    weighted as the pixels; the middle image of an odd batch is its own mirror (left as it is)."""
    from keras_evit.training.data import make_dataset

    values = (np.arange(batch * 4) * 7 + 3) % 251  # image i: grey level values[i], class i
    source = _constant_source(values)
    kinds = set()
    lams = []
    for images, labels in make_dataset(source, "train", batch, _plain(), training=True).take(2 * 4):
        images, labels = np.asarray(images), np.asarray(labels)
        np.testing.assert_allclose(labels.sum(-1), 1.0, rtol=1e-6)
        lam = labels.max(-1).min()  # the batch's weight (or 1 - it): the larger one (1 for the middle)
        pairs = {}
        for image, label in zip(images, labels):
            classes = np.nonzero(label > 1e-6)[0]
            if len(classes) == 1:  # unmixed: the middle of an odd batch, or lam == 1
                np.testing.assert_array_equal(image, float(values[classes[0]]))
                continue
            p, q = classes
            np.testing.assert_allclose(sorted(label[classes]), [1 - lam, lam], atol=1e-6)  # one weight per batch
            pairs.setdefault((p, q), []).append(label[p])
            if np.unique(image).size > 1:  # CutMix: a box of the mirror, weight = the area it leaves uncovered
                kinds.add("cutmix")
                np.testing.assert_allclose(np.mean(image == values[p]), label[p], atol=1e-6)
            else:
                kinds.add("mixup")
                np.testing.assert_allclose(image, label[p] * values[p] + label[q] * values[q], atol=1e-3)
        for weights in pairs.values():  # each pair mixed both ways: the weights swapped
            assert len(weights) == 2
            np.testing.assert_allclose(sum(weights), 1.0, atol=1e-6)
        assert len(pairs) == batch // 2 or lam > 1 - 1e-6
        lams.append(lam)
    assert kinds == {"cutmix", "mixup"}
    assert len(set(np.round(lams, 6))) > 4


def test_mix_params_are_timms_per_batch_draws():
    from keras_evit.training.augment import mix_params

    recipe = _plain()
    draws = [mix_params(recipe, np.random.default_rng(i), 224, 224) for i in range(400)]
    boxes = [box for _, box in draws if box is not None]
    assert 0.4 < len(boxes) / len(draws) < 0.6  # CutMix with mix_switch_prob 0.5
    for lam, box in draws:
        assert 0.0 <= lam <= 1.0
        if box is not None:
            top, bottom, left, right = box
            assert 0 <= top <= bottom <= 224 and 0 <= left <= right <= 224
            assert math.isclose(lam, 1 - (bottom - top) * (right - left) / 224 ** 2)
    mixup_lams = [lam for lam, box in draws if box is None]
    assert 0.4 < np.mean(mixup_lams) < 0.6 and np.std(mixup_lams) > 0.25  # Beta(0.8, 0.8): mean 0.5, sd 0.32
    assert mix_params(_plain(mixup=0.0, cutmix=0.0), np.random.default_rng(0), 8, 8) == (1.0, None)
    assert all(box is None for _, box in (mix_params(_plain(cutmix=0.0), np.random.default_rng(i), 8, 8)
                                          for i in range(20)))
    assert all(box is not None for _, box in (mix_params(_plain(mixup=0.0), np.random.default_rng(i), 8, 8)
                                              for i in range(20)))


def test_no_mixing_gives_one_hot_labels():
    from keras_evit.training.data import make_dataset

    values = np.arange(8) * 30
    images, labels = next(iter(make_dataset(_constant_source(values), "train", 8, _plain(mixup=0.0, cutmix=0.0),
                                            training=True)))
    labels = np.asarray(labels)
    assert set(labels.sum(0)) == {1.0} and set(labels.max(-1)) == {1.0}
    np.testing.assert_array_equal(np.asarray(images)[:, 0, 0, 0], values[labels.argmax(-1)])
