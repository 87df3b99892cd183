"""``keras-evit evaluate`` reproduces what a checkpoint scores: its own 1000-class head, ImageNet synset
folders mapped to ImageNet class indices, a plain folder scored whole. Each run is a fresh process."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import IMAGENET_SAMPLE, require
from test_download import _Server

from keras_evit.training.data import folder_eval_source, imagenet_label_map


def _evaluate(*args, env=None):
    proc = subprocess.run([sys.executable, "-m", "keras_evit.cli", "evaluate", "--model", "m0", *args],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _scored(text):
    found = re.search(r"accuracy (\d\.\d+).*\((\d+) images scored, (\d+) classes\)", text)
    assert found, text
    return float(found.group(1)), int(found.group(2)), int(found.group(3))


def _release_checkpoint(ref, tmp_path, seed=0):
    """(timm model, release-format .pth bytes) of a random M0 whose head spreads the sample images over many
    classes: its BN standardizes their pooled features (a random head gives them all one class)."""
    import argparse

    import torch

    import keras_evit as ke
    from keras_evit.preprocessing import list_images

    tm = ref.create_timm_model("m0", seed=seed)
    x = ke.normalize_images(np.stack([ke.load_image(p) for p in list_images(IMAGENET_SAMPLE)]))
    with torch.no_grad():
        feats = tm.forward_features(torch.from_numpy(x.transpose(0, 3, 1, 2))).mean((2, 3))
        tm.head.bn.running_mean.copy_(feats.mean(0))
        tm.head.bn.running_var.copy_(feats.var(0) + 1e-6)
        tm.head.linear.weight.mul_(10.0)
    state = ref.official_state_dict(ref.timm_state_dict(tm))
    path = tmp_path / f"efficientvit_m0-{seed}.pth"
    torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
                "args": argparse.Namespace(model="EfficientViT_M0")}, str(path))
    return tm, path.read_bytes()


def _labelled_by_reference(ref, tm, folder):
    """A synset folder of the sample images labelled by timm's own top-1 (two in three) or the class after
    it (one in three): the checkpoint's true top-1 on it is known exactly. Links, not copies."""
    import keras_evit as ke
    from keras_evit.preprocessing import imagenet_classes, list_images

    paths = list_images(IMAGENET_SAMPLE)
    logits = ref.timm_logits(tm, ke.normalize_images(np.stack([ke.load_image(p) for p in paths])))
    top2 = np.sort(logits, axis=1)[:, -2:]
    synsets = [s for s, _ in imagenet_classes()]
    correct = total = 0
    for path, row, (second, first) in zip(paths, logits, top2):
        if first - second < 1e-3:  # a near tie could go either way at float error: leave it out
            continue
        pred = int(np.argmax(row))
        right = total % 3 != 2
        label = synsets[pred if right else (pred + 1) % 1000]
        os.makedirs(os.path.join(folder, label), exist_ok=True)
        os.symlink(path, os.path.join(folder, label, os.path.basename(path)))
        correct, total = correct + right, total + 1
    assert total >= 20 and len({int(np.argmax(r)) for r in logits}) >= 10, "degenerate reference predictions"
    return correct / total, total


def test_synset_folders_map_to_imagenet_indices(tmp_path):
    for name in ("n01440764", "n15075141"):  # tench (0), toilet tissue (999)
        (tmp_path / name).mkdir()
    assert imagenet_label_map(["n01440764", "n15075141"]) == {0: 0, 1: 999}
    assert imagenet_label_map(["ants", "bees"]) is None
    assert imagenet_label_map(["n01440764", "ants"]) is None


def test_plain_folder_is_scored_whole(sample_dir, tmp_path):
    for i, name in enumerate(sorted(os.listdir(sample_dir))[:6]):
        if name.lower().endswith(".jpeg") or name.lower().endswith(".jpg"):
            os.makedirs(tmp_path / f"class{i % 2}", exist_ok=True)
            os.symlink(os.path.join(sample_dir, name), tmp_path / f"class{i % 2}" / name)
    linked = sum(len(files) for _, _, files in os.walk(tmp_path))
    source, folder = folder_eval_source(str(tmp_path))
    assert source.sizes["validation"] == linked >= 4 and folder == str(tmp_path)
    with pytest.raises(ValueError, match="no train/ folder"):
        folder_eval_source(str(tmp_path), "train")


def test_a_1000_class_checkpoint_is_scored_with_its_own_head(ref, tmp_path):
    """On ImageNet-labelled data a release-format .pth keeps its head: the model evaluate scores gives the
    checkpoint's own logits, not a new head's."""
    import torch

    from keras_evit.preprocessing import imagenet_classes
    from keras_evit.training.data import Source
    from keras_evit.training.evaluate import _model

    from conftest import raw_images, timm_vs_keras

    tm = ref.create_timm_model("m0", img_size=64)
    pth = str(tmp_path / "efficientvit_m0.pth")
    state = ref.official_state_dict(ref.timm_state_dict(tm))
    torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}}, pth)
    source = Source("folder", [s for s, _ in imagenet_classes()], {}, {})
    notes = []
    model = _model("m0", pth, source, 64, notes.append)
    assert notes == [] and timm_vs_keras(ref, tm, model, raw_images(2, 64)) <= 1e-4


