import itertools

import keras
import numpy as np
import pytest

from keras_evit import layers as L


def _reference_index(resolution):
    """The official enumeration: offsets numbered in order of first appearance."""
    points = list(itertools.product(range(resolution), range(resolution)))
    offsets, idxs = {}, []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            idxs.append(offsets.setdefault(off, len(offsets)))
    return np.array(idxs).reshape(len(points), len(points))


@pytest.mark.parametrize("resolution", [1, 3, 4, 5, 7])
def test_attention_bias_index_matches_official_enumeration(resolution):
    np.testing.assert_array_equal(L.attention_bias_index(resolution), _reference_index(resolution))


LAYERS = [
    (lambda: L.ConvBN(8, 3, 2), (2, 16, 16, 4)),
    (lambda: L.TokenInteraction(8), (2, 9, 9, 8)),
    (lambda: L.PatchEmbedding(64), (1, 64, 64, 3)),
    (lambda: L.FFN(8), (2, 5, 5, 8)),
    (lambda: L.SqueezeExcite(4), (2, 5, 5, 16)),
    (lambda: L.PatchMerging(12), (2, 9, 9, 8)),
    (lambda: L.CascadedGroupAttention(2, [5, 3]), (3, 4, 4, 16)),
    (lambda: L.LocalWindowAttention(2, [5, 3]), (2, 10, 9, 16)),
    (lambda: L.EfficientViTBlock(2, [5, 3]), (2, 9, 9, 16)),
    (lambda: L.SubsampleBlock(24), (2, 9, 9, 16)),
    (lambda: L.NormLinear(10), (2, 16)),
]


@pytest.mark.parametrize("factory,shape", LAYERS, ids=[f().__class__.__name__ for f, _ in LAYERS])
def test_layer_config_roundtrip_and_shape(factory, shape):
    layer = factory()
    x = np.random.RandomState(0).randn(*shape).astype("float32")
    y = np.asarray(layer(x))
    assert y.shape == tuple(s for s in layer.compute_output_shape(shape))
    clone = layer.__class__.from_config(layer.get_config())
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(clone(x)), y, atol=1e-6)


def test_layers_are_registered_serializable():
    for cls in (L.ConvBN, L.DepthwiseConv, L.TokenInteraction, L.PatchEmbedding, L.FFN, L.SqueezeExcite, L.PatchMerging,
                L.CascadedGroupAttention, L.LocalWindowAttention, L.EfficientViTBlock, L.SubsampleBlock,
                L.NormLinear):
        assert keras.saving.get_registered_object(f"keras_evit>{cls.__name__}") is cls


def test_window_partition_is_exact_inverse():
    """With the attention replaced by identity, the window wrapper must return its input."""
    layer = L.LocalWindowAttention(2, [3, 3])
    x = np.random.RandomState(1).randn(2, 17, 10, 8).astype("float32")
    layer.build(x.shape)
    assert layer.window_resolution == 7
    layer.attn.call = lambda t, training=None: t
    np.testing.assert_array_equal(np.asarray(layer(x)), x)



@pytest.mark.parametrize("kernel,strides,padding,bias", [(3, 1, "same", False), (5, 1, "same", True),
                                                         (7, 1, "same", False), (3, 2, "valid", False),
                                                         (3, 2, "valid", True), (3, 1, "valid", False)])
def test_depthwise_xla_cpu_formulation_equals_native(kernel, strides, padding, bias):
    """Under TensorFlow jit_compile on a CPU the layer runs as shifted multiply-adds; its output and
    both gradients must be the native kernel's (as run in graph mode)."""
    import tensorflow as tf

    from keras_evit.compat import xla_on_cpu

    layer = L.DepthwiseConv(kernel, strides, padding=padding, use_bias=bias,
                            bias_initializer=keras.initializers.RandomNormal(seed=2))
    x = tf.constant(np.random.RandomState(0).randn(2, 11, 11, 6).astype("float32"))
    layer.build(x.shape)
    seen = {}

    def step(x):
        seen[len(seen)] = xla_on_cpu()
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.cos(y))
        return (y, *tape.gradient(loss, [x, *layer.trainable_variables]))

    native = tf.function(step)(x)
    shifted = tf.function(step, jit_compile=True)(x)
    assert seen == {0: False, 1: True}
    for a, b in zip(native, shifted):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "mixed_float16"])
