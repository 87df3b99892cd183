"""The ``efficientvit_m0_imagenet`` .. ``m5`` presets: keras-hub metadata, and a preset folder made once in
the weights cache from the verified official release, so every later ``from_preset`` is keras-hub's own
offline load of that folder."""

import json
import os
import shutil
import tempfile

from ..configs import VARIANTS
from ..weights.download import cache_dir, hashable, sha256_of

# count_params() of each backbone (BatchNorm statistics included), as keras-hub reports it
_BACKBONE_PARAMS = {"m0": 2184324, "m1": 2819016, "m2": 3999642, "m3": 6627466, "m4": 8472700, "m5": 12161492}

PRESETS = {
    f"efficientvit_{v}_imagenet": {
        "metadata": {
            "description": (f"EfficientViT-{v.upper()} (Liu et al., CVPR 2023) trained on ImageNet-1k at 224x224 "
                            f"by its authors; {cfg.top1}% top-1. Converted from the official release."),
            "params": _BACKBONE_PARAMS[v],
            "path": "efficientvit",
        },
        "variant": v,
    }
    for v, cfg in VARIANTS.items()
}

MARKER = "keras_evit_preset.json"  # written last: names the variant and the weights' SHA-256


class PresetsProperty:
    """``cls.presets`` as in keras-hub: {name: preset} for the class, read without an instance."""

    def __get__(self, instance, owner):
        return dict(PRESETS)


def preset_dir(name):
    return os.path.join(cache_dir(), "presets", name)


def _weight_files(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".weights.h5"))


def _intact(folder):
    """True when ``folder`` is a preset this module finished writing and its weights are unchanged."""
    from ..regular_file import read_regular

    try:
        recorded = json.loads(read_regular(os.path.join(folder, MARKER), 1 << 20))["sha256"]  # ours: ~300 bytes
        weights = [os.path.join(folder, name) for name in _weight_files(folder)]
        if not all(hashable(w) for w in weights):
            return False
        return recorded == {os.path.basename(w): sha256_of(w) for w in weights}
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return False


def _write_preset(name, folder):
    import keras

    from ..weights.pretrained import load_weights

    # the classes, by their registered names: they import this module for from_preset
    cls = {n: keras.saving.get_registered_object(f"keras_evit>{n}") for n in
           ("EfficientViTBackbone", "EfficientViTImageClassifier", "EfficientViTImageClassifierPreprocessor",
            "EfficientViTImageConverter")}
    variant = PRESETS[name]["variant"]
    cfg = VARIANTS[variant]
    backbone = cls["EfficientViTBackbone"](cfg.embed_dims, cfg.depths, cfg.num_heads, cfg.kernels)
    preprocessor = cls["EfficientViTImageClassifierPreprocessor"](image_converter=cls["EfficientViTImageConverter"]())
    classifier = cls["EfficientViTImageClassifier"](backbone, num_classes=1000, preprocessor=preprocessor)
    load_weights(classifier, "imagenet", variant)  # the verified, cached official weights
    classifier.save_to_preset(folder)
    record = {"preset": name, "variant": variant,
              "sha256": {f: sha256_of(os.path.join(folder, f)) for f in _weight_files(folder)}}
    with open(os.path.join(folder, MARKER), "w") as f:
        json.dump(record, f, indent=1)


# (config file, the weights file keras-hub reads into the model that config describes)
PRESET_WEIGHTS = (("config.json", "model.weights.h5"), ("task.json", "task.weights.h5"))


