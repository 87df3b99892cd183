"""Pretrained weights into a model: the one place that builds reference models, assigns and caches.

Puts the rest of ``weights`` (reading, name mapping, downloads) together with ``models.architecture``
(graphs), which it imports only when it builds one. See docs/ARCHITECTURE.md ("Data flow").
"""

import os
import warnings

import numpy as np

from ..configs import VARIANTS
from ..utils import atomic_output
from .checkpoint import CheckpointError, read_checkpoint
from .convert import assign_state_dict, state_dict_from_model
from .download import (HOME_ENV, cache_dir, cached_weights_path, check_release_file, download, hash_matches,
                       recorded_sha256, remove_stale_temporaries, weights_url, write_hash)
from .keras_h5 import check_declared_sizes, guess_keras_weights_variant, keras_weights_layout
from .keymap import normalize_keys


def _reference(variant):
    """The full 224 px, 1000-class model the released and cached weights belong to."""
    from ..models.architecture import build_architecture

    return build_architecture(variant, classifier_activation=None, include_preprocessing=False)


def check_finite(model, source):
    """Refuses NaN/Inf weights, naming the first bad variable (a .weights.h5 bypasses the state dict)."""
    for var in model.weights:
        value = np.asarray(var.numpy())
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise CheckpointError(f"{source}: variable {var.path} has non-finite values (NaN/Inf): the weights are "
                                  "corrupt or the training run diverged")


def _keras_weights_state(path, variant):
    """State dict (timm names, Keras layout) of a .weights.h5 saved from a ``variant`` model at any square
    resolution, with a head of any size or none: Keras reads its own format into a model built to the file's
    layout (read from the file, whose declared sizes were bounded first)."""
    layout = keras_weights_layout(path, variant)
    if layout is None:
        raise ValueError("its attention-bias tables match no square input size of this variant")
    classes, size = layout
    from ..models.architecture import build_architecture

    reference = build_architecture(variant, include_top=classes is not None, classes=classes or 1000,
                                   input_shape=(size, size, 3), classifier_activation=None,
                                   include_preprocessing=False)
    reference.load_weights(path)
    return state_dict_from_model(reference, with_bn_counters=False, layout="keras")


CHECKPOINT_BUDGET_FACTOR = 4


def weights_byte_budget(model, variant):
    """Most bytes a ``.weights.h5`` for ``model`` may declare: its weights with a 1000-class head, in float64."""
    dim = VARIANTS[variant].embed_dims[-1]
    count = sum(int(np.prod(w.shape)) for w in model.weights) + 1000 * (dim + 1) + 4 * dim
    return 8 * count + (1 << 20)


def _load_keras_weights(model, path, variant, source, new_head=False):
    """A ``.weights.h5``: straight in when it fits, else through the state dict (other input size, no
    head, or a new head); another variant's file is named as such."""
    try:
        check_declared_sizes(path, weights_byte_budget(model, variant), source)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
    direct_error = None
    if not new_head:  # never straight in for a new head: Keras would load the file's head too, where it fits
        try:
            model.load_weights(path)
            check_finite(model, source)
            return
        except CheckpointError:
            raise
        except Exception as exc:  # h5py/Keras raise many types for a file that does not fit
            direct_error = exc
    found = guess_keras_weights_variant(path)
    if found and found != variant:
        raise CheckpointError(f"{source} holds efficientvit_{found} weights, not efficientvit_{variant}: "
                              "use the matching model") from direct_error
    if found is None:
        why = f" ({type(direct_error).__name__}: {str(direct_error)[:300]})" if direct_error else ""
        raise CheckpointError(f"{source} is not a readable EfficientViT .weights.h5 file{why}. "
                              "Re-save or re-download it.") from direct_error
    try:
        state = _keras_weights_state(path, variant)
    except Exception as exc:
        raise CheckpointError(f"{source} does not fit {model.name}: {exc}") from exc
    assign_state_dict(model, state, variant=variant, source=source, new_head=new_head, layout="keras")