def test_batchnorm_fused_training_equals_keras(dtype):
    """BatchNorm's fused training path: Keras BatchNormalization's outputs, gradients and moving
    statistics (biased batch variance, Keras momentum), in graph mode and under XLA."""
    import tensorflow as tf

    x = tf.constant(np.random.RandomState(0).randn(4, 6, 5, 3).astype("float32") * 3 + 1)
    results = {}
    for cls in (keras.layers.BatchNormalization, L.BatchNorm):
        for jit in (False, True):
            layer = cls(epsilon=1e-5, momentum=0.9, dtype=dtype,
                        gamma_initializer=keras.initializers.RandomNormal(seed=1),
                        beta_initializer=keras.initializers.RandomNormal(seed=2))
            layer.build(x.shape)

            @tf.function(jit_compile=jit)
            def step(x):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = tf.cast(layer(x, training=True), "float32")
                    loss = tf.reduce_sum(y * tf.sin(y))
                return (y, *tape.gradient(loss, [x, layer.gamma, layer.beta]))

            out = [np.asarray(t) for t in step(x)] + [np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)]
            results[cls, jit] = out
            kinds = {op.type for op in step.get_concrete_function(x).graph.get_operations()}
            assert ("FusedBatchNormV3" in kinds) == (cls is L.BatchNorm and not jit)  # XLA:CPU: Keras' form
    tol = 1e-5 if dtype == "float32" else 2e-3
    expected = results[keras.layers.BatchNormalization, False]
    for key, got in results.items():
        for a, b in zip(expected, got):
            np.testing.assert_allclose(b, a, rtol=tol, atol=tol, err_msg=str(key))
    assert not np.allclose(expected[-1], 1.0)  # the moving variance did move


def test_batchnorm_is_in_every_convbn():
    assert isinstance(L.ConvBN(4).bn, L.BatchNorm)


@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize("size", [(9, 10), (8, 8)])
def test_strided_convbn_training_keeps_no_padded_copy(depthwise, size):
    """In TensorFlow training a stride-2 ConvBN's backward pass reads its input, not a padded copy of it
    (it pads again when it needs one): the same outputs and gradients as plain pad + conv."""
    import tensorflow as tf

    from keras_evit.layers import conv as conv_module

    x = tf.random.normal((2, *size, 8), seed=1)
    layer = L.ConvBN(8, 3, 2, depthwise=depthwise)
    layer.build(x.shape)

    def step(recompute_pad):
        saved = conv_module._repad_in_backward_applies
        if not recompute_pad:
            conv_module._repad_in_backward_applies = lambda *args: False
        marks = {}
        try:
            @tf.function
            def run(x):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    loss = tf.reduce_sum(layer(x, training=True) ** 2)
                marks["forward"] = len(tf.compat.v1.get_default_graph().get_operations())
                return loss, tape.gradient(loss, [x, *layer.trainable_variables])

            ops = run.get_concrete_function(x).graph.get_operations()
            forward = {id(op) for op in ops[:marks["forward"]]}
            kept = {t.op.type for op in ops[marks["forward"]:] for t in op.inputs if id(t.op) in forward}
            return run(x), kept
        finally:
            conv_module._repad_in_backward_applies = saved

    (loss, grads), kept = step(True)
    (ref_loss, ref_grads), ref_kept = step(False)
    assert "Pad" not in kept and "Pad" in ref_kept, (kept, ref_kept)
    np.testing.assert_allclose(loss.numpy(), ref_loss.numpy(), rtol=1e-6)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=1e-5, atol=1e-6)