def check_preset(folder, load_weights=True):
    """Refuses (ValueError) a preset folder on disk before keras-hub reads it.

    keras-hub parses the JSON files it reads whole (a 38 MB config.json cost 1.6 GB, a pipe blocked it, deep
    nesting raised RecursionError): each JSON file must be a regular file of at most ``MAX_CONFIG_BYTES``
    holding a JSON object. With ``load_weights``, its weights files must not declare more than the models
    its config files describe: keras-hub reads every dataset whole before it compares shapes, so a few KB of
    crafted weights file made it allocate GBs. Each model is built from its config with no variable
    allocated (``keras_evit.weights.keras_archive``). The built-in presets (verified by their SHA-256), a
    remote handle and a missing folder are left to keras-hub."""
    from ..regular_file import FileTooLarge, NotRegularFile, read_regular
    from ..weights.keras_archive import (MAX_CONFIG_BYTES, check_config_size, check_weights_file, parse_config,
                                         weights_budget)

    if isinstance(folder, str) and folder in PRESETS:
        return
    if not (isinstance(folder, (str, os.PathLike)) and os.path.isdir(folder)):
        return
    fix = "The preset is crafted or corrupt: save it again (save_to_preset) or download it again."
    configs = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not name.endswith(".json"):
            continue
        try:
            configs[name] = parse_config(read_regular(path, MAX_CONFIG_BYTES), path)
        except NotRegularFile:
            raise ValueError(f"{path} is not a regular file (a folder, pipe or device): refused. {fix}") from None
        except FileTooLarge as exc:
            check_config_size(exc.size, path)  # raises, saying what the limit is for
        except OSError as exc:
            raise ValueError(f"{path} is not a readable preset file ({exc})") from None
    if not load_weights:
        return
    for config_name, weights_name in PRESET_WEIGHTS:
        config_path, weights_path = os.path.join(folder, config_name), os.path.join(folder, weights_name)
        if config_name in configs and os.path.isfile(weights_path):
            _, budget = weights_budget(configs[config_name], config_path, fix)
            check_weights_file(weights_path, budget, weights_path, fix)


def check_weights_before_load(model, filepath):
    """Refuses (ValueError) a weights file for ``model`` that is not a regular file, or whose datasets declare
    more than ``model``'s weights could take, before Keras reads it: Keras reads every dataset whole before it
    compares shapes. keras-hub's own entry points (``keras_hub.models.ImageClassifier.from_preset``,
    ``keras_hub.models.Backbone.from_preset``, local folders and downloaded ``hf://`` or ``kaggle://`` presets
    alike) load a preset's weights through ``load_weights`` and ``load_task_weights``, never through our
    ``from_preset``: there a ``model.weights.h5`` no larger than the real one, one dataset re-declared as 400 MB
    of empty chunks, cost 1.6 GB. A sharded ``.weights.json`` is checked shard by shard against the same budget.
    Other paths are left to Keras."""
    from ..regular_file import NotRegularFile, open_regular, read_regular
    from ..weights.keras_archive import DATASETS_PER_WEIGHT, MAX_CONFIG_BYTES, parse_config
    from ..weights.keras_h5 import check_declared_sizes, variable_bytes

    path = os.fspath(filepath)
    fix = ("The weights are crafted or corrupt: save them again (save_to_preset, save_weights) or download them "
           "again.")
    budget = DATASETS_PER_WEIGHT * variable_bytes(model.weights) + (1 << 20)
    if path.endswith(".weights.h5"):
        shards = [path]
    elif path.endswith(".weights.json"):  # Keras' sharded weights: a map of variables to .weights.h5 files
        try:
            weight_map = parse_config(read_regular(path, MAX_CONFIG_BYTES), path).get("weight_map")
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise ValueError(f"{exc}: refused. {fix}") from None
        values = list(weight_map.values()) if isinstance(weight_map, dict) else [None]
        names = {n for v in values for n in ([v] if isinstance(v, str) else v if isinstance(v, list) else [None])}
        if not all(isinstance(n, str) and n and os.path.basename(n) == n for n in names):
            raise ValueError(f"{path} is not a map of weights to files beside it: refused. {fix}")
        shards = [os.path.join(os.path.dirname(path), n) for n in sorted(names)]
    else:
        return
    total = 0
    for shard in shards:
        try:
            open_regular(shard).close()  # h5py would block on a pipe
        except FileNotFoundError:
            continue  # Keras says which file is missing; the others are still checked
        except NotRegularFile as exc:
            raise ValueError(f"{exc}: refused. {fix}") from None
        try:
            total += check_declared_sizes(shard, budget - total, shard)
        except ValueError as exc:
            raise ValueError(f"{exc}. {fix}") from None


def resolve_preset(preset):
    """A built-in preset name -> its folder in the cache (written on first use); anything else unchanged."""
    if not isinstance(preset, str) or preset not in PRESETS:
        return preset
    final = preset_dir(preset)
    if _intact(final):
        return final
    if os.path.lexists(final):
        if not os.path.isfile(os.path.join(final, MARKER)):
            raise FileExistsError(f"{final} exists but was not written by keras-evit (no {MARKER}): move it "
                                  f"away, and the {preset} preset will be written there again")
        shutil.rmtree(final)  # ours, but its weights changed since: written again below
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{preset}.", dir=os.path.dirname(final))
    try:
        _write_preset(preset, tmp)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if not _intact(final):  # else another process finished the same preset first
            raise
    return final