@pytest.mark.slow  # a conversion and an evaluation in a fresh process
def test_evaluate_release_pth_scores_its_own_head(ref, sample_dir, tmp_path):
    """A release-format .pth on a folder labelled by the reference's own predictions: evaluate prints
    exactly the known top-1 (not chance: the checkpoint's head is kept) over every image of the folder."""
    tm, body = _release_checkpoint(ref, tmp_path)
    pth = tmp_path / "efficientvit_m0.pth"
    pth.write_bytes(body)
    expected, total = _labelled_by_reference(ref, tm, str(tmp_path / "val"))
    accuracy, scored, classes = _scored(_evaluate("--weights", str(pth), "--data", f"folder:{tmp_path / 'val'}"))
    assert (scored, classes) == (total, 1000)
    assert accuracy == pytest.approx(expected, abs=1e-4) and 0 < expected < 1


@pytest.mark.slow  # a download, a conversion and an evaluation in fresh processes
def test_evaluate_imagenet_weights_from_the_release_server(ref, sample_dir, tmp_path):
    tm, body = _release_checkpoint(ref, tmp_path, seed=3)
    expected, total = _labelled_by_reference(ref, tm, str(tmp_path / "val"))
    server = _Server()
    try:
        server.files["/v1.0/efficientvit_m0.pth"] = body
        env = {"KERAS_EVIT_WEIGHTS_URL": server.url, "KERAS_EVIT_HOME": str(tmp_path / "cache")}
        out = _evaluate("--weights", "imagenet", "--data", f"folder:{tmp_path / 'val'}", env=env)
    finally:
        server.close()
    accuracy, scored, _ = _scored(out)
    assert scored == total and accuracy == pytest.approx(expected, abs=1e-4)


def test_other_classes_get_a_new_head_and_say_so(tmp_path):
    import keras_evit as ke
    from keras_evit.training.data import Source
    from keras_evit.training.evaluate import _model

    notes = []
    source = Source("folder", ["ants", "bees"], {}, {})
    weights = tmp_path / "m0.weights.h5"
    ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3)).save_weights(str(weights))
    model = _model("m0", str(weights), source, 64, notes.append)
    assert model.outputs[0].shape[-1] == 2
    assert notes and "NEW, UNTRAINED head" in notes[0]


def test_weights_none_and_train_split_on_a_data_set(capsys):
    """`--weights none` means random weights (not a file named none); `--split train` scores the train split."""
    from keras_evit.cli import main

    args = ["evaluate", "--model", "m0", "--weights", "none", "--data", "digits", "--image-size", "64",
            "--batch-size", "512"]
    assert main(args + ["--split", "train"]) == 0
    assert "(1438 images scored, 10 classes)" in capsys.readouterr().out
    assert main(args) == 0
    assert "(359 images scored, 10 classes)" in capsys.readouterr().out


TFDS_EVALUATE = """
import os, sys
import tensorflow as tf
import tensorflow_datasets as tfds
from keras_evit.cli import main
from keras_evit.preprocessing import imagenet_classes

name, folder, data_dir, weights = sys.argv[1:5]
index = {s: i for i, (s, _) in enumerate(imagenet_classes())}
items = [(os.path.join(folder, s, f), index[s]) for s in sorted(os.listdir(folder))
         for f in sorted(os.listdir(os.path.join(folder, s)))]


def as_dataset(self, split, decoders=None, **kwargs):  # the records as TFDS gives them, int64 labels
    assert self.name == name and split == sys.argv[5], (self.name, split)
    # the image's decoder skipped: the JPEG's bytes, as stored (evaluate decodes them itself)
    assert isinstance(decoders["image"], tfds.decode.SkipDecoding), decoders
    def gen():
        for path, label in items:
            yield {"image": open(path, "rb").read(), "label": label}
    return tf.data.Dataset.from_generator(gen, output_signature={
        "image": tf.TensorSpec((), tf.string), "label": tf.TensorSpec((), tf.int64)})


# the data set's metadata as TFDS writes it when it prepares the data (split names and sizes); the records
# themselves come from as_dataset
from tensorflow_datasets.core import naming, splits as splits_lib
builder = tfds.builder(name, data_dir=data_dir)
template = naming.ShardedFileTemplate(data_dir=builder.data_dir, dataset_name=name, split=sys.argv[5],
                                      filetype_suffix="tfrecord")
builder.info.set_splits(splits_lib.SplitDict([splits_lib.SplitInfo(
    name=sys.argv[5], shard_lengths=[len(items)], num_bytes=0, filename_template=template)]))
os.makedirs(builder.data_dir, exist_ok=True)
builder.info.write_to_directory(builder.data_dir)

with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_FILES, data_dir=data_dir, as_dataset_fn=as_dataset):
    sys.exit(main(["evaluate", "--model", "m0", "--weights", weights, "--data", "tfds:" + name,
                   "--data-dir", data_dir, "--batch-size", "16"]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("name,split", [("imagenet2012", "validation"), ("imagenet_v2", "test")])
def test_evaluate_tfds_imagenet_scores_the_known_top1(ref, tmp_path, name, split):
    """``--data tfds:imagenet2012`` (validation) and ``tfds:imagenet_v2`` (test, its only split), served by
    TFDS's mock from the images labelled by the reference, with metadata naming only that split: evaluate
    picks it and prints the known top-1 (and never asks for a train split)."""
    require("tensorflow_datasets")
    tm, body = _release_checkpoint(ref, tmp_path, seed=1)
    pth = tmp_path / "efficientvit_m0.pth"
    pth.write_bytes(body)
    expected, total = _labelled_by_reference(ref, tm, str(tmp_path / "val"))
    proc = subprocess.run([sys.executable, "-c", TFDS_EVALUATE, name, str(tmp_path / "val"), str(tmp_path / "tfds"),
                           str(pth), split if name == "imagenet2012" else "test"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    accuracy, scored, classes = _scored(proc.stdout)
    assert (scored, classes) == (total, 1000), proc.stdout
    assert accuracy == pytest.approx(expected, abs=1e-4) and 0 < expected < 1
