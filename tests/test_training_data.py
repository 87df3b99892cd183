import os

import numpy as np
import pytest

from keras_evit.training import get_recipe, load_source, make_dataset

from conftest import HYMENOPTERA


@pytest.fixture(scope="module")
def hymenoptera():
    if not os.path.isdir(HYMENOPTERA):
        pytest.skip("shared/data/hymenoptera not present")
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


def test_mixup_cutmix_soft_labels():
    source = load_source("digits")
    recipe = get_recipe("digits", mixup=0.8, cutmix=1.0)
    _, y = next(iter(make_dataset(source, "train", 32, recipe, training=True)))
    y = np.asarray(y)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)
    assert (y.max(-1) < 1.0).any()


def test_eval_transform_matches_reference_crop(sample_dir):
    import tensorflow as tf

    import keras_evit as ke
    from keras_evit.training.augment import eval_transform

    path = os.path.join(sample_dir, "n01530575_brambling.JPEG")
    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
    ours = np.asarray(eval_transform(224)(image))
    reference = ke.preprocess_input(ke.load_image(path))
    assert ours.shape == (224, 224, 3)
    assert np.abs(ours - reference).mean() < 0.05  # TF vs PIL bicubic differ slightly


def test_tfds_source_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=40):
        source = load_source("tfds:mnist")
        assert source.num_classes == 10
        x, y = next(iter(make_dataset(source, "train", 8, get_recipe("digits", image_size=64), training=True)))
        assert x.shape == (8, 64, 64, 3) and y.shape == (8, 10)
