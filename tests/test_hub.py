"""keras_evit.hub: EfficientViT as a keras-hub Backbone, ImageClassifier and presets.

keras-hub's own test helpers run on our classes; the presets are served from a weights cache made here
(the release download itself is tested in test_download/test_evaluate), and their logits are compared with
``keras_evit.EfficientViTM0`` built from the same cache.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import declare_empty_gzip_dataset, outputs, raised_without_blocking, randomize, require

keras_hub = require("keras_hub")
require("grain")  # keras-hub's test helpers import it

from keras_hub.src.tests import test_case as hub_test_case  # noqa: E402  (keras-hub's own helpers)

import keras_evit as ke  # noqa: E402
from keras_evit.hub import (EfficientViTBackbone, EfficientViTImageClassifier,  # noqa: E402
                            EfficientViTImageClassifierPreprocessor, EfficientViTImageConverter, PRESETS)
from keras_evit.hub.presets import MARKER, preset_dir  # noqa: E402

M0 = {"embed_dims": [64, 128, 192], "depths": [1, 2, 3], "num_heads": [4, 4, 4], "kernel_sizes": [5, 5, 5, 5]}


def write_imagenet_cache(home, variant="m0", seed=0):
    """A weights cache holding a randomized ``variant`` state dict as the verified ImageNet weights."""
    from safetensors.numpy import save_file

    from keras_evit.weights import state_dict_from_model
    from keras_evit.weights.download import cached_weights_path, write_hash

    model = randomize(ke.build_model(variant, weights=None, classifier_activation=None,
                                     include_preprocessing=False), seed)
    os.makedirs(home, exist_ok=True)
    path = os.path.join(home, os.path.basename(cached_weights_path(variant)))
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in state_dict_from_model(model, False).items()},
              path)
    write_hash(path)
    return path


@pytest.fixture
def imagenet_home(tmp_path, monkeypatch):
    home = str(tmp_path / "cache")
    write_imagenet_cache(home)
    monkeypatch.setenv("KERAS_EVIT_HOME", home)
    monkeypatch.setenv("KERAS_EVIT_WEIGHTS_URL", "http://127.0.0.1:9/nothing-here")  # never downloads
    return home


class KerasHubHelpersTest(hub_test_case.TestCase):
    """keras-hub's TestCase helpers, as keras-hub runs them on its own vision models."""

    test_session = None  # tf.test.TestCase's context manager, not a test

    def setUp(self):
        super().setUp()
        self.images = np.random.RandomState(0).uniform(0, 255, (2, 80, 100, 3)).astype("float32")
        self.labels = np.array([0, 2])
        self.backbone_kwargs = {**M0, "image_shape": (64, 64, 3)}

    def _classifier_kwargs(self):
        converter = EfficientViTImageConverter(image_size=(64, 64))
        return {"backbone": EfficientViTBackbone(**self.backbone_kwargs), "num_classes": 3,
                "preprocessor": EfficientViTImageClassifierPreprocessor(image_converter=converter)}

    @pytest.mark.slow  # predicts twice, then mixed precision and int8/float8 quantization: about 20 s
    def test_backbone(self):
        x = keras.ops.convert_to_tensor(np.random.RandomState(1).randn(2, 64, 64, 3).astype("float32"))
        self.run_vision_backbone_test(
            cls=EfficientViTBackbone, init_kwargs=self.backbone_kwargs, input_data=x,
            expected_output_shape=(2, 1, 1, 192), expected_pyramid_output_keys=["P4", "P5", "P6"],
            expected_pyramid_image_sizes=[(4, 4), (2, 2), (1, 1)],
            run_data_format_check=False)  # channels last only, as keras_evit

    @pytest.mark.slow  # three fits and a dozen predicts: about a minute
    def test_task(self):
        self.run_task_test(cls=EfficientViTImageClassifier, init_kwargs=self._classifier_kwargs(),
                           train_data=(self.images, self.labels), expected_output_shape=(2, 3))

    def test_preset_from_a_local_folder(self):
        backbone = EfficientViTBackbone(**self.backbone_kwargs)
        folder = os.path.join(self.get_temp_dir(), "local_preset")
        backbone.save_to_preset(folder)
        x = keras.ops.convert_to_tensor(self.images[:, :64, :64])
        expected = backbone(x)
        self.run_preset_test(cls=EfficientViTBackbone, preset=folder, input_data=x, expected_output=expected,
                             expected_output_shape=(2, 1, 1, 192))

    def test_saving(self):
        x = keras.ops.convert_to_tensor(self.images[:, :64, :64])  # a direct call: the model's input size
        self.run_model_saving_test(cls=EfficientViTImageClassifier, init_kwargs=self._classifier_kwargs(),
                                   input_data=x)


