"""timm-named state dicts <-> Keras models: validation, layout transforms, bias-table resizing."""

import math
import warnings

import numpy as np

from ..configs import VARIANTS
from .checkpoint import CheckpointError
from .keymap import model_variables, normalize_keys, to_keras_layout, to_torch_layout


def _cubic(x, a=-0.5):
    x = np.abs(x)
    return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def _resample_matrix(in_size, out_size):
    """Antialiased bicubic weights (PIL / torch ``antialias=True``), shape (out, in)."""
    scale = in_size / out_size
    support_scale = max(scale, 1.0)
    support = 2.0 * support_scale
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = _cubic((np.arange(lo, hi) - center + 0.5) / support_scale)
        weights[i, lo:hi] = taps / taps.sum()
    return weights


def resize_bias_table(table, resolution):
    """(heads, r1*r1) -> (heads, r2*r2), bicubic as timm's ``resize_rel_pos_bias_table_levit``."""
    table = np.asarray(table, np.float64)
    heads, length = table.shape
    old = int(round(math.sqrt(length)))
    if old * old != length:
        raise CheckpointError(f"attention-bias table of length {length} is not a square window")
    if old == resolution:
        return table.astype(np.float32)
    m = _resample_matrix(old, resolution)
    grid = table.reshape(heads, old, old)
    out = np.einsum("ij,hjk,lk->hil", m, grid, m)
    return out.reshape(heads, resolution * resolution).astype(np.float32)


def guess_variant(state):
    """The variant whose shapes a (timm-named) state dict has, or None."""
    try:
        e1 = state["patch_embed.conv4.conv.weight"].shape[0]
        dims = (e1, state["stages.1.downsample.patchmerge.conv3.conv.weight"].shape[0],
                state["stages.2.downsample.patchmerge.conv3.conv.weight"].shape[0])
        heads = tuple(state[f"stages.{s}.blocks.0.mixer.m.attn.attention_biases"].shape[0] for s in range(3))
        depths = tuple(len({k.split(".")[3] for k in state if k.startswith(f"stages.{s}.blocks.")})
                       for s in range(3))
    except (KeyError, IndexError, AttributeError):
        return None
    for key, cfg in VARIANTS.items():
        if cfg.embed_dims == dims and cfg.num_heads == heads and cfg.depths == depths:
            return key
    return None


def _summary(label, items, limit=5):
    shown = "; ".join(items[:limit])
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return f"{len(items)} {label}: {shown}{more}"


def _checked_array(key, value, source):
    """``value`` as a floating-point array, all finite, or a CheckpointError naming the tensor."""
    array = np.asarray(value)
    if array.dtype.name == "bfloat16":  # ml_dtypes' bfloat16, as the readers give it without torch
        array = array.astype(np.float32)
    if array.dtype.kind != "f":
        raise CheckpointError(f"{source}: tensor {key} holds {array.dtype} values, not floating-point weights "
                              "(a quantized or corrupt checkpoint?): refused; load the float checkpoint")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise CheckpointError(f"{source}: tensor {key} has {bad} non-finite value(s) (NaN/Inf): the weights are "
                              "corrupt or the training run diverged; nothing was loaded")
    return array


def _mismatch(model, state, variant, source, missing, bad_shape, unexpected):
    """The CheckpointError for a state dict that does not fit ``model``, with the likely cause."""
    problems = []
    if missing:
        problems.append(_summary("tensors missing from the " + source, missing))
    if bad_shape:
        problems.append(_summary("tensors with the wrong shape", bad_shape))
    if unexpected:
        problems.append(_summary("unexpected tensors", unexpected))
    found = guess_variant(state)
    hint = ""
    if found and variant and found != variant:
        hint = f" The file holds efficientvit_{found} weights, not efficientvit_{variant}: use the matching model."
    elif any(k.startswith("head.linear") for k in bad_shape):
        hint = " The classifier size differs: use include_top=False, or classes equal to the file's."
    return CheckpointError(f"{source} does not match {model.name}: " + " | ".join(problems) + "." + hint)


def assign_state_dict(model, state, variant=None, allow_resize=True, source="checkpoint", new_head=False,
                      layout="torch"):
    """Validate every tensor name and shape, then assign all of them (nothing is set on error).

    ``state`` is keyed by timm names, its arrays in PyTorch's layout (``layout="torch"``, any checkpoint) or
    already in the model's (``layout="keras"``, read from another Keras model: nothing is transposed).

    Head tensors are skipped when the model has no head, and with ``new_head`` (the model's own head keeps
    its initial values, as timm's ``reset_classifier``). Attention-bias tables trained at another window
    size are resized bicubically (with a warning) when ``allow_resize``.
    """
    state = normalize_keys(state)
    targets = model_variables(model)
    if new_head:
        targets = {k: v for k, v in targets.items() if not k.startswith("head.")}
    has_head = any(k.startswith("head.") for k in targets)
    missing, bad_shape, resized, values = [], [], [], {}
    for key, (var, kind) in targets.items():
        if key not in state:
            missing.append(key)
            continue
        array = _checked_array(key, state[key], source)
        if key.endswith("attention_biases") and array.ndim == 2 and array.shape[0] == var.shape[0] \
                and array.shape[1] != var.shape[1] and allow_resize:
            new_res = int(round(math.sqrt(var.shape[1])))
            resized.append(f"{key} {array.shape[1]}->{var.shape[1]}")
            array = resize_bias_table(array, new_res)
        if layout == "torch":
            try:
                array = to_keras_layout(array, kind)
            except ValueError:
                pass
        if tuple(array.shape) != tuple(var.shape):
            bad_shape.append(f"{key} {tuple(np.shape(state[key]))} vs model {tuple(var.shape)}")
            continue
        values[key] = array
    unexpected = [k for k in state if k not in targets and not (k.startswith("head.") and not has_head)]
    if missing or bad_shape or unexpected:
        raise _mismatch(model, state, variant, source, missing, bad_shape, unexpected)
    for key, array in values.items():
        var = targets[key][0]
        var.assign(array.astype(var.dtype))
    if resized:
        warnings.warn("Resized attention-bias tables (bicubic) for this input size: " + ", ".join(resized),
                      stacklevel=2)
    return resized


def state_dict_from_model(model, with_bn_counters=True, layout="torch"):
    """The model's weights as a timm-named state dict: in PyTorch's layout (loadable by timm), or as the
    model holds them (``layout="keras"``, for ``assign_state_dict(..., layout="keras")``)."""
    out = {}
    for key, (var, kind) in model_variables(model).items():
        value = np.asarray(var.numpy())
        out[key] = np.ascontiguousarray(to_torch_layout(value, kind) if layout == "torch" else value)
        if with_bn_counters and key.endswith(".bn.running_var"):
            out[key.replace("running_var", "num_batches_tracked")] = np.array(0, np.int64)
    return out
