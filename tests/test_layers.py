import itertools
import json
import os
import subprocess
import sys
import textwrap

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


TORCH_BATCHNORM = textwrap.dedent('''
    import json, sys
    import keras, numpy as np, torch
    from keras_evit import layers as L

    assert keras.backend.backend() == "torch"
    out = {}
    for dtype in ("float32", "mixed_bfloat16"):
        x0 = torch.tensor(np.random.RandomState(0).randn(4, 6, 5, 3).astype("float32") * 3 + 1)
        results = {}
        for cls in (keras.layers.BatchNormalization, L.BatchNorm):
            layer = cls(epsilon=1e-5, momentum=0.9, dtype=dtype,
                        gamma_initializer=keras.initializers.RandomNormal(seed=1),
                        beta_initializer=keras.initializers.RandomNormal(seed=2))
            layer.build(tuple(x0.shape))
            values = []
            for step in range(2):  # the moving statistics move twice
                x = (x0 * (step + 1)).requires_grad_(True)
                y = layer(x, training=True)
                loss = (y.float() * torch.sin(y.float())).sum()
                grads = torch.autograd.grad(loss, [x, layer.gamma.value, layer.beta.value])
                values += [y.float().detach().numpy(), *(g.detach().numpy() for g in grads)]
            values += [keras.ops.convert_to_numpy(v) for v in (layer.moving_mean, layer.moving_variance)]
            # which kernel ran: the autograd graph of the output
            node, names = y.grad_fn, []
            while node is not None:
                names.append(type(node).__name__)
                node = next((n for n, _ in node.next_functions if n is not None), None)
            results[cls.__name__] = values, names
        expected, _ = results["BatchNormalization"]
        got, names = results["BatchNorm"]
        out[dtype] = {"max_diff": max(float(np.abs(a - b).max()) for a, b in zip(expected, got)),
                      "one_op": any("NativeBatchNorm" in n for n in names),
                      "variance_moved": float(np.abs(expected[-1] - 1.0).max())}
    # one value per channel (batch 1, 1x1 map): PyTorch's kernel refuses it, Keras' path takes it
    layer = L.BatchNorm()
    layer.build((1, 1, 1, 3))
    single = layer(torch.ones(1, 1, 1, 3), training=True)
    out["single_value_ok"] = bool(np.isfinite(keras.ops.convert_to_numpy(single)).all())
    print("RESULT " + json.dumps(out))
''')


def test_batchnorm_trains_with_torchs_one_op_kernel_as_keras_does():
    """On the PyTorch backend BatchNorm trains with torch's batch-norm kernel: Keras BatchNormalization's outputs,
    gradients and moving statistics (the biased variance, Keras' momentum), also under mixed precision."""
    env = dict(os.environ, KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", TORCH_BATCHNORM], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    # under mixed precision both cast the same float32 result to bfloat16: a last-bit difference there can move
    # a value by one bfloat16 step (1/128 of it)
    for dtype, tol in (("float32", 2e-5), ("mixed_bfloat16", 0.1)):
        assert out[dtype]["one_op"], out
        assert out[dtype]["max_diff"] < tol, out
        assert out[dtype]["variance_moved"] > 0.1, out
    assert out["single_value_ok"]


TORCH_STRIDED = textwrap.dedent('''
    import json
    import keras, numpy as np, torch
    from keras import ops
    from keras_evit import layers as L

    out = {}
    for depthwise in (False, True):
        layer = L.ConvBN(4, 3, strides=2, depthwise=depthwise)
        x0 = torch.tensor(np.random.RandomState(0).randn(2, 9, 8, 4).astype("float32"))
        layer.build(tuple(x0.shape))
        saved = []

        def pack(t):
            saved.append(tuple(t.shape))
            return t

        x = x0.clone().requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = layer(x, training=True)
        grads = torch.autograd.grad((y * y).sum(), [x, layer.conv.kernel.value])
        # the reference: Keras' "valid" convolution of the explicitly padded map, then the same BatchNorm
        x_ref = x0.clone().requires_grad_(True)
        layer.bn.moving_mean.assign(np.zeros(4, "float32")); layer.bn.moving_variance.assign(np.ones(4, "float32"))
        y_ref = layer.bn(layer.conv(ops.pad(x_ref, [[0, 0], [1, 1], [1, 1], [0, 0]])), training=True)
        grads_ref = torch.autograd.grad((y_ref * y_ref).sum(), [x_ref, layer.conv.kernel.value])
        diff = max(float((a - b).abs().max()) for a, b in zip([y, *grads], [y_ref, *grads_ref]))
        out[str(depthwise)] = {"max_diff": diff, "shape": list(y.shape),
                               # the 9 x 8 input padded by one on each side, as NHWC or as an NCHW view
                               "padded_copy_saved": any((11, 10) in (s[1:3], s[2:4]) for s in saved if len(s) == 4)}
    print("RESULT " + json.dumps(out))
''')


def test_strided_convbn_on_torch_pads_inside_the_convolution():
    """On the PyTorch backend a stride-2 ConvBN pads inside PyTorch's convolution: Keras' explicitly padded
    convolution's outputs and gradients, with no padded copy of the input kept for the backward pass."""
    env = dict(os.environ, KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", TORCH_STRIDED], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    for depthwise in ("False", "True"):
        assert out[depthwise]["shape"] == [2, 5, 4, 4], out
        assert out[depthwise]["max_diff"] < 1e-4, out
        assert not out[depthwise]["padded_copy_saved"], out


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
