"""Rematerialization (gradient checkpointing) of keras_evit's layers under Keras' own ``keras.RematScope``.

A rematerialized layer keeps only its input for the backward pass and computes its forward again there,
trading compute for activation memory (timm's ``set_grad_checkpointing``). Keras wraps a layer's whole
``call`` for it, which fails here two ways: in a TensorFlow graph ``tf.recompute_grad`` takes no keyword
arguments (every layer here takes ``training``), and the forward run again in the backward pass runs
BatchNorm again, so its moving statistics would move twice per step. Here the wrapped function takes the
input alone, and BatchNorm inside it hands its new statistics out instead of assigning them: they are
assigned once, from the forward pass, whichever backend recomputes (TensorFlow and PyTorch call the
function again; JAX replays its trace).
"""

import contextlib
import threading

import keras

_local = threading.local()


def _collectors():
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def collecting_updates():
    """Whether a rematerialized call is running: state updates go to it, not to the variables."""
    return bool(_collectors())


@contextlib.contextmanager
def _collect():
    updates = []
    _collectors().append(updates)
    try:
        yield updates
    finally:
        _collectors().pop()


def assign_or_collect(variable, value):
    """``variable.assign(value)``, or, inside a rematerialized call, handed to it to assign once."""
    if collecting_updates():
        _collectors()[-1].append((variable, value))
    else:
        variable.assign(value)


def rematerialized(layer_call):
    """``layer_call`` (a layer's ``call(x, training=None, ...)``) recomputed in the backward pass when training;
    the plain call otherwise (inference keeps nothing for a backward pass)."""

    def call(*args, **kwargs):
        if kwargs.get("training") is not True or not args:  # the input passed by keyword: called as it is
            return layer_call(*args, **kwargs)
        x, args = args[0], args[1:]
        first = []  # (output structure, updated variables) of the first run: the forward pass

        def forward(inputs):
            with _collect() as updates:
                outputs = layer_call(inputs, *args, **kwargs)
            if not first:
                first.append((outputs, [variable for variable, _ in updates]))
            values = [keras.ops.stop_gradient(value) for _, value in updates]
            return keras.tree.flatten(outputs) + values

        flat = keras.remat(forward)(x)
        structure, variables = first[0]
        count = len(flat) - len(variables)
        for variable, value in zip(variables, flat[count:]):
            assign_or_collect(variable, value)
        return keras.tree.pack_sequence_as(structure, flat[:count])

    return call


class Rematerializable:
    """Mixin for layers that take ``training``: under ``keras.RematScope``, the layers Keras would rematerialize
    are rematerialized by :func:`rematerialized` instead."""

    def rematerialized_call(self, layer_call, *args, **kwargs):
        if super().rematerialized_call(layer_call, *args, **kwargs) is layer_call:
            return layer_call
        return rematerialized(layer_call)


def remat_layer_names():
    """The layers rematerialized by :func:`remat_scope`, as ``build_stages`` names them in every variant: the stem,
    each stage's subsample block and each sandwich block (timm's checkpointing recomputes whole stages)."""
    from ..configs import VARIANTS

    depths = [max(cfg.depths[stage] for cfg in VARIANTS.values()) for stage in range(3)]
    names = ["patch_embed"]
    for stage, depth in enumerate(depths):
        if stage > 0:
            names.append(f"stages-{stage}-downsample")
        names.extend(f"stages-{stage}-blocks-{j}" for j in range(depth))
    return names


def remat_scope():
    """``keras.RematScope`` that rematerializes the stem and each block of the EfficientViT models built or loaded
    inside it: they keep only their inputs for the backward pass and compute the rest again there (M5 at batch 128:
    151 MB of activations kept instead of 2369, for 23% fewer images/s on a CPU; docs/benchmarks.md)."""
    return keras.RematScope(mode="list_of_layers", layer_names=remat_layer_names())
