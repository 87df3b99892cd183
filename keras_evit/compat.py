"""Every private Keras / TensorFlow / LiteRT / MediaPipe API keras-evit relies on, in one place.

Keras 3 has no public way to walk a layer's sublayers or to read a layer's own variables apart from its
children's; LiteRT's Python interpreter has no public op list. ``tests/test_compat.py`` exercises each
function below and fails loudly on an upgrade that changes them (the versions are pinned in setup.py).

One private use lives elsewhere because it runs in MediaPipe's own Python, which cannot import keras-evit:
``export/mediapipe_tool.py`` sets ``MetadataWriter._general_md`` (``add_general_info`` takes no version,
author or license), checked against MediaPipe ``MEDIAPIPE_VERSION_SEEN`` by
``tests/test_export_metadata.py``, which reads those fields back from a written file.

One undocumented Keras hook is overridden rather than called: ``Layer.rematerialized_call``, which Keras calls
for a layer made inside ``keras.RematScope`` (``keras_evit/layers/remat.py``). Were it renamed, Keras' own
wrapping would run instead and ``tests/test_layers_remat.py`` would fail (TensorFlow refuses it).
"""

KERAS_VERSION_SEEN = "3.15.1"
TENSORFLOW_VERSION_SEEN = "2.21.0"
LITERT_VERSION_SEEN = "2.3.0"
MEDIAPIPE_VERSION_SEEN = "0.10.21"


def sublayers(layer, recursive=True):
    """The layers inside ``layer`` (all of them with ``recursive``, else its direct children)."""
    return list(layer._flatten_layers(include_self=False, recursive=recursive))


def own_variables(layer):
    """Variables created by ``layer`` itself, not by its sublayers (e.g. the attention-bias table)."""
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def call_input(layer):
    """The tensor ``layer`` is called on in its model's graph (for a nested model, not its own ``Input``),
    or None when it is called more than once or on several tensors."""
    nodes = getattr(layer, "_inbound_nodes", [])
    if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
        return None
    return nodes[0].input_tensors[0]


def optimizer_trainable_variables(optimizer):
    """The variables a built optimizer updates, for ``apply(grads)`` called without them."""
    return optimizer._trainable_variables


def symbolic_build(model, batch):
    """Builds ``model``'s metrics/optimizer from one batch, and stops Keras from doing it again inside
    a multi-worker replica context (Keras 3.15 deadlocks there)."""
    model._symbolic_build(data_batch=batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def keras_h5_layers(h5file):
    """The group of an open ``.weights.h5`` file holding one subgroup per top-level layer, named after the
    layer's class (``efficient_vi_t_block_3``, ``norm_linear``), each with ``vars/0..`` in creation order and
    its sublayers' groups by attribute name: Keras' own layout, read to name what a file holds without
    building a model."""
    return h5file["layers"]


def scalar_safe_reduce(strategy):
    """``strategy`` with a ``reduce`` that also takes rank-0 values with ``axis=0``: Keras 3.15 reduces
    per-replica *scalar* logs that way under multi-worker strategies, which TensorFlow refuses; those are
    reduced across replicas instead."""
    reduce = strategy.reduce

    def safe_reduce(op, value, axis=None):
        if axis is not None and strategy.experimental_local_results(value)[0].shape.rank == 0:
            axis = None
        return reduce(op, value, axis=axis)

    strategy.reduce = safe_reduce
    return strategy


def tflite_ops(interpreter):
    """[{"op_name", "inputs", "outputs", ...}] of a LiteRT interpreter's graph."""
    return interpreter._get_ops_details()


def xla_on_cpu():
    """Whether the ops being built now will run through XLA's CPU backend: always on JAX-on-CPU, and
    inside a TensorFlow ``jit_compile=True`` function (TensorFlow marks its trace with an XLA control-flow
    context; there is no public query) when no GPU is visible. XLA's CPU backend has no tuned depthwise
    kernel (``python -m keras_evit.benchmarks.depthwise_probe``), so callers pick a formulation it fuses."""
    import keras

    backend = keras.config.backend()
    if backend == "jax":
        import jax

        return jax.default_backend() == "cpu"
    if backend == "tensorflow":
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_util

        if tf.executing_eagerly() or tf.config.list_logical_devices("GPU"):
            return False
        return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))
    return False


def profiler_xspace():
    """An empty ``XSpace`` message: the format of TensorFlow profiler traces (``*.xplane.pb``), from the
    protobuf module TensorFlow ships (TensorBoard's profile plugin reads the same; there is no public API)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    return xplane_pb2.XSpace()


def model_from_config_without_allocating(config):
    """(model, its variables) from a ``.keras`` config.json dict, deserialized as ``keras.models.load_model``
    does (no compile config, shared objects shared, safe mode) but with every variable left unallocated:
    Keras' deferred initialization, whose shapes and dtypes are known before any memory is taken. Those
    variables are then taken off Keras' list of variables to initialize later (private state), so nothing
    ever allocates them. ``config`` is left as it was (Keras' deserialization edits the dicts it reads)."""
    import copy

    import keras
    from keras.src.backend.common import global_state
    from keras.src.saving.serialization_lib import ObjectSharingScope

    key = "uninitialized_variables"
    before = list(global_state.get_global_attribute(key) or [])
    try:
        with keras.StatelessScope(initialize_variables=False), ObjectSharingScope():
            model = keras.saving.deserialize_keras_object({**copy.deepcopy(config), "compile_config": None},
                                                          safe_mode=True)
    finally:
        created = [v for v in global_state.get_global_attribute(key) or [] if not any(v is b for b in before)]
        global_state.set_global_attribute(key, before)
    return model, created