def test_presets_metadata_matches_the_models():
    assert sorted(EfficientViTBackbone.presets) == [f"efficientvit_m{i}_imagenet" for i in range(6)]
    assert EfficientViTImageClassifier.presets == EfficientViTBackbone.presets
    for name, preset in PRESETS.items():
        cfg = ke.VARIANTS[preset["variant"]]
        backbone = EfficientViTBackbone(cfg.embed_dims, cfg.depths, cfg.num_heads, cfg.kernels)
        assert preset["metadata"]["params"] == backbone.count_params(), name
        assert f"{cfg.top1}%" in preset["metadata"]["description"]


def test_converter_is_the_reference_eval_transform(sample_dir):
    """The converter resizes and crops as the PIL eval transform (bicubic 256, center 224), eagerly and in
    tf.data; keras-hub's plain resize-to-aspect (crop_pct=1) is visibly another transform."""
    import tensorflow as tf

    from keras_evit.preprocessing import decode_image

    files = sorted(f for f in os.listdir(sample_dir) if f.endswith(".JPEG"))[:4]
    converter, plain = EfficientViTImageConverter(), EfficientViTImageConverter(crop_pct=1.0)
    for f in files:
        path = os.path.join(sample_dir, f)
        expected = np.asarray(ke.normalize_images(ke.load_image(path)[None].astype("float32")))
        image = decode_image(path)
        got = np.asarray(converter(image[None].astype("float32")))
        in_tf_data = next(iter(tf.data.Dataset.from_tensors(image).map(converter))).numpy()[None]
        assert got.shape == in_tf_data.shape == expected.shape == (1, 224, 224, 3)
        # bicubic kernels differ in detail (PIL vs TensorFlow): a pixel level or so, ~0.017 normalized
        assert np.abs(got - expected).mean() < 0.01 and np.abs(in_tf_data - expected).mean() < 0.01, f
        assert np.abs(np.asarray(plain(image[None].astype("float32"))) - expected).mean() > 0.1, f


