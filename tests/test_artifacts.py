"""``--labels FILE``: class names for a user's own model, read safely."""

import json
import os

import pytest

from keras_evit.weights.artifacts import read_labels_file


def test_labels_from_text_or_json(tmp_path):
    text = tmp_path / "labels.txt"
    text.write_text("ant\nbee\n\n")
    assert read_labels_file(str(text), 2) == ["ant", "bee"]
    listed = tmp_path / "classes.json"
    listed.write_text(json.dumps(["ant", "bee"]))
    assert read_labels_file(str(listed), 2) == ["ant", "bee"]
    with pytest.raises(ValueError, match="should name the model's 3 classes"):
        read_labels_file(str(text), 3)


def test_a_class_list_nested_past_pythons_limit_is_refused_by_name(tmp_path):
    """JSON nested 100,000 deep (200 KB) makes Python's parser raise RecursionError: a clear error, not a traceback."""
    deep = tmp_path / "classes.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="cannot read class names from .*classes.json"):
        read_labels_file(str(deep), 1000)  # 1,000 names may take 200 KB: the parser is reached


@pytest.mark.parametrize("name", ["classes.json", "labels.txt"])
def test_a_class_list_longer_than_the_models_names_could_be_is_refused_unread(tmp_path, name):
    """2.5 million short names (14 MB, under the 16 MB cap for any list) for a 2-class model: parsed, they
    took 201 MB. The file may hold at most 1 KB per output (ImageNet's 1,000 names take 13 KB)."""
    path = tmp_path / name
    names = ["ab"] * 2_500_000
    path.write_text(json.dumps(names) if name.endswith(".json") else "\n".join(names))
    with pytest.raises(ValueError, match=f"{name} is too large for .* for 2 outputs .* at most 6,144\\)"):
        read_labels_file(str(path), 2)
    from keras_evit.preprocessing import imagenet_class_names

    path.write_text(json.dumps(imagenet_class_names()) if name.endswith(".json")
                    else "\n".join(imagenet_class_names()))
    assert read_labels_file(str(path), 1000) == imagenet_class_names()


def test_a_fifo_or_folder_as_labels_is_refused_not_read(tmp_path):
    fifo = tmp_path / "labels.txt"
    os.mkfifo(fifo)
    for path in (fifo, tmp_path):
        with pytest.raises(ValueError, match="not a regular file"):
            read_labels_file(str(path), 2)


def test_a_keras_model_outside_the_supported_sizes_is_refused(tmp_path):
    """A user's own .keras classifier taking 32 px images: refused on load, naming the size and the file."""
    import keras

    from keras_evit.weights.artifacts import load_classifier

    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
    path = str(tmp_path / "tiny.keras")
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="tiny.keras takes 32 px inputs: image size 32 is out of range"):
        load_classifier(path)


def test_a_keras_file_put_in_place_after_its_checks_is_never_loaded(tmp_path, monkeypatch):
    """``.keras`` checks and Keras' loader see the same file: one moved into its path between them is not loaded."""
    import keras
    import numpy as np

    from keras_evit.weights import keras_archive
    from keras_evit.weights.artifacts import load_keras_file

    path, other = tmp_path / "model.keras", tmp_path / "other.keras"
    for target, value in ((path, 1.0), (other, 2.0)):
        model = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Conv2D(2, 3, name="conv")])
        model.get_layer("conv").kernel.assign(np.full((3, 3, 3, 2), value, np.float32))
        model.save(target)
    check = keras_archive.check_archive

    def check_then_swap(*args, **kwargs):
        check(*args, **kwargs)
        os.replace(other, path)

    monkeypatch.setattr(keras_archive, "check_archive", check_then_swap)
    loaded = load_keras_file(str(path))
    assert np.all(np.asarray(loaded.get_layer("conv").kernel) == 1.0)  # the file that was checked
    assert not other.exists()
