"""The paper's head-diversity measurement (Fig. 4) as a Keras feature: attention maps per block and head.

``attention_maps(model, images)`` records every window-attention layer's per-head maps during one
forward pass (the outputs are unchanged); ``head_similarity(maps)`` is the paper's metric: for each head,
the largest cosine similarity of its attention map to any other head's in the same block, averaged.
"""

import numpy as np
from keras import ops

from .compat import sublayers
from .layers import EfficientViTBlock


def attention_blocks(model):
    """[(block name, its LocalWindowAttention)] in forward order, in ``model`` or the models it calls."""
    return [(layer.name, layer.mixer) for layer in sublayers(model) if isinstance(layer, EfficientViTBlock)]


def attention_maps(model, images):
    """{block name: array (batch, windows down, windows across, heads, N, N)} for ``images`` (as the
    model takes them). Each row of a map is one query token's softmax over the window's N tokens."""
    blocks = attention_blocks(model)
    if not blocks:
        raise ValueError(f"{model.name} has no EfficientViT blocks to read attention maps from")
    for _, lwa in blocks:
        lwa.capture.maps = []
    try:
        model(images, training=False)
        return {name: np.asarray(ops.convert_to_numpy(lwa.capture.maps[-1])) for name, lwa in blocks}
    finally:
        for _, lwa in blocks:
            lwa.capture.maps = None


def head_similarity(maps):
    """Average over heads (and images) of each head's maximum cosine similarity to another head of
    the same block: the paper's Fig. 4 metric (lower = more diverse heads). ``maps``: one block's
    (batch, windows down, windows across, heads, N, N) array; NaN for a single-head block."""
    maps = np.asarray(maps, np.float64)
    batch, heads = maps.shape[0], maps.shape[3]
    if heads < 2:
        return float("nan")
    flat = np.moveaxis(maps, 3, 1).reshape(batch, heads, -1)  # each head's maps, all windows
    flat = flat / np.maximum(np.linalg.norm(flat, axis=-1, keepdims=True), 1e-12)
    cosine = np.einsum("bhd,bgd->bhg", flat, flat)
    cosine[:, np.arange(heads), np.arange(heads)] = -np.inf  # exclude a head's similarity to itself
    return float(cosine.max(axis=-1).mean())


def stitch_windows(block_maps, height, width, query=None):
    """(batch, heads, height, width) attention pictures on the block's feature grid: for each token, the
    attention it receives (mean over its window's queries), or, with ``query`` (row, col), the map of
    that query token, windows stitched back to the grid and the zero padding cropped."""
    maps = np.asarray(block_maps)
    batch, nh, nw, heads, tokens, _ = maps.shape
    ws = int(round(np.sqrt(tokens)))
    if query is None:
        received = maps.mean(axis=4)  # (batch, nh, nw, heads, N)
    else:
        row, col = query
        wr, wc = row // ws, col // ws
        single = np.zeros((batch, nh, nw, heads, tokens))
        single[:, wr, wc] = maps[:, wr, wc, :, (row % ws) * ws + col % ws]
        received = single
    grid = received.reshape(batch, nh, nw, heads, ws, ws).transpose(0, 3, 1, 4, 2, 5)
    return grid.reshape(batch, heads, nh * ws, nw * ws)[:, :, :height, :width]
