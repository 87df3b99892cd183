import os

import numpy as np
import pytest

from keras_evit.training import get_recipe, load_source, make_dataset

from conftest import HYMENOPTERA, missing, outputs, require


@pytest.fixture(scope="module")
def hymenoptera():
    if not os.path.isdir(HYMENOPTERA):
        missing("shared/data/hymenoptera not present")
    return load_source(f"folder:{HYMENOPTERA}")


def test_folder_train_val_and_gif_skipped(hymenoptera):
    assert hymenoptera.class_names == ["ants", "bees"]
    assert hymenoptera.sizes == {"train": 124 + 121 - 1, "validation": 70 + 83}
    assert len(hymenoptera.skipped) == 1 and "imageNotFound.gif" in hymenoptera.skipped[0]
    assert "GIF skipped" in hymenoptera.skipped[0]


def test_unreadable_files_are_skipped(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((20, 20, 3), i * 40, np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "a" / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    source = load_source(f"folder:{tmp_path}")
    assert source.sizes["train"] + source.sizes["validation"] == 6
    assert len(source.skipped) == 1 and "broken.jpg" in source.skipped[0]
    batch = next(iter(make_dataset(source, "train", 2, get_recipe("digits", image_size=64), training=True)))
    assert batch[0].shape == (2, 64, 64, 3) and batch[1].shape == (2, 2)


def test_bad_data_specs(tmp_path):
    with pytest.raises(ValueError, match="folder:PATH, tfds:NAME or digits"):
        load_source("s3://bucket")
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        load_source(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_source(f"folder:{tmp_path}")


def _labels(ds, n):
    return [np.asarray(y).argmax(-1).tolist() for _, y in ds.take(n)]


def test_epoch_order_is_seeded_and_resumable():
    source = load_source("digits")
    recipe = get_recipe("digits", epochs=3)
    full = _labels(make_dataset(source, "train", 64, recipe, training=True), 22 + 5)
    again = _labels(make_dataset(source, "train", 64, recipe, training=True), 22 + 5)
    assert full == again
    resumed = _labels(make_dataset(source, "train", 64, recipe, training=True, start_epoch=1, skip_steps=3), 2)
    assert resumed == full[22 + 3:22 + 5]  # epoch 2, batches 4 and 5
    assert full[:22] != full[22:44]  # a new order each epoch


@pytest.mark.parametrize("batch", [16, 15, 1])
def test_training_batches_have_static_shapes(batch):
    """Keras' fit reads the rank and size of each input from the dataset's element spec."""
    recipe = get_recipe("digits")
    ds = make_dataset(load_source("digits"), "train", batch, recipe, training=True)
    images, labels = ds.element_spec
    size = recipe.image_size
    assert (tuple(images.shape), tuple(labels.shape)) == ((batch, size, size, 3), (batch, 10))
    first, _ = next(iter(ds))
    assert first.shape == (batch, size, size, 3)


def test_a_resumed_run_repeats_the_augmented_images():
    """Each image's augmentation is drawn from (seed, epoch, position): a resume sees the very same pixels."""
    source = load_source("digits")
    recipe = get_recipe("digits", epochs=2, hflip=True, randaugment_magnitude=9, random_erasing=0.25)
    full = [np.asarray(x) for x, _ in make_dataset(source, "train", 64, recipe, training=True).take(22 + 2)]
    resumed = [np.asarray(x) for x, _ in make_dataset(source, "train", 64, recipe, training=True, start_epoch=1,
                                                      skip_steps=1).take(1)]
    np.testing.assert_array_equal(resumed[0], full[22 + 1])
    assert not np.array_equal(full[0], full[22])


def test_a_resumed_run_skips_the_trained_batches_without_augmenting_them(monkeypatch):
    import keras_evit.training.augment as augment

    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return train_image(*args, **kwargs)

    train_image = augment.train_image
    monkeypatch.setattr(augment, "train_image", counted)
    source = load_source("digits")
    recipe = get_recipe("digits", epochs=2)
    next(iter(make_dataset(source, "train", 16, recipe, training=True, skip_steps=60)))
    assert 16 <= len(calls) < 16 * 20  # the batch, and what tf.data reads ahead: not the 960 skipped images


def test_mirror_pairs_are_timms_batch_pairs():
    """Position j of each batch with position n-1-j, each batch's pairs before the next batch's."""
    import tensorflow as tf

    from keras_evit.training.data import mirror_pairs

    for batch in (4, 5, 1):
        ds = tf.data.Dataset.range(3 * batch).map(lambda i: (i, i, tf.stack([0, 0, i])))
        pairs = [(int(a[0]), int(b[0])) for a, b in mirror_pairs(ds, batch)]
        expected = [(start + j, start + batch - 1 - j) for start in range(0, 3 * batch, batch)
                    for j in range((batch + 1) // 2)]
        assert sorted(pairs) == sorted(expected)
        batches = [min(a, b) // batch for a, b in pairs]
        assert batches == sorted(batches)
        if batch % 2:  # the middle of an odd batch first (the pipeline drops its second copy)
            assert all(a == b for a, b in pairs[::(batch + 1) // 2])


@pytest.fixture
def process_seed_zero():
    """The process-wide seed a user sets with `keras.utils.set_random_seed(0)`; unset afterwards."""
    import tensorflow as tf

    tf.random.set_seed(0)
    yield
    tf.random.set_seed(None)


def test_a_process_seed_of_zero_trains(process_seed_zero):
    """TensorFlow compares seed pairs with (0, 0) while tracing; a global seed of 0 must not break the epochs."""
    source = load_source("digits")
    recipe = get_recipe("digits", epochs=2)
    first = _labels(make_dataset(source, "train", 64, recipe, training=True), 22 + 1)
    assert first == _labels(make_dataset(source, "train", 64, recipe, training=True), 22 + 1)
    assert first[:1] != first[22:]  # still a new order each epoch


def test_mixup_cutmix_soft_labels():
    source = load_source("digits")
    recipe = get_recipe("digits", mixup=0.8, cutmix=1.0)
    _, y = next(iter(make_dataset(source, "train", 32, recipe, training=True)))
    y = np.asarray(y)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)
    assert (y.max(-1) < 1.0).any()


def test_eval_transform_is_predicts(sample_dir):
    """evaluate's pipeline gives predict's pixels exactly, from a path or from a decoded array."""
    import tensorflow as tf

    import keras_evit as ke
    from keras_evit.training.augment import eval_transform

    path = os.path.join(sample_dir, "n01530575_brambling.JPEG")
    reference = ke.load_image(path).astype(np.float32)
    from_path = np.asarray(eval_transform(224)(tf.constant(path)))
    from_array = np.asarray(eval_transform(224)(tf.constant(ke.preprocessing.decode_image(path))))
    np.testing.assert_array_equal(from_path, reference)
    np.testing.assert_array_equal(from_array, reference)


def test_evaluate_pipeline_logits_equal_predicts(sample_dir, tmp_path):
    """The same file gives the same logits through predict's path and evaluate's tf.data pipeline."""
    import keras_evit as ke
    from keras_evit.training.data import Source

    files = sorted(os.path.join(sample_dir, f) for f in os.listdir(sample_dir) if f.endswith(".JPEG"))[:4]
    source = Source("folder", ["a", "b"], {"validation": (np.array(files), np.array([0, 1, 0, 1], np.int32))},
                    {"validation": 4})
    model = ke.EfficientViTM0(weights=None, input_shape=(96, 96, 3), classifier_activation=None)
    x, _ = next(iter(make_dataset(source, "validation", 4, get_recipe("finetune", image_size=96), training=False)))
    via_evaluate = outputs(model, np.asarray(x))  # the model is the same: what differs is the input pipeline
    via_predict = outputs(model, np.stack([ke.load_image(f, 96) for f in files]))
    assert np.abs(via_evaluate - via_predict).max() <= 1e-4


def test_tfds_source_with_mock_data():
    tfds = require("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=40):
        source = load_source("tfds:mnist")
        assert source.num_classes == 10 and source.encoded  # its PNGs are decoded by predict's decoder
        x, y = next(iter(make_dataset(source, "train", 8, get_recipe("digits", image_size=64), training=True)))
        assert x.shape == (8, 64, 64, 3) and y.shape == (8, 10)


def test_tfds_images_of_different_sizes_train():
    """A tfds split yields images of many sizes (tf_flowers, imagenet2012): paired and mixed, never batched raw."""
    import types

    import tensorflow as tf

    from keras_evit.training.data import Source

    class Builder:  # stands in for a tfds builder of photos of assorted sizes
        info = types.SimpleNamespace(splits={})  # no files recorded

        def as_dataset(self, split, as_supervised, shuffle_files):
            sizes = [(70 + 9 * i, 90 - 5 * i) for i in range(12)]
            return tf.data.Dataset.from_generator(
                lambda: ((np.full((h, w, 3), 20 * i, np.uint8), i % 3) for i, (h, w) in enumerate(sizes)),
                output_signature=(tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([], tf.int64)))

    source = Source("tfds", ["a", "b", "c"], {"train": ("tfds", Builder(), "train")}, {"train": 12})
    batches = list(make_dataset(source, "train", 5, get_recipe("imagenet", image_size=64, epochs=1),
                                training=True).take(3))
    assert [tuple(x.shape) for x, _ in batches] == [(5, 64, 64, 3)] * 3
    np.testing.assert_allclose(np.asarray(batches[0][1]).sum(-1), 1.0, rtol=1e-6)


def test_tfds_images_are_decoded_by_the_checked_decoder():
    """A tfds image feature is read encoded and decoded as a file is (predict's pixels), after the checks that
    refuse crafted images: a 49 KB PNG declaring 20000x20000 pixels, which TensorFlow's decoder (TFDS's own
    decoding) decoded into 1.2 GB, is refused by its size, in evaluation and in training."""
    import io
    import types

    import tensorflow as tf
    from PIL import Image

    import keras_evit as ke
    from keras_evit.training.data import Source

    tfds = require("tensorflow_datasets")

    def png(image):
        buf = io.BytesIO()
        image.save(buf, "PNG")
        return buf.getvalue()

    photo = png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), np.uint8)))
    bomb = png(Image.new("1", (20000, 20000)))
    assert len(bomb) < 60_000

    class Builder:  # a tfds builder whose supervised image feature is stored encoded, as tfds stores photos
        info = types.SimpleNamespace(supervised_keys=("image", "label"), splits={},
                                     features={"image": tfds.features.Image(shape=(None, None, 3)),
                                               "label": tfds.features.ClassLabel(num_classes=2)})

        def __init__(self, records):
            self.records = records

        def as_dataset(self, split, as_supervised, shuffle_files, decoders=None):
            assert isinstance(decoders["image"], tfds.decode.SkipDecoding)
            return tf.data.Dataset.from_tensor_slices((self.records, [i % 2 for i in range(len(self.records))]))

    def source(records):
        builder = Builder(records)
        return Source("tfds", ["a", "b"], {s: ("tfds", builder, s) for s in ("train", "validation")},
                      {"train": len(records), "validation": len(records)}, encoded=True)

    recipe = get_recipe("digits", image_size=64, epochs=1)
    x, _ = next(iter(make_dataset(source([photo] * 2), "validation", 2, recipe, training=False)))
    np.testing.assert_array_equal(x[0], ke.load_image(io.BytesIO(photo), 64))
    for training in (False, True):
        with pytest.raises(tf.errors.InvalidArgumentError, match="image .encoded image. is too large to decode"):
            list(make_dataset(source([photo, bomb] * 2), "train" if training else "validation", 4, recipe,
                              training=training))


def test_one_class_folder_is_an_error(tmp_path):
    from PIL import Image

    (tmp_path / "only").mkdir()
    for i in range(4):
        Image.fromarray(np.full((20, 20, 3), i * 40, np.uint8)).save(tmp_path / "only" / f"{i}.png")
    with pytest.raises(ValueError, match="needs at least 2 classes"):
        load_source(f"folder:{tmp_path}")


def test_scan_decodes_with_the_training_decoder(tmp_path, sample_dir):
    """A truncated JPEG passes PIL's verify() but not a full decode: skipped at scan time, counted."""
    from PIL import Image

    data = open(os.path.join(sample_dir, "n01440764_tench.JPEG"), "rb").read()
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((20, 20, 3), i * 40, np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "a" / "cut.jpg").write_bytes(data[: len(data) // 2])
    with Image.open(tmp_path / "a" / "cut.jpg") as img:
        img.verify()  # the old scan-time check let it through
    source = load_source(f"folder:{tmp_path}")
    assert len(source.skipped) == 1 and "cut.jpg" in source.skipped[0]
    batches = make_dataset(source, "train", 1, get_recipe("digits", image_size=64, epochs=1), training=True)
    assert sum(1 for _ in batches.take(source.sizes["train"])) == source.sizes["train"]


def test_recipe_rejects_values_no_run_can_use():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        get_recipe("digits", batch_size=0)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        get_recipe("digits", epochs=-1)
    with pytest.raises(ValueError, match="out of range"):
        get_recipe("digits", image_size=100000)


def test_a_fifo_in_a_class_folder_is_skipped_not_opened(tmp_path):
    """Scanning a class folder never blocks on a FIFO named like an image: it is skipped and reported."""
    from PIL import Image

    from keras_evit.training.data import folder_source

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 40), (i * 90, 20, 200)).save(tmp_path / name / f"{i}.png")
    os.mkfifo(tmp_path / "a" / "pipe.jpg")
    source = folder_source(str(tmp_path))
    assert source.sizes["train"] + source.sizes["validation"] == 4
    assert len(source.skipped) == 1 and "not a regular file" in source.skipped[0]


@pytest.mark.parametrize("name", ["bees\r", "ants\u2028x", "tab\there", "nul\x00"])
def test_class_names_with_control_characters_are_refused(tmp_path, name):
    from PIL import Image

    from keras_evit.weights.artifacts import read_class_names

    if "\x00" not in name:  # a folder name cannot hold NUL; classes.json can
        for cls in ("ants", name):
            (tmp_path / cls).mkdir()
            Image.new("RGB", (20, 20)).save(tmp_path / cls / "0.png")
        with pytest.raises(ValueError, match=f"class folders of {tmp_path}: class name .* control character"):
            load_source(f"folder:{tmp_path}")
    import json

    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps(["ants", name]))
    with pytest.raises(ValueError, match="control character"):
        read_class_names(str(classes), 2)


def test_an_empty_class_folder_is_an_error(tmp_path):
    from PIL import Image

    for cls in ("ants", "bees", "wasps"):
        (tmp_path / cls).mkdir()
    for cls in ("ants", "bees"):
        Image.new("RGB", (20, 20)).save(tmp_path / cls / "0.png")
    with pytest.raises(ValueError, match="'wasps' of .* hold no readable image"):
        load_source(f"folder:{tmp_path}")


def test_digits_are_the_uci_test_set():
    """The shipped copy: 1,797 images of counts 0..16, each digit 174-183 times (the UCI test set's counts)."""
    from keras_evit.training.data import load_digits

    images, labels = load_digits()
    assert images.shape == (1797, 8, 8) and images.min() == 0 and images.max() == 16
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert images[0].ravel()[:16].tolist() == [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0]


def test_evaluation_datasets_end_without_waiting_for_autotuning():
    """Evaluation pipelines run without tf.data's autotuning, whose thread each iterator's end waits for;
    training keeps it (its input is what can bound a step)."""
    source = load_source("digits")
    recipe = get_recipe("digits", image_size=64)
    evaluation = make_dataset(source, "validation", 32, recipe, training=False)
    assert evaluation.options().autotune.enabled is False
    assert make_dataset(source, "train", 32, recipe, training=True).options().autotune.enabled is not False
    assert sum(len(y) for _, y in evaluation) == 359  # every image, once
