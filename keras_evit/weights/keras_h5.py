"""What a Keras ``.weights.h5`` file holds, read without building a model (for error messages)."""

import re

from ..configs import VARIANTS


def _blocks(layers):
    """(dim, heads) of each EfficientViTBlock group, in build order (Keras names them by class)."""
    found = []
    for name in layers:
        match = re.fullmatch(r"efficient_vi_t_block(?:_(\d+))?", name)
        if not match:
            continue
        group = layers[name]
        dim = group["dw0/bn/vars/0"].shape[0]
        heads = group["mixer/attn/vars/0"].shape[0]
        found.append((int(match.group(1) or 0), dim, heads))
    return [(dim, heads) for _, dim, heads in sorted(found)]


def guess_keras_weights_variant(path):
    """The variant whose blocks a ``.weights.h5`` file holds, or None (unreadable, or not ours)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            blocks = _blocks(f["layers"])
    except (OSError, KeyError, ValueError, TypeError):
        return None
    for key, cfg in VARIANTS.items():
        expected = [(dim, heads) for dim, depth, heads in zip(cfg.embed_dims, cfg.depths, cfg.num_heads)
                    for _ in range(depth)]
        if blocks == expected:
            return key
    return None
