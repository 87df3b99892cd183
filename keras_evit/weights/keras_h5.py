"""What a Keras ``.weights.h5`` file holds, read without building a model (for error messages), and a
check of what it declares before Keras reads any of it."""

import re

import numpy as np

from ..compat import keras_h5_layers
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


def _stage_sizes(size):
    """Feature-map sides of the three stages for a square input of ``size`` px (stride-2 convs, pad 1)."""
    for _ in range(4):
        size = (size - 1) // 2 + 1
    sizes = [size]
    for _ in range(2):
        sizes.append((sizes[-1] - 1) // 2 + 1)
    return sizes


MAX_TOP_LAYERS = 1_000  # our models have a few dozen top-level layers


def _top_layers(h5file):
    """The file's top-level layer groups, refused (ValueError) when there are more than any model of ours has."""
    layers = keras_h5_layers(h5file)
    if len(layers) > MAX_TOP_LAYERS:
        raise ValueError(f"more than {MAX_TOP_LAYERS:,} top-level layers")
    return layers


def keras_weights_layout(path, variant, window=7):
    """(classes of its classifier head or None, a square input size whose attention-bias tables are the
    file's) for one of our ``variant`` ``.weights.h5`` files (224 when it fits), or None when unreadable or
    not ours."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            layers = _top_layers(f)
            heads = [name for name in layers if re.fullmatch(r"norm_linear(?:_\d+)?", name)]
            classes = int(layers[heads[0]]["linear/vars/0"].shape[-1]) if heads else None
            found = sorted((int(m.group(1) or 0), layers[name]["mixer/attn/vars/0"].shape[1])
                           for name in layers for m in [re.fullmatch(r"efficient_vi_t_block(?:_(\d+))?", name)] if m)
    except (OSError, KeyError, ValueError, TypeError, IndexError):
        return None
    tables = [int(n) for _, n in found]
    depths = VARIANTS[variant].depths
    for size in [224, *range(64, 4097, 16)]:
        sides = _stage_sizes(size)
        if tables == [min(window, side) ** 2 for side, depth in zip(sides, depths) for _ in range(depth)]:
            return classes, size
    return None


def guess_keras_weights_variant(path):
    """The variant whose blocks a ``.weights.h5`` file holds, or None (unreadable, or not ours)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            blocks = _blocks(_top_layers(f))
    except (OSError, KeyError, ValueError, TypeError):
        return None
    for key, cfg in VARIANTS.items():
        expected = [(dim, heads) for dim, depth, heads in zip(cfg.embed_dims, cfg.depths, cfg.num_heads)
                    for _ in range(depth)]
        if blocks == expected:
            return key
    return None


def variable_bytes(variables):
    """Bytes the values of ``variables`` (Keras variables, allocated or not) take: what a weights file for them
    holds, for bounding what it may declare."""
    return sum(int(np.prod(v.shape, dtype=np.float64)) * np.dtype(v.dtype).itemsize for v in variables)


MAX_OBJECTS = 20_000  # groups and datasets: an M5 file holds ~900 datasets in about as many groups


def check_declared_sizes(path, max_bytes, source=None):
    """The bytes a ``.weights.h5``'s datasets declare. Refuses one whose datasets declare more than
    ``max_bytes`` in all, or hold anything but floats (a few small integer states aside), from the file's
    metadata alone: a small file can declare GBs of unallocated chunks, which a reader would then allocate
    and fill. Also refused: what takes values from outside the file (links to other files or paths, datasets
    stored in other files or mapped from them), which Keras never writes and a reader would follow to any
    file on the disk, a FIFO or a device included."""
    import h5py

    source = source or path
    links, found = [], []

    def visit(name, link):  # h5py turns an exception raised here into a SystemError: collect, check after
        links.append((name, link))
        return True if len(links) > MAX_OBJECTS else None  # a value stops the walk

    try:
        with h5py.File(path, "r") as f:
            f.visititems_links(visit)
            # empty groups count too: walking them is what a hostile file would make a reader do
            if len(links) > MAX_OBJECTS:
                raise ValueError(f"{source}: more than {MAX_OBJECTS:,} groups and datasets, not an EfficientViT "
                                 "weights file")
            for name, link in links:
                if not isinstance(link, h5py.HardLink):
                    raise ValueError(f"{source}: {name} is an HDF5 {type(link).__name__} (a link to another file or "
                                     "path), which Keras never writes: refused")
                obj = f[name]
                if isinstance(obj, h5py.Dataset):
                    if obj.external or obj.is_virtual:
                        raise ValueError(f"{source}: dataset {name} takes its values from outside the file, which "
                                         "Keras never writes: refused")
                    found.append((name, obj.shape, obj.dtype))
    except ValueError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError ... for a corrupt file
        raise ValueError(f"{source} is not a readable EfficientViT .weights.h5 file ({type(exc).__name__}: {exc}). "
                         "Re-save or re-download it.") from exc
    total = 0
    for name, shape, dtype in found:
        count = int(np.prod(shape, dtype=np.float64)) if shape is not None else 0
        if dtype.kind != "f" and not (dtype.kind in "iub" and count <= 64):
            raise ValueError(f"{source}: dataset {name} holds {dtype} values, not floating-point weights: refused")
        total += count * dtype.itemsize
        if total > max_bytes:
            raise ValueError(f"{source}: its datasets declare {total:,}+ bytes, more than this model's weights "
                             f"could take ({max_bytes:,}): refused")
    return total
