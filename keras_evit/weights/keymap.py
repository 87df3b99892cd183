"""The one place that knows weight names: official (Cream) keys, timm keys, Keras variable paths.

Keras sublayers are named after timm modules, with "-" where timm has "." (Keras on PyTorch keeps
variables in a ``torch.nn.ParameterDict``, whose keys cannot hold "."), so a Keras variable path maps to
a timm key by one rule: '/' and '-' become '.', and the leaf is renamed (kernel -> weight, ...). Paths
of models saved before the rename (with '.') map the same way.
"""

import re

import keras
import numpy as np

from ..compat import sublayers
from .checkpoint import CheckpointError

_LEAF = {"kernel": "weight", "gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
         "moving_variance": "running_var", "bias": "bias", "attention_biases": "attention_biases"}

# official stem Sequential index -> timm conv name (ReLUs sit at the odd indices)
_OFFICIAL_STEM = {"0": "conv1", "2": "conv2", "4": "conv3", "6": "conv4"}


def keras_path_to_timm(path):
    *scopes, leaf = path.split("/")
    if leaf not in _LEAF:
        raise KeyError(f"no timm name for Keras variable {path!r}")
    return ".".join([s.replace("-", ".") for s in scopes] + [_LEAF[leaf]])


def official_to_timm(key):
    """Official checkpoint key -> timm key (docs/ARCHITECTURE.md, "Weight names"); None for tensors timm does
    not keep."""
    if key.endswith("attention_bias_idxs") or key.startswith("head_dist."):
        return None
    parts = key.split(".")
    parts = ["conv" if p == "c" else p for p in parts]
    if parts[:2] == ["head", "l"]:
        parts[1] = "linear"
    if parts[0] == "patch_embed" and parts[1] in _OFFICIAL_STEM:
        parts = ["patch_embed", _OFFICIAL_STEM[parts[1]]] + parts[2:]
    match = re.fullmatch(r"blocks([123])", parts[0])
    if match and (len(parts) < 3 or not parts[1].isdigit()):
        return key  # not a block's tensor: left as it is, so that it is reported as unexpected
    if match:
        stage = int(match.group(1)) - 1
        j = int(parts[1])
        if stage == 0:
            parts = ["stages", "0", "blocks", str(j)] + parts[2:]
        elif j == 0:
            parts = ["stages", str(stage), "downsample", "res1"] + parts[2:]
        elif j == 1:
            parts = ["stages", str(stage), "downsample", "patchmerge"] + parts[2:]
        elif j == 2:
            parts = ["stages", str(stage), "downsample", "res2"] + parts[2:]
        else:
            parts = ["stages", str(stage), "blocks", str(j - 3)] + parts[2:]
    return ".".join(parts)


def is_official_format(keys):
    return any(k.startswith(("blocks1.", "patch_embed.0.")) for k in keys)


def normalize_keys(state):
    """Any known checkpoint layout -> {timm key: array}, dropping buffers that are rebuilt."""
    for wrapper in ("model", "state_dict", "model_ema"):
        if wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
            break
    bad = [k for k in state if not isinstance(k, str)]
    if bad:
        raise CheckpointError(f"the checkpoint's state dict has a key {bad[0]!r} of type {type(bad[0]).__name__}: "
                              "tensor names are strings (not a model state dict?)")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    official = is_official_format(state)
    out = {}
    for key, value in state.items():
        if key.endswith(("num_batches_tracked", "attention_bias_idxs")):
            continue
        new = official_to_timm(key) if official else key
        if new is not None:
            out[new] = value
    return out


def variable_kinds(model):
    """id(variable) -> layout kind: 'conv', 'dwconv' or 'dense' kernels; 'plain' otherwise."""
    kinds = {}
    for layer in sublayers(model):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kinds[id(layer.kernel)] = "dwconv"
        elif isinstance(layer, keras.layers.Conv2D):
            kinds[id(layer.kernel)] = "conv"
        elif isinstance(layer, keras.layers.Dense):
            kinds[id(layer.kernel)] = "dense"
    return kinds


def model_variables(model):
    """{timm key: (keras variable, layout kind)} for every weight of an EfficientViT model."""
    kinds = variable_kinds(model)
    out = {}
    for var in model.weights:
        try:
            key = keras_path_to_timm(var.path)
        except KeyError:
            continue  # a variable a user added (optimizer-free extra layers) has no timm name
        out[key] = (var, kinds.get(id(var), "plain"))
    return out


def to_keras_layout(array, kind):
    array = np.asarray(array)
    if kind in ("conv", "dwconv") and array.ndim == 2:
        array = array[:, :, None, None]  # 1x1 conv stored as (out, in): accepted, as official build.py does
    if kind == "conv":
        return array.transpose(2, 3, 1, 0)
    if kind == "dwconv":
        return array.transpose(2, 3, 0, 1)
    if kind == "dense":
        return array.T
    return array


def to_torch_layout(array, kind):
    array = np.asarray(array)
    if kind == "conv":
        return array.transpose(3, 2, 0, 1)
    if kind == "dwconv":
        return array.transpose(2, 3, 0, 1)
    if kind == "dense":
        return array.T
    return array


def timm_to_official(key):
    """timm key -> official (Cream) key; the inverse of :func:`official_to_timm`."""
    parts = key.split(".")
    if len(parts) >= 2 and parts[-2] == "conv":
        parts[-2] = "c"
    if parts[:2] == ["head", "linear"]:
        parts[1] = "l"
    if parts[0] == "patch_embed":
        stem = {v: k for k, v in _OFFICIAL_STEM.items()}
        parts = ["patch_embed", stem[parts[1]]] + parts[2:]
    if parts[0] == "stages":
        stage, kind = int(parts[1]), parts[2]
        name = f"blocks{stage + 1}"
        if kind == "blocks":
            index = int(parts[3]) + (3 if stage > 0 else 0)
            parts = [name, str(index)] + parts[4:]
        else:
            index = {"res1": 0, "patchmerge": 1, "res2": 2}[parts[3]]
            parts = [name, str(index)] + parts[4:]
    return ".".join(parts)
