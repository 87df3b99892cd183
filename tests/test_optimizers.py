"""AGC AdamW: each weight's clipping its own though weights of a shape are clipped together, and Keras'
AdamW's update (weight decay included) though the step's shared values are computed once and each weight is
updated by TensorFlow's Adam kernel."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_evit.optimizers import AGCAdamW, adaptive_clip


def test_adaptive_gradient_clipping_per_unit():
    w = np.ones((3, 2), np.float32)            # unit norms sqrt(3)
    g = np.array([[10, 0.001], [10, 0.001], [10, 0.001]], np.float32)
    (clipped,) = adaptive_clip([g], [w], clip=0.02)
    clipped = np.asarray(clipped)
    np.testing.assert_allclose(np.linalg.norm(clipped[:, 0]), 0.02 * np.sqrt(3), rtol=1e-5)
    np.testing.assert_allclose(clipped[:, 1], g[:, 1])  # small unit untouched


def _numpy_agc(g, w, clip, eps=1e-3):
    """timm's AGC on one weight, in Keras layout (units last; depthwise kernels' units on axis 2)."""
    axes = tuple(range(g.ndim)) if g.ndim <= 1 else (0, 1, 3) if g.ndim == 4 and g.shape[-1] == 1 else \
        tuple(range(g.ndim - 1))
    norm = lambda x: np.sqrt(np.sum(np.square(x.astype(np.float64)), axis=axes, keepdims=True))  # noqa: E731
    max_norm = np.maximum(norm(w), eps) * clip
    g_norm = norm(g)
    return g * np.where(g_norm > max_norm, max_norm / np.maximum(g_norm, 1e-6), 1.0)


def test_adaptive_clip_of_weights_sharing_a_shape_is_each_ones_own():
    """Weights of one shape are clipped stacked: each still gets its own units' scale, and a missing
    gradient stays missing."""
    rng = np.random.RandomState(0)
    shapes = [(16,), (16,), (3, 3, 8, 1), (3, 3, 8, 1), (1, 1, 8, 16), (8, 16), (8, 16), (), (16,)]
    weights = [rng.normal(size=s).astype(np.float32) for s in shapes]
    # gradients from tiny to huge, so some units are clipped and some are not within one stacked group
    grads = [rng.normal(size=s).astype(np.float32) * 10.0 ** rng.randint(-4, 2) for s in shapes]
    grads[-1] = None
    clipped = adaptive_clip(grads, weights, clip=0.02)
    assert clipped[-1] is None
    for g, w, c in zip(grads[:-1], weights[:-1], clipped[:-1]):
        c = np.asarray(c)
        assert c.shape == g.shape
        np.testing.assert_allclose(c, _numpy_agc(g, w, 0.02), rtol=1e-5, atol=1e-9)
    assert any(not np.allclose(np.asarray(c), g) for g, c in zip(grads[:-1], clipped[:-1]))  # some were clipped
    assert any(np.array_equal(np.asarray(c), g) for g, c in zip(grads[:-1], clipped[:-1]))  # some were not


# betas whose complements 1 - beta are exact in float32: then TensorFlow's Adam kernel, which computes 1 - beta
# in float32, and Keras, which rounds 1 - beta from Python's double, multiply by the same constants
EXACT_BETAS = {"beta_1": 0.875, "beta_2": 1 - 2.0 ** -10}


def _schedule_updates(cls, betas, graph, **kwargs):
    """Four updates of three weights with a warm-up + cosine schedule and weight decay (not on the bias)."""
    schedule = lambda: keras.optimizers.schedules.CosineDecay(  # noqa: E731
        1e-6, decay_steps=8, warmup_target=0.1, warmup_steps=2, alpha=0.01)
    rng = np.random.RandomState(0)
    start = [rng.normal(size=s).astype(np.float32) for s in [(3, 4), (4,), (2, 2, 3, 1)]]
    grads = [[rng.normal(size=w.shape).astype(np.float32) for w in start] for _ in range(4)]
    weights = [keras.Variable(w, name=n) for w, n in zip(start, ["kernel", "bias", "depthwise_kernel"])]
    opt = cls(learning_rate=schedule(), weight_decay=0.05, **betas, **kwargs)
    opt.exclude_from_weight_decay(var_names=["bias"])
    opt.build(weights)
    step = lambda g: opt.apply(g, weights)  # noqa: E731
    step = tf.function(step) if graph else step
    for g in grads:
        step([tf.constant(x) for x in g])
    assert float(opt.learning_rate) == pytest.approx(float(schedule()(4)))
    assert not np.array_equal(weights[0].numpy(), start[0])
    return [w.numpy() for w in weights]


@pytest.mark.parametrize("graph", [False, True])
def test_updates_equal_keras_adamw_with_a_schedule_and_weight_decay(graph):
    """Without clipping, AGCAdamW computes Keras' AdamW's expressions in the same order: the same bits where
    1 - beta is exact in float32, and within float32 rounding of 1 - beta with the default betas. The
    schedule's rate reaches both the Adam update and the weight decay, step after step, and the optimizer's
    rate is the schedule's again after."""
    for a, b in zip(_schedule_updates(keras.optimizers.AdamW, EXACT_BETAS, graph),
                    _schedule_updates(AGCAdamW, EXACT_BETAS, graph, agc_clip=None)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_schedule_updates(keras.optimizers.AdamW, {}, graph),
                    _schedule_updates(AGCAdamW, {}, graph, agc_clip=None)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # updates of up to 0.1


TORCH_UPDATES = """
import json, sys
import keras, numpy as np
from keras_evit.optimizers import AGCAdamW

assert keras.backend.backend() == "torch"


def updates(cls, **kwargs):
    schedule = keras.optimizers.schedules.CosineDecay(1e-6, decay_steps=8, warmup_target=0.1, warmup_steps=2,
                                                      alpha=0.01)
    rng = np.random.RandomState(0)
    start = [rng.normal(size=s).astype(np.float32) for s in [(3, 4), (4,), (2, 2, 3, 1)]]
    grads = [[rng.normal(size=w.shape).astype(np.float32) for w in start] for _ in range(4)]
    weights = [keras.Variable(w, name=n) for w, n in zip(start, ["kernel", "bias", "depthwise_kernel"])]
    opt = cls(learning_rate=schedule, weight_decay=0.05, **kwargs)
    opt.exclude_from_weight_decay(var_names=["bias"])
    opt.build(weights)
    for g in grads:
        opt.apply([keras.ops.convert_to_tensor(x) for x in g], weights)
    return [keras.ops.convert_to_numpy(w) for w in weights]


def weight_by_weight(*args, **kwargs):
    raise AssertionError("updated weight by weight")


AGCAdamW.update_step = weight_by_weight  # the multi-tensor update must not need it
out = {}
for amsgrad in (False, True):
    a, b = updates(keras.optimizers.AdamW, amsgrad=amsgrad), updates(AGCAdamW, amsgrad=amsgrad, agc_clip=None)
    out[str(amsgrad)] = {"max_diff": max(float(np.abs(x - y).max()) for x, y in zip(a, b)),
                         "moved": float(np.abs(a[0]).sum())}
clipped = updates(AGCAdamW, agc_clip=0.02)
out["clip_changes_it"] = float(np.abs(clipped[0] - updates(AGCAdamW)[0]).max())
print("RESULT " + json.dumps(out))
"""


def test_on_torch_every_weight_is_updated_at_once_with_keras_adamws_bits():
    """On the PyTorch backend AGCAdamW updates all weights in multi-tensor passes (never weight by weight) and
    gives Keras' own AdamW's weights there bit for bit, with a schedule, weight decay and AMSGrad."""
    env = dict(os.environ, KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", TORCH_UPDATES], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["False"]["max_diff"] == 0.0 and out["True"]["max_diff"] == 0.0, out
    assert out["clip_changes_it"] > 0, out


def test_learning_rate_is_still_settable():
    opt = AGCAdamW(agc_clip=0.02, learning_rate=0.1)
    opt.learning_rate = 0.01
    assert float(opt.learning_rate) == pytest.approx(0.01)


def _fit(cls, strategy=None):
    """A small classifier after two epochs of ``fit`` with ``cls``, decay on kernels only."""
    keras.utils.set_random_seed(0)
    with strategy.scope() if strategy else tf.distribute.get_strategy().scope():
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
        opt = cls(learning_rate=1e-2, weight_decay=0.1, **EXACT_BETAS)
        opt.exclude_from_weight_decay(var_names=["bias"])
        model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.RandomState(1).rand(64, 8).astype("float32")
    model.fit(x, np.arange(64) % 3, batch_size=16, epochs=2, verbose=0)
    return model


@pytest.mark.parametrize("strategy", [None, "mirrored"])
def test_fit_trains_keras_adamws_weights_with_or_without_a_strategy(strategy):
    """In ``fit``, TensorFlow's Adam kernel: without a strategy (the shared values built once) and under one
    (the scalars built per weight, each weight decayed and updated in its own cross-replica context), the
    weights are Keras' AdamW's to the bit (betas whose 1 - beta is exact in float32)."""
    strategy = tf.distribute.MirroredStrategy(["CPU:0"]) if strategy else None
    for a, b in zip(_fit(keras.optimizers.AdamW, strategy).get_weights(), _fit(AGCAdamW, strategy).get_weights()):
        np.testing.assert_array_equal(a, b)


TWO_DEVICES = """
import sys
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from keras_evit.optimizers import AGCAdamW
sys.path.insert(0, sys.argv[1])
from test_optimizers import _fit

strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
ours, theirs = _fit(AGCAdamW, strategy), _fit(keras.optimizers.AdamW, strategy)
for a, b in zip(ours.trainable_variables, theirs.trainable_variables):
    copies = [v.numpy() for v in a.value.values]
    assert len(copies) == 2 and all(np.array_equal(c, copies[0]) for c in copies), a.path
    assert np.array_equal(copies[0], b.numpy()), a.path
print("two copies, Keras' bits")
"""


def test_two_device_copies_stay_equal_and_keras_adamws():
    """Under a strategy with two devices each device's copy of a weight, and of its Adam moments, is
    updated by its own kernel: the copies stay equal, and equal Keras' AdamW's (fresh process: the two
    logical devices must exist before TensorFlow starts)."""
    proc = subprocess.run([sys.executable, "-c", TWO_DEVICES, os.path.dirname(__file__)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0 and "Keras' bits" in proc.stdout, proc.stderr[-3000:]


def test_a_traced_step_holds_far_fewer_ops_than_keras_adamws():
    """A hundred weights' update, traced: the step's shared values built once, not once per weight, and each
    weight's Adam update one kernel instead of a dozen ops."""
    shapes = [(3, 3, 64, 1), (64,), (1, 1, 64, 128), (128,)] * 25
    counts = []
    for cls in (keras.optimizers.AdamW, AGCAdamW):
        weights = [keras.Variable(np.ones(s, "float32"), name="kernel" if len(s) > 1 else "bias") for s in shapes]
        opt = cls(learning_rate=keras.optimizers.schedules.CosineDecay(1e-3, 100), weight_decay=0.05)
        opt.exclude_from_weight_decay(var_names=["bias"])
        opt.build(weights)
        graph = tf.function(lambda g: opt.apply(g, weights)).get_concrete_function(
            [tf.TensorSpec(s, "float32") for s in shapes]).graph
        counts.append(len(graph.get_operations()))
    assert counts[1] < 0.25 * counts[0], counts
