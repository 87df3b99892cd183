import struct
import types

import numpy as np
import pytest

from keras_evit.training.record_files import check_record_lengths, check_split_files


def _masked_crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _records(path, payloads):
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for payload in payloads:
            writer.write(payload)
    return path.read_bytes()


def _declaring(length):
    """A record header declaring ``length`` bytes, with the checksum TensorFlow checks before it allocates."""
    field = struct.pack("<Q", length)
    return field + struct.pack("<I", _masked_crc32c(field))


def test_tensorflows_own_files_pass(tmp_path):
    data = _records(tmp_path / "ok.tfrecord", [b"", b"x" * 1000, b"abc"])
    assert data[:12] == _declaring(0)  # the helper makes headers as TensorFlow writes them
    check_record_lengths(str(tmp_path / "ok.tfrecord"))
    (tmp_path / "empty.tfrecord").write_bytes(b"")
    check_record_lengths(str(tmp_path / "empty.tfrecord"))


@pytest.mark.parametrize("declared", [30 << 30, 1 << 60])
def test_a_record_declaring_more_than_the_file_holds_is_refused(tmp_path, declared):
    """TensorFlow allocates the declared length before reading: past the machine's memory, it crashed."""
    good = _records(tmp_path / "good.tfrecord", [b"x" * 100])
    path = tmp_path / "train.tfrecord-00000-of-00001"
    path.write_bytes(good + _declaring(declared) + b"x" * 100)
    with pytest.raises(ValueError, match=f"the record at byte {len(good):,} declares {declared:,} bytes, more than"):
        check_record_lengths(str(path))
    path.write_bytes(good + _declaring(0)[:7])
    with pytest.raises(ValueError, match="ends inside a record header"):
        check_record_lengths(str(path))


def test_a_split_is_checked_before_it_is_read(tmp_path):
    """Through ``make_dataset``: the split's recorded files are checked first; files of another format, or not
    recorded, are left to tfds."""
    import tensorflow as tf

    from keras_evit.training import get_recipe, make_dataset
    from keras_evit.training.data import Source

    path = tmp_path / "x-train.tfrecord-00000-of-00001"
    path.write_bytes(_declaring(1 << 60) + b"x" * 100)

    class Builder:
        info = types.SimpleNamespace(splits={"train": types.SimpleNamespace(filepaths=[path])}, file_format=None)

        def as_dataset(self, split, as_supervised, shuffle_files):
            return tf.data.Dataset.from_tensor_slices((np.zeros((4, 8, 8, 3), np.uint8), [0, 1, 0, 1]))

    source = Source("tfds", ["a", "b"], {"validation": ("tfds", Builder(), "train")}, {"validation": 4})
    with pytest.raises(ValueError, match="x-train.tfrecord-00000-of-00001: the record at byte 0 declares"):
        make_dataset(source, "validation", 2, get_recipe("digits", image_size=64), training=False)
    Builder.info.file_format = types.SimpleNamespace(value="array_record")
    check_split_files(Builder(), "train")
    Builder.info.file_format = None
    check_split_files(Builder(), "test")  # not recorded
    _records(path, [b"x" * 100])  # the same name, now a sound file: read
    assert len(list(make_dataset(source, "validation", 2, get_recipe("digits", image_size=64), training=False))) == 2


TINY_PHOTOS = '''
import numpy as np
import tensorflow_datasets as tfds


class TinyPhotos(tfds.core.GeneratorBasedBuilder):
    """Twelve small JPEG photos of two classes, prepared by tfds from this code."""
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(names=["a", "b"])}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(8), "validation": self._generate_examples(4)}

    def _generate_examples(self, n):
        rng = np.random.default_rng(n)
        for i in range(n):
            yield i, {"image": rng.integers(0, 255, (48, 40, 3), dtype=np.uint8), "label": i % 2}
'''

EVALUATE = """
import sys
sys.path.insert(0, sys.argv[1])
import tiny_photos  # registers tfds:tiny_photos
from keras_evit.cli import main
sys.exit(main(["evaluate", "--model", "m0", "--weights", "none", "--data", "tfds:tiny_photos",
               "--data-dir", sys.argv[2], "--image-size", "64", "--batch-size", "4"]))
"""


@pytest.mark.slow  # tfds prepares a data set, then two evaluations: each a fresh process
def test_a_prepared_tfds_set_with_a_crafted_record_is_refused_by_name(tmp_path):
    """A data set tfds prepared on this machine evaluates from its files (JPEG bytes decoded by predict's
    decoder); one record header in its validation file then declares 2^60 bytes, with a valid checksum:
    TensorFlow's reader crashed the process (exit status 139, a segmentation fault), evaluate now names the
    file and exits with 2."""
    import subprocess
    import sys

    from conftest import require

    require("tensorflow_datasets")
    (tmp_path / "code" / "tiny_photos").mkdir(parents=True)
    (tmp_path / "code" / "tiny_photos" / "__init__.py").write_text(TINY_PHOTOS)

    def evaluate():
        return subprocess.run([sys.executable, "-c", EVALUATE, str(tmp_path / "code"), str(tmp_path / "data")],
                              capture_output=True, text=True, timeout=600)

    first = evaluate()
    assert first.returncode == 0, first.stderr[-3000:]
    assert "(4 images scored, 2 classes)" in first.stdout
    shard = tmp_path / "data" / "tiny_photos" / "1.0.0" / "tiny_photos-validation.tfrecord-00000-of-00001"
    size = shard.stat().st_size
    with open(shard, "ab") as f:
        f.write(_declaring(1 << 60) + b"x" * 100)
    second = evaluate()
    assert second.returncode == 2, (second.returncode, second.stderr[-3000:])
    assert f"tiny_photos-validation.tfrecord-00000-of-00001: the record at byte {size:,} declares" in second.stderr
