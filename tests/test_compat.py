"""The private Keras / LiteRT APIs in keras_evit/compat.py still behave as relied on.

A failure here after a Keras or LiteRT upgrade means: re-check keras_evit/compat.py against the new
version before changing the pins in setup.py.
"""

import importlib.metadata
import json

import keras
import pytest
import numpy as np

import keras_evit as ke
from keras_evit import compat


def test_pinned_versions_are_the_ones_checked():
    assert keras.__version__ == compat.KERAS_VERSION_SEEN, "Keras changed: re-check keras_evit/compat.py"
    assert importlib.metadata.version("ai-edge-litert") == compat.LITERT_VERSION_SEEN, \
        "LiteRT changed: re-check keras_evit/compat.py"


def test_sublayers_and_own_variables():
    model = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3))
    everything = compat.sublayers(model)
    attention = [layer for layer in everything if isinstance(layer, ke.layers.CascadedGroupAttention)]
    assert len(attention) == 6  # depths 1 + 2 + 3, found through nested custom layers
    block = model.get_layer("stages-0-blocks-0")
    children = compat.sublayers(block, recursive=False)
    assert [c.name for c in children] == ["mixer-m", "dw0-m", "ffn0-m", "dw1-m", "ffn1-m"]
    own = compat.own_variables(attention[0])
    assert [v.name for v in own] == ["attention_biases"]  # its own table, not its children's convs
    assert compat.own_variables(block) == []


def test_optimizer_trainable_variables():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.AdamW()
    optimizer.build(model.trainable_variables)
    updated = compat.optimizer_trainable_variables(optimizer)
    assert [id(v) for v in updated] == [id(v) for v in model.trainable_variables]


def test_symbolic_build_builds_metrics_once():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("adam", "mse", metrics=["mae"])
    compat.symbolic_build(model, (np.zeros((2, 3), np.float32), np.zeros((2, 2), np.float32)))
    assert model.optimizer.built  # built by the one batch, before any fit
    model.fit(np.zeros((4, 3)), np.zeros((4, 2)), verbose=0)  # the patched hook must not break fit


def test_tflite_ops(tmp_path):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="relu")])
    path = tmp_path / "m.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    ops = compat.tflite_ops(Interpreter(model_path=str(path)))
    assert {op["op_name"] for op in ops} == {"FULLY_CONNECTED"} and all("inputs" in op for op in ops)


def test_xla_on_cpu_sees_jit_compile():
    """TensorFlow's XLA marker on a jit_compile trace (eager, graph, XLA, and a keras fit step)."""
    import tensorflow as tf

    seen = []

    def probe(x):
        seen.append(compat.xla_on_cpu())
        return x + 1

    probe(tf.constant(1.0))
    tf.function(probe)(tf.constant(1.0))
    tf.function(probe, jit_compile=True)(tf.constant(1.0))
    assert seen == [False, False, True]

    class Probe(keras.layers.Layer):
        def call(self, x):
            seen.append(compat.xla_on_cpu())
            return x

    for jit in (False, True):
        seen.clear()
        model = keras.Sequential([keras.Input((3,)), Probe(), keras.layers.Dense(1)])
        model.compile("sgd", "mse", jit_compile=jit)
        model.fit(np.zeros((4, 3)), np.zeros((4, 1)), verbose=0)
        assert seen[-1] is jit  # the traced train step, after the symbolic build


def test_profiler_xspace_reads_a_real_trace(tmp_path):
    import glob

    import tensorflow as tf

    tf.profiler.experimental.start(str(tmp_path))
    tf.function(lambda x: tf.matmul(x, x))(tf.ones((8, 8)))
    tf.profiler.experimental.stop()
    space = compat.profiler_xspace()
    space.ParseFromString(open(glob.glob(str(tmp_path / "**" / "*.xplane.pb"), recursive=True)[0], "rb").read())
    assert any(plane.name == "/host:CPU" for plane in space.planes)


def test_call_input_is_the_tensor_a_nested_model_is_called_on():
    backbone = ke.EfficientViTM0(weights=None, include_top=False, include_preprocessing=False,
                                 input_shape=(64, 64, 3))
    inputs = keras.Input((64, 64, 3))
    scaled = keras.layers.Rescaling(0.5)(inputs)
    model = keras.Model(inputs, backbone(scaled))
    assert compat.call_input(model.layers[-1]) is scaled  # not the backbone's own Input
    assert compat.call_input(backbone.get_layer("patch_embed")) is backbone.inputs[0]
    shared = keras.layers.Dense(2)
    keras.Model(inputs, [shared(keras.layers.Flatten()(inputs)), shared(keras.layers.Flatten()(scaled))])
    assert compat.call_input(shared) is None  # called twice: no single input


def test_keras_h5_layout(tmp_path):
    """The groups keras_evit.weights.keras_h5 reads to name what a file holds."""
    import h5py

    path = str(tmp_path / "m0.weights.h5")
    ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3), classes=7).save_weights(path)
    with h5py.File(path, "r") as f:
        layers = compat.keras_h5_layers(f)
        blocks = sorted(name for name in layers if name.startswith("efficient_vi_t_block"))
        assert len(blocks) == 6  # depths 1 + 2 + 3, one group per block
        assert layers["efficient_vi_t_block"]["dw0/bn/vars/0"].shape == (64,)
        assert layers["efficient_vi_t_block"]["mixer/attn/vars/0"].shape == (4, 16)  # heads x 4x4 window tokens
        assert layers["norm_linear"]["linear/vars/0"].shape == (192, 7)


def test_scalar_safe_reduce_takes_rank0_values_with_an_axis():
    import tensorflow as tf

    assert tf.__version__ == compat.TENSORFLOW_VERSION_SEEN, "TensorFlow changed: re-check keras_evit/compat.py"
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    scalar = strategy.run(lambda: tf.constant(2.0))
    with pytest.raises(ValueError, match="reduction dimension"):  # what Keras 3.15 runs into unpatched
        strategy.reduce("MEAN", scalar, axis=0)
    patched = compat.scalar_safe_reduce(strategy)
    assert float(patched.reduce("MEAN", scalar, axis=0)) == 2.0
    vector = strategy.run(lambda: tf.constant([2.0, 4.0]))
    assert float(patched.reduce("MEAN", vector, axis=0)) == 3.0  # other values as before


def test_model_from_config_without_allocating_leaves_nothing_to_initialize():
    """The model is built with its variables' shapes known and none allocated, and Keras' list of variables to
    initialize later is left as it was: a later stateless scope allocates nothing of it."""
    from keras.src.backend.common import global_state

    model = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3), classes=10)
    config = json.loads(model.to_json())
    config["config"]["layers"][-2]["config"]["units"] = 50_000_000  # the head: 38 GB were it allocated
    before = list(global_state.get_global_attribute("uninitialized_variables") or [])
    built, variables = compat.model_from_config_without_allocating(config)
    assert len(variables) == len(model.weights) and built.get_layer("head").linear.kernel.shape == (192, 50_000_000)
    assert all(v._value is None for v in variables)  # nothing allocated
    assert (global_state.get_global_attribute("uninitialized_variables") or []) == before
    with keras.StatelessScope():  # its exit initializes Keras' pending variables: none of these
        pass
    assert all(v._value is None for v in variables)
