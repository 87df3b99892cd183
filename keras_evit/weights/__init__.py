"""Weight loading: ``None``, ``"imagenet"``, or a path to .weights.h5 / .safetensors / .pth / .npz."""

import os

from .checkpoint import CheckpointError, read_checkpoint
from .convert import assign_state_dict, guess_variant, resize_bias_table, state_dict_from_model
from .download import cache_dir, cached_weights_path, get_imagenet_weights, weights_url
from .keymap import normalize_keys

__all__ = [
    "CheckpointError", "assign_state_dict", "cache_dir", "cached_weights_path", "get_imagenet_weights",
    "guess_variant", "load_weights", "normalize_keys", "read_checkpoint", "resize_bias_table",
    "state_dict_from_model", "weights_url",
]


def _keras_weights_state(path, variant):
    """State dict of a .weights.h5 saved from a full 224 px model of ``variant``."""
    from ..models import build_model

    reference = build_model(variant, weights=None, classifier_activation=None)
    reference.load_weights(path)
    return state_dict_from_model(reference)


def load_weights(model, weights, variant):
    """Loads ``weights`` into ``model``; a file at another resolution or without head is adapted."""
    if weights is None:
        return
    if weights == "imagenet":
        path, source = get_imagenet_weights(variant), f"cached ImageNet weights of efficientvit_{variant}"
    else:
        path, source = os.fspath(weights), os.fspath(weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"weights file not found: {path!r}. Pass weights=None, 'imagenet', or a path to a "
                ".weights.h5, .safetensors, .pth or .npz file.")
    if path.endswith(".weights.h5"):
        try:
            model.load_weights(path)
            return
        except Exception as direct_error:  # other input size / head: go through the state dict
            try:
                state = _keras_weights_state(path, variant)
            except Exception:
                raise CheckpointError(
                    f"{source} does not fit {model.name}: {direct_error}") from direct_error
    else:
        state = read_checkpoint(path)
    assign_state_dict(model, state, variant=variant, source=source)