def load_weights(model, weights, variant, new_head=False):
    """Loads ``weights`` (None, "imagenet" or a path) into ``model``; other resolutions or no head are adapted.

    ``new_head=True`` loads everything but the classifier, which keeps its initial values: a model built
    with the builders' ``classes=N`` for fine-tuning on N classes (timm's ``pretrained`` with ``num_classes``).
    """
    if weights is None:
        return
    if weights == "imagenet":
        path, source = imagenet_weights(variant), f"cached ImageNet weights {cached_weights_path(variant)}"
    else:
        path, source = os.fspath(weights), os.fspath(weights)
        if os.path.exists(path) and not os.path.isfile(path):
            raise CheckpointError(f"weights {path!r} is not a regular file (a folder, pipe, device or socket): "
                                  "refused. Pass a path to a .weights.h5, .safetensors, .pth or .npz file.")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"weights file not found: {path!r}. Pass None/'imagenet' (--weights none|imagenet on the "
                "command line) or a path to a .weights.h5, .safetensors, .pth or .npz file.")
    # a checkpoint may also hold optimizer state and an EMA copy: a few times the weights, never more
    budget = CHECKPOINT_BUDGET_FACTOR * weights_byte_budget(model, variant)
    if path.endswith(".weights.h5"):
        from ..regular_file import FileTooLarge, NotRegularFile, private_copy

        try:  # checked and read: the same bytes, whatever happens to path meanwhile
            with private_copy(path, budget, ".weights.h5") as copy:
                _load_keras_weights(model, copy, variant, source, new_head=new_head)
        except FileTooLarge as exc:
            raise CheckpointError(f"{source} is {exc.size:,}+ bytes, more than an efficientvit_{variant} weights "
                                  f"file can be ({budget:,}): refused") from None
        except NotRegularFile as exc:  # put in place of the file after the checks above
            raise CheckpointError(f"{exc}: refused") from None
        return
    # the size, and the cache's recorded hash, checked on the file that is read, not on the path
    expected = recorded_sha256(path) if weights == "imagenet" else None
    if weights == "imagenet" and expected is None:
        raise CheckpointError(f"{source}: its recorded SHA-256 is gone (removed while loading?): load it again")
    state = read_checkpoint(path, max_bytes=budget, sha256=expected,
                            limit_name=f"an efficientvit_{variant} checkpoint can be")
    assign_state_dict(model, state, variant=variant, source=source, new_head=new_head)


def imagenet_weights(variant, progress=True):
    """Path of the cached, verified ImageNet state dict for ``variant`` (timm names, ``.safetensors``),
    downloading and checking it on first use.

    The download is checked once, against the full 224 px, 1000-class architecture (every name and shape,
    finite floats); what is cached is that state dict as read, and every later load assigns it straight into
    the model asked for (any resolution, with or without head): one layout conversion, no throwaway models.
    Its SHA-256 is recorded beside it; a cache file that no longer matches (truncated, edited) is removed and
    fetched again.
    """
    final = cached_weights_path(variant)
    try:
        os.makedirs(cache_dir(), exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise CheckpointError(f"the weights cache {cache_dir()} is a file, not a folder: point {HOME_ENV} at a "
                              "folder (or remove the file)") from None
    if os.path.lexists(final) and not os.path.isfile(final):
        raise CheckpointError(f"the cached weights path {final} is not a file (a folder or a broken link): "
                              "remove it, and it will be downloaded again")
    remove_stale_temporaries(cache_dir())
    replaced = None
    if os.path.isfile(final):
        if hash_matches(final):
            return final
        warnings.warn(f"cached weights {final} do not match their recorded SHA-256 (corrupt or incomplete): "
                      "removing them and downloading again", stacklevel=3)
        for stale in (final, final + ".sha256"):
            if os.path.exists(stale):
                os.remove(stale)
        replaced = final
    url = weights_url(variant)
    try:
        raw = download(url, cache_dir(), progress=progress)
    except CheckpointError as exc:
        if replaced is None:
            raise
        raise CheckpointError(f"the cached weights {replaced} were corrupt and have been removed; downloading them "
                              f"again failed: {exc}") from exc
    try:
        check_release_file(raw, variant, url)
        state = normalize_keys(read_checkpoint(raw))
        assign_state_dict(_reference(variant), state, variant=variant, allow_resize=False, source=f"download {url}")
        from safetensors.numpy import save_file

        with atomic_output(final) as tmp:
            save_file({k: np.ascontiguousarray(v, np.float32) for k, v in state.items()}, tmp,
                      metadata={"source": url})  # one key: safetensors orders several at random
        write_hash(final)
    finally:
        if os.path.exists(raw):
            os.remove(raw)
    return final
