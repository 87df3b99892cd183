"""What a ``.keras`` archive declares, checked before Keras builds or reads any of it.

Keras builds the model its config.json describes, allocating every variable, and then reads each weight
from the archive's ``model.weights.h5`` whole: a few MB of crafted file (a head of 500,000 classes in the
config, a dataset declaring GBs of empty gzip chunks in the weights) made it allocate gigabytes before it
found the mismatch. Here the model is built from the config with its variables unallocated, and the
archive must hold those weights: its weights file at least their size, its datasets at most a few times it.
"""

import copy
import io
import json
import os
import sys
import zipfile

from .keras_h5 import check_declared_sizes, variable_bytes
from .zip_directory import open_zip

CONFIG_MEMBER = "config.json"
WEIGHTS_MEMBER = "model.weights.h5"
MAX_CONFIG_BYTES = 4 << 20  # a keras_evit model's config, wrapped in a user's model: tens of KB
MAX_WEIGHT_BYTES = 1 << 30  # M5 with a 1000-class head: 50 MB
MAX_INFLATION = 64  # Keras stores its archive's members uncompressed
DATASETS_PER_WEIGHT = 8  # the weights, a saved optimizer's slots, float64 copies: all within 8x


def _member(archive, name, path):
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    if info.compress_size and info.file_size > MAX_INFLATION * info.compress_size:
        raise ValueError(f"{path}: its {name} inflates {info.file_size // info.compress_size}x (a zip bomb?): "
                         "refused. Re-save the model with Keras (model.save).")
    return info


def check_config_size(size, source):
    """Refuses a config file of ``size`` bytes over ``MAX_CONFIG_BYTES`` (before it is read)."""
    if size > MAX_CONFIG_BYTES:
        raise ValueError(f"{source} is {size:,} bytes, more than any EfficientViT model's ({MAX_CONFIG_BYTES:,}): "
                         "refused")


def parse_config(text, source):
    """A config file's text -> its dict, refused (ValueError naming ``source``) when not JSON, nested past
    Python's limit (json raises RecursionError) or not an object."""
    try:
        config = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{source} is not valid JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{source} holds no model config")
    return config


def read_config(path, name=None):
    """The archive's config.json, refused (ValueError) when missing, over ``MAX_CONFIG_BYTES`` or not JSON.
    ``name``: what messages call the file (the user's path, where ``path`` is a pinned one)."""
    path, name = os.fspath(path), name or os.fspath(path)
    source = f"{name}: its {CONFIG_MEMBER}"
    try:
        with open_zip(path, name=name) as archive:
            info = _member(archive, CONFIG_MEMBER, name)
            if info is None:
                raise ValueError(f"{name} has no {CONFIG_MEMBER}: not a Keras model archive")
            check_config_size(info.file_size, source)
            with archive.open(info) as f:
                text = f.read(MAX_CONFIG_BYTES + 1)
    except (OSError, zipfile.BadZipFile, RuntimeError, EOFError, NotImplementedError) as exc:
        raise ValueError(f"{name} is not a readable .keras archive ({type(exc).__name__}: {exc})") from exc
    return parse_config(text, source)


def _tasks_not_compiling(config):
    """``config``, or a copy of it in which every keras-hub task is made with ``compile=False``: a task compiles
    itself when made, and the optimizer that makes is a variable no stateless build may create."""
    task = getattr(sys.modules.get("keras_hub.models"), "Task", None)  # none can be built without keras-hub
    if task is None:
        return config
    import keras

    def walk(node):
        if isinstance(node, dict):
            name = node.get("registered_name")
            cls = keras.saving.get_registered_object(name) if isinstance(name, str) else None
            if isinstance(cls, type) and issubclass(cls, task) and isinstance(node.get("config"), dict):
                node["config"]["compile"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    config = copy.deepcopy(config)
    walk(config)
    return config


def declared_weight_bytes(config, source):
    """Bytes of the variables of the model ``config`` describes, from a build that allocates none of them;
    ``source`` names the config in errors."""
    from ..compat import model_from_config_without_allocating

    try:
        _, variables = model_from_config_without_allocating(_tasks_not_compiling(config))
    except Exception as exc:  # Keras raises many types for a config it cannot build
        raise ValueError(f"{source} does not describe a model Keras can build "
                         f"({type(exc).__name__}: {str(exc)[:300]})") from None
    return variable_bytes(variables)


def weights_budget(config, source, fix):
    """(bytes of the weights of the model ``config`` describes, the most its weights file may declare),
    refused (ValueError) over ``MAX_WEIGHT_BYTES``."""
    needed = declared_weight_bytes(config, source)
    if needed > MAX_WEIGHT_BYTES:
        raise ValueError(f"{source} declares {needed:,} bytes of weights, more than {MAX_WEIGHT_BYTES:,} (an "
                         f"EfficientViT-M5 holds 50 MB): refused. {fix}")
    return needed, DATASETS_PER_WEIGHT * needed + (1 << 20)


def check_weights_file(weights, budget, source, fix):
    """``check_declared_sizes`` of a weights file (a path or a file object) against ``budget``, its refusal
    followed by ``fix``."""
    try:
        check_declared_sizes(weights, budget, source)
    except ValueError as exc:
        raise ValueError(f"{exc}. {fix}") from None


def check_archive(path, config, name=None):
    """Refuses (ValueError) an archive whose config declares more weights than its weights file holds or than
    ``MAX_WEIGHT_BYTES``, or whose weights file declares far more than the model's weights. ``name``: as in
    ``read_config``."""
    path, name = os.fspath(path), name or os.fspath(path)
    fix = "The file is crafted or corrupt: re-save the model with Keras (model.save) or download it again."
    needed, budget = weights_budget(config, f"{name}: its {CONFIG_MEMBER}", fix)
    if needed == 0:
        return
    try:
        with open_zip(path, name=name) as archive:
            info = _member(archive, WEIGHTS_MEMBER, name)
            if info is None or not needed <= info.file_size <= budget:
                holds = "no weights file" if info is None else f"a weights file of {info.file_size:,} bytes"
                raise ValueError(f"{name}: its {CONFIG_MEMBER} declares {needed:,} bytes of weights, but the "
                                 f"archive holds {holds}: refused. {fix}")
            # read whole (at most a few times the model's weights): HDF5 seeks back and forth, which a zip
            # member answers by reading it again from its start
            with archive.open(info) as member:
                weights = io.BytesIO(member.read(info.file_size + 1))
    except (OSError, zipfile.BadZipFile, RuntimeError, EOFError, NotImplementedError) as exc:
        raise ValueError(f"{name} is not a readable .keras archive ({type(exc).__name__}: {exc})") from exc
    check_weights_file(weights, budget, f"{name} (its {WEIGHTS_MEMBER})", fix)
