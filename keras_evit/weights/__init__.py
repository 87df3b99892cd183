"""Weights: checkpoint readers, the weight-name map, layout conversion and the download cache (weights as
data, no model built), ``pretrained`` (weights into a model) and ``artifacts`` (what ``--weights`` names:
checkpoint, ``.keras`` file or run folder -> model and class names).
"""

from .checkpoint import CheckpointError, read_checkpoint
from .convert import assign_state_dict, guess_variant, resize_bias_table, state_dict_from_model
from .download import cache_dir, cached_weights_path, weights_url
from .keras_h5 import guess_keras_weights_variant
from .keymap import normalize_keys

__all__ = [
    "CheckpointError", "assign_state_dict", "cache_dir", "cached_weights_path", "guess_keras_weights_variant",
    "guess_variant", "normalize_keys", "read_checkpoint", "resize_bias_table", "state_dict_from_model",
    "weights_url",
]