def test_preset_logits_equal_the_builder(imagenet_home, sample_dir):
    """from_preset: the classifier's logits equal EfficientViTM0's from the same cache; a new head for other
    classes keeps the backbone; the preset folder is written once, marked, and reused offline."""
    x = ke.normalize_images(np.stack([ke.load_image(os.path.join(sample_dir, f)) for f in
                                      sorted(os.listdir(sample_dir)) if f.endswith(".JPEG")][:4]).astype("float32"))
    expected = outputs(ke.EfficientViTM0(weights="imagenet", classifier_activation=None,
                                         include_preprocessing=False), x)
    classifier = EfficientViTImageClassifier.from_preset("efficientvit_m0_imagenet")
    classifier.preprocessor = None
    assert np.abs(outputs(classifier, x) - expected).max() <= 1e-5

    folder = preset_dir("efficientvit_m0_imagenet")
    assert os.path.isfile(os.path.join(folder, MARKER)) and os.path.isfile(os.path.join(folder, "task.json"))
    two = EfficientViTImageClassifier.from_preset("efficientvit_m0_imagenet", num_classes=2)
    assert two.output_shape == (None, 2)
    backbone = EfficientViTBackbone.from_preset("efficientvit_m0_imagenet")
    for a, b in zip(backbone.weights, two.backbone.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(Exception):
        EfficientViTBackbone.from_preset("efficientvit_m9_imagenet")


def test_preset_at_another_image_size_equals_the_builder_at_that_size(imagenet_home):
    """image_shape other than the preset's: bias tables resized as the builders resize them, same logits; the
    converter makes images of that size."""
    x = np.random.RandomState(5).randn(2, 160, 192, 3).astype("float32")
    with pytest.warns(UserWarning, match="Resized attention-bias tables"):
        expected = outputs(ke.EfficientViTM0(weights="imagenet", input_shape=(160, 192, 3),
                                             classifier_activation=None, include_preprocessing=False), x)
    with pytest.warns(UserWarning, match="Resized attention-bias tables"):
        clf = EfficientViTImageClassifier.from_preset("efficientvit_m0_imagenet", image_shape=(160, 192, 3))
    assert np.abs(outputs(clf.backbone, x)).max() > 0  # built at the new size
    preprocessor, clf.preprocessor = clf.preprocessor, None
    assert np.abs(outputs(clf, x) - expected).max() <= 1e-5
    assert tuple(preprocessor(np.zeros((1, 300, 400, 3), "float32")).shape) == (1, 160, 192, 3)
    backbone = EfficientViTBackbone.from_preset("efficientvit_m0_imagenet", image_shape=(160, 192, 3))
    assert {k: tuple(v.shape[1:3]) for k, v in backbone.pyramid_outputs.items()} == \
        {"P4": (10, 12), "P5": (5, 6), "P6": (3, 3)}


def test_preset_folder_edited_is_written_again_and_foreign_folder_refused(imagenet_home):
    from keras_evit.hub.presets import resolve_preset

    folder = resolve_preset("efficientvit_m0_imagenet")
    weights = os.path.join(folder, "model.weights.h5")
    with open(weights, "r+b") as f:  # a changed byte: no longer what was written
        f.seek(os.path.getsize(weights) // 2)
        f.write(b"\x00\x01\x02\x03")
    assert resolve_preset("efficientvit_m0_imagenet") == folder
    assert json.load(open(os.path.join(folder, MARKER)))["variant"] == "m0"
    EfficientViTBackbone.from_preset(folder)  # loads again

    foreign = preset_dir("efficientvit_m1_imagenet")
    os.makedirs(foreign)
    open(os.path.join(foreign, "notes.txt"), "w").write("mine")
    with pytest.raises(FileExistsError, match="not written by keras-evit"):
        resolve_preset("efficientvit_m1_imagenet")
    assert open(os.path.join(foreign, "notes.txt")).read() == "mine"
    assert sorted(os.listdir(os.path.dirname(folder))) == ["efficientvit_m0_imagenet", "efficientvit_m1_imagenet"]


SAVED_PRESET = """
import sys, numpy as np
import keras_evit as ke
import keras_evit.hub as hub
clf = hub.EfficientViTImageClassifier.from_preset(sys.argv[1])
images = np.load(sys.argv[2])
np.save(sys.argv[3], clf.predict(images, verbose=0))
print(type(clf).__name__, type(clf.preprocessor.image_converter).__name__)
net = hub.EfficientViTImageClassifier.from_preset("efficientvit_m0_imagenet", preprocessor=None)
builder = ke.EfficientViTM0(weights="imagenet", classifier_activation=None, include_preprocessing=False)
x = ke.normalize_images(images[:, :224, :224])
print("parity", float(np.abs(net.predict(x, verbose=0) - builder.predict(x, verbose=0)).max()))
"""


@pytest.mark.slow  # fresh processes on the other backends
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_saved_preset_loads_offline_on_each_backend(backend, imagenet_home, tmp_path):
    """On JAX and PyTorch, in a new process: the preset's logits equal EfficientViTM0's (same cache), and a folder
    save_to_preset wrote loads offline with the same outputs as the classifier that wrote it. On TensorFlow (this
    process) the folder loads with the writer's outputs; test_preset_logits_equal_the_builder has the parity."""
    require(backend)
    clf = EfficientViTImageClassifier.from_preset("efficientvit_m0_imagenet", num_classes=3)
    for w in clf.weights[-2:]:  # a head of its own, so the copy is checked too
        w.assign(np.random.RandomState(4).randn(*w.shape).astype("float32"))
    folder = str(tmp_path / "my_preset")
    clf.save_to_preset(folder)
    images = np.random.RandomState(2).uniform(0, 255, (2, 250, 300, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}  # the cache, and no server
    proc = subprocess.run([sys.executable, "-c", SAVED_PRESET, folder, str(tmp_path / "images.npy"),
                           str(tmp_path / "out.npy")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "EfficientViTImageClassifier EfficientViTImageConverter" in proc.stdout
    assert float(proc.stdout.split("parity")[1].split()[0]) <= 1e-5
    expected = clf.predict(images, verbose=0)
    assert np.abs(EfficientViTImageClassifier.from_preset(folder).predict(images, verbose=0) - expected).max() <= 1e-5
    # bicubic resampling differs a little between backends; the network itself matches to 1e-5
    assert np.abs(np.load(tmp_path / "out.npy") - expected).max() <= 2e-3


HUB_FIT = """
import sys, keras
import keras_evit.hub as hub
train_dir, out = sys.argv[1], sys.argv[2]
train = keras.utils.image_dataset_from_directory(train_dir, image_size=(256, 256), crop_to_aspect_ratio=True,
                                                 batch_size=16, seed=0)
clf = hub.EfficientViTImageClassifier.from_preset("efficientvit_m0_imagenet", num_classes=len(train.class_names))
clf.backbone.trainable = False
clf.compile(optimizer=keras.optimizers.Adam(1e-2))  # keras-hub's default loss and metric
clf.fit(train.take(3), epochs=1, verbose=2)
clf.save(out)
open(out + ".labels.txt", "w").write("\\n".join(train.class_names) + "\\n")
"""

HUB_PREDICT = """
import sys, numpy as np, keras
import keras_evit as ke
import keras_evit.hub  # noqa: F401  (the classes the file names)
clf = keras.models.load_model(sys.argv[1])
x = np.stack([ke.load_image(f) for f in sys.argv[3:]]).astype("float32")
np.save(sys.argv[2], x)
logits = clf.predict(ke.normalize_images(x), verbose=0)
np.save(sys.argv[2] + ".keras.npy", np.asarray(keras.ops.softmax(logits)))
"""


@pytest.mark.slow  # a fine-tune, a reload, an export and MediaPipe, each in a fresh process
def test_hub_transfer_learning_to_mediapipe(imagenet_home, tmp_path):
    """EfficientViTImageClassifier.from_preset(num_classes=2) fine-tuned with fit on the ants/bees folder,
    saved, exported by `keras-evit export` with the folder's class names, and classified by MediaPipe."""
    from conftest import ants_bees_phone_journey

    out, keras_p, phone_p = ants_bees_phone_journey(tmp_path, HUB_FIT, HUB_PREDICT, 10, ["--verify-limit", "8"])
    # export verified the file itself against Keras to 1e-4; MediaPipe's own image conversion moves this
    # barely-trained model's scores by up to ~1e-2 (the Keras journey in test_keras_ways allows 0.05 too)
    assert "verified on" in out and "PASS" in out, out
    assert np.abs(phone_p - keras_p).max() <= 0.05, (phone_p, keras_p)


@pytest.mark.slow  # trains a RetinaNet and a DeepLabV3 for 20 steps each and converts both: about 3 minutes
def test_detection_and_segmentation_example(tmp_path):
    """The paper's detection setup at toy scale, as a user runs it: the example's own verdict (losses fall,
    the detector reloads with the same outputs, both convert to TFLite with builtin ops only and the files
    give Keras' outputs)."""
    proc = subprocess.run([sys.executable, "-m", "keras_evit.training.examples.detection", "--output",
                           str(tmp_path), "--steps", "20", "--train-images", "16"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert out.count("builtin ops only: yes") == 2 and "reloaded with the same raw outputs: True" in out, out
    assert "segmenter saved to" in out and "reloaded with the same outputs: True" in out, out
    assert "best box" in out and out.rstrip().endswith("OK"), out
    assert out.count("max |TFLite - Keras|") == 2  # each file was run and agreed (the example checks < 1e-3)
    # the weights are in the files (a converter keeping resource variables writes a file without them)
    assert os.path.getsize(tmp_path / "detector.tflite") > 8e6 and os.path.getsize(tmp_path / "segmenter.tflite") > 8e6


@pytest.mark.parametrize("change", [{"depths": [1, 2, 10**6]}, {"embed_dims": [64, 128, 10**7]},
                                    {"num_heads": [4, 4, 40]}, {"kernel_sizes": [5, 5]}, {"depths": [1, 2, "3"]}])
def test_a_crafted_preset_config_is_refused_before_building(tmp_path, change):
    """A preset folder's config.json is read from disk: sizes no EfficientViT-M has are refused by name."""
    backbone = EfficientViTBackbone(**{**M0, "image_shape": (64, 64, 3)})
    folder = str(tmp_path / "preset")
    backbone.save_to_preset(folder)
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    config["config"].update(change)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match=f"{next(iter(change))}=.*not a valid EfficientViT-M config|heads need"):
        EfficientViTBackbone.from_preset(folder)


def _small_classifier():
    """A 3-class M0 classifier at 64 px with its preprocessor: what the crafted-preset tests save and edit."""
    backbone = EfficientViTBackbone(**{**M0, "image_shape": (64, 64, 3)})
    preprocessor = EfficientViTImageClassifierPreprocessor(image_converter=EfficientViTImageConverter(
        image_size=(64, 64)))
    return EfficientViTImageClassifier(backbone, num_classes=3, preprocessor=preprocessor)


@pytest.mark.parametrize("name", ["config.json", "task.json"])
def test_a_preset_json_file_keras_hub_would_block_on_or_choke_on_is_refused_by_name(tmp_path, name):
    """keras-hub parses a preset's config.json and task.json whole, with or without weights: a pipe blocked
    it forever, JSON nested past Python's limit raised RecursionError, and a 38 MB config.json cost 1.6 GB.
    Each is refused by name, also when no weights are loaded; the intact folder loads."""

    intact = str(tmp_path / "preset")
    _small_classifier().save_to_preset(intact)
    cases = {"pipe": (os.mkfifo, "is not a regular file"),
             "nested": (lambda p: open(p, "w").write("[" * 100_000 + "]" * 100_000), "is not valid JSON"),
             "huge": (lambda p: open(p, "w").write(" " * (5 << 20) + "{}"), "more than any EfficientViT model's")}
    for case, (make, message) in cases.items():
        folder = str(tmp_path / case)
        shutil.copytree(intact, folder)
        os.remove(os.path.join(folder, name))
        make(os.path.join(folder, name))
        for load_weights in (True, False):
            error = raised_without_blocking(EfficientViTImageClassifier.from_preset, folder, load_weights=load_weights)
            assert isinstance(error, ValueError) and name in str(error), (case, error)
            assert message in str(error), (case, error)
    assert EfficientViTImageClassifier.from_preset(intact).num_classes == 3


@pytest.mark.slow  # three crafted presets, each loaded three ways: ~20 s
def test_a_sharded_preset_is_checked_shard_by_shard(tmp_path):
    """A preset saved in shards (``save_to_preset(max_shard_size=...)``: a map ``model.weights.json`` and
    ``.weights.h5`` files beside it) loads. One shard declaring 400 MB of empty chunks, a shard that is a pipe,
    or a map naming a file outside the folder is refused by name, through keras-hub's entry points too."""

    clf = _small_classifier()
    intact = str(tmp_path / "preset")
    clf.save_to_preset(intact, max_shard_size=0.002)  # GB: a few shards of 2 MB
    shards = sorted(f for f in os.listdir(intact) if f.endswith(".weights.h5") and f.startswith("model"))
    assert len(shards) > 1 and os.path.isfile(os.path.join(intact, "model.weights.json")), os.listdir(intact)
    images = np.random.RandomState(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    loaded = keras_hub.models.ImageClassifier.from_preset(intact)
    assert np.abs(loaded.predict(images, verbose=0) - clf.predict(images, verbose=0)).max() <= 1e-6

    def crafted(name, edit):
        folder = str(tmp_path / name)
        shutil.copytree(intact, folder)
        edit(folder)
        return folder

    def bomb(folder):
        declare_empty_gzip_dataset(os.path.join(folder, shards[-1]), lambda names: names[-1], (100_000_000,))

    def pipe(folder):
        os.remove(os.path.join(folder, shards[0]))
        os.mkfifo(os.path.join(folder, shards[0]))

    def missing_first(folder):  # a shard the map names but the folder lacks, sorted before the crafted one
        bomb(folder)
        with open(os.path.join(folder, "model.weights.json")) as f:
            config = json.load(f)
        config["weight_map"][next(iter(config["weight_map"]))] = "a_missing.weights.h5"
        with open(os.path.join(folder, "model.weights.json"), "w") as f:
            json.dump(config, f)

    def outside(folder):
        with open(os.path.join(folder, "model.weights.json")) as f:
            config = json.load(f)
        key = next(iter(config["weight_map"]))
        config["weight_map"][key] = "../preset/" + shards[0]
        with open(os.path.join(folder, "model.weights.json"), "w") as f:
            json.dump(config, f)

    cases = [(bomb, f"{shards[-1]}: its datasets declare .* more than this model's"),
             (pipe, f"{shards[0]} is not a regular file"),
             (outside, "model.weights.json is not a map of weights to files beside it")]
    for edit, message in cases:
        folder = crafted(edit.__name__, edit)
        for load in (EfficientViTImageClassifier.from_preset, keras_hub.models.ImageClassifier.from_preset,
                     keras_hub.models.Backbone.from_preset):
            error = raised_without_blocking(load, folder)
            assert isinstance(error, ValueError) and re.search(message, str(error)), (edit.__name__, error)
    from keras_evit.hub.presets import check_weights_before_load

    # keras-hub refuses a preset whose map names a missing file; a user's own load_weights of such a map is
    # left to Keras for the missing file, and every shard there is still checked
    folder = crafted("missing_first", missing_first)
    with pytest.raises(ValueError, match=f"{shards[-1]}: its datasets declare .* more than this model's"):
        check_weights_before_load(clf, os.path.join(folder, "model.weights.json"))

    for weight_map in ([shards[0]], {"a": 3}, {"a": [shards[0], None]}, {"a": ""}):  # not a map of file names
        path = tmp_path / "odd.weights.json"
        path.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        with pytest.raises(ValueError, match="odd.weights.json is not a map of weights to files beside it"):
            check_weights_before_load(clf, str(path))


def test_a_preset_whose_weights_declare_more_than_its_model_is_refused_before_reading(tmp_path):
    """A preset folder's weights file (the backbone's or the task's) whose dataset declares 400 MB of empty
    gzip chunks (a few KB on disk) is refused from its metadata, against the model its config describes;
    keras-hub read it whole before (a 1.6 GB declaration cost 6.2 GB). The same folder, intact, loads with
    its outputs."""
    clf = _small_classifier()
    intact = str(tmp_path / "preset")
    clf.save_to_preset(intact)
    images = np.random.RandomState(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    expected = clf.predict(images, verbose=0)
    loaded = EfficientViTImageClassifier.from_preset(intact)
    assert np.abs(loaded.predict(images, verbose=0) - expected).max() <= 1e-6
    keras_file = str(tmp_path / "clf.keras")  # the same classifier as a .keras file: checked, then loaded
    clf.save(keras_file)
    from keras_evit.weights.artifacts import load_keras_file
    assert np.abs(load_keras_file(keras_file).predict(images, verbose=0) - expected).max() <= 1e-6
    for weights_file in ("model.weights.h5", "task.weights.h5"):
        folder = str(tmp_path / weights_file.split(".")[0])
        shutil.copytree(intact, folder)
        declare_empty_gzip_dataset(os.path.join(folder, weights_file), lambda names: names[-1], (100_000_000,))
        assert os.path.getsize(os.path.join(folder, weights_file)) < 20 << 20
        # keras-hub's own entry points find our classes from the config and load the weights through
        # load_weights / load_task_weights, not through our from_preset: checked there too
        loaders = [EfficientViTImageClassifier.from_preset, keras_hub.models.ImageClassifier.from_preset]
        if weights_file == "model.weights.h5":  # a backbone reads only model.weights.h5
            loaders += [EfficientViTBackbone.from_preset, keras_hub.models.Backbone.from_preset]
        for load in loaders:
            with pytest.raises(ValueError, match=f"{weights_file}: its datasets declare .* more than this model's"):
                load(folder)
