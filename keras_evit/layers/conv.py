"""Convolutional building blocks: ConvBN and what is made of it (stem, FFN, patch merging, head).

Every layer takes ``fused``: False holds Conv + BatchNorm as trained; True holds one Conv with bias,
the deploy form that :func:`keras_evit.fuse_batchnorm` produces. Sublayer names follow timm's module
names so that variable paths map to timm keys by one rule (see ``keras_evit.weights.keymap``).
"""

import keras
import numpy as np
from keras import ops

from ..configs import BN_EPSILON, BN_MOMENTUM, MLP_RATIO
from .initializers import torch_conv_initializer
from .norm import BatchNorm
from .remat import Rematerializable

register = keras.saving.register_keras_serializable(package="keras_evit")


def bn_scale_shift(bn):
    """BatchNorm in inference as y = x * scale + shift (float64), for folding into a conv/linear."""
    gamma, beta, mean, var = (np.asarray(w, np.float64) for w in bn.get_weights())
    scale = gamma / np.sqrt(var + bn.epsilon)
    return scale, beta - mean * scale


def _conv_output_size(size, kernel_size, strides):
    if size is None:
        return None
    pad = kernel_size // 2
    return (size + 2 * pad - kernel_size) // strides + 1


def depthwise_by_shifts(x, kernel, strides):
    """Depthwise conv ("valid", depth multiplier 1) as k*k shifted multiply-adds: what XLA's CPU backend
    fuses well (its grouped-convolution lowering is ~30x slower than TensorFlow's kernel, forward and
    backward; docs/benchmarks.md). Same sums as the convolution, in another order."""
    k = kernel.shape[0]
    height, width = x.shape[1], x.shape[2]
    out_h, out_w = (height - k) // strides + 1, (width - k) // strides + 1
    out = None
    for i in range(k):
        for j in range(k):
            tap = x[:, i:i + strides * (out_h - 1) + 1:strides, j:j + strides * (out_w - 1) + 1:strides, :]
            term = tap * kernel[i, j, :, 0]
            out = term if out is None else out + term
    return out


@register
class DepthwiseConv(keras.layers.DepthwiseConv2D):
    """keras ``DepthwiseConv2D`` (same variables, same results) that runs as shifted multiply-adds where
    XLA compiles for a CPU (JAX on CPU, TensorFlow ``jit_compile=True`` without a GPU), and as the
    native kernel everywhere else (TensorFlow graph, GPUs, PyTorch, TFLite/ONNX export)."""

    def call(self, inputs):
        from ..compat import xla_on_cpu

        plain = (self.depth_multiplier != 1 or max(self.dilation_rate) != 1 or self.data_format != "channels_last"
                 or None in inputs.shape[1:3])
        if plain or not xla_on_cpu():
            return super().call(inputs)
        x = inputs
        if self.padding == "same":
            p = self.kernel_size[0] // 2
            x = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
        out = depthwise_by_shifts(x, self.kernel, self.strides[0])
        if self.use_bias:
            out = out + self.bias
        return out


def _plain_conv(conv):
    """Whether ``conv`` is a channels-last, undilated convolution (depthwise: one output per channel), which the
    backend-specific padded convolutions below compute exactly."""
    return (conv.data_format == "channels_last" and max(conv.dilation_rate) == 1
            and (not isinstance(conv, keras.layers.DepthwiseConv2D) or conv.depth_multiplier == 1))


def _repad_in_backward_applies(conv, x):
    from ..compat import xla_on_cpu

    return keras.config.backend() == "tensorflow" and _plain_conv(conv) and not xla_on_cpu()


def _torch_padded_conv(conv, x, pad):
    """``conv`` on ``x`` zero-padded by ``pad`` on each side, on the PyTorch backend: PyTorch's convolution pads
    as it reads (its own symmetric ``padding``), so no padded copy is made, nor kept for the backward pass
    (Keras' "valid" convolution after ``ops.pad`` keeps one: the stem's and the downsamplings' inputs, again)."""
    import torch

    kernel = ops.cast(conv.kernel, x.dtype)
    if isinstance(conv, keras.layers.DepthwiseConv2D):  # (kh, kw, C, 1) -> (C, 1, kh, kw), a group per channel
        weight, groups = kernel.permute(2, 3, 0, 1), kernel.shape[2]
    else:  # (kh, kw, in, out) -> (out, in, kh, kw)
        weight, groups = kernel.permute(3, 2, 0, 1), 1
    # channels-last maps seen as NCHW views: PyTorch's channels-last kernels, no transposing copies
    y = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), weight, stride=tuple(conv.strides), padding=pad,
                                   groups=groups).permute(0, 2, 3, 1)
    return y + ops.cast(conv.bias, y.dtype) if conv.use_bias else y


def _conv_repadding_in_backward(conv, x, pad):
    """``conv`` on ``x`` zero-padded by ``pad`` on each side, for TensorFlow training: the same ops forward
    (pad, then a "valid" convolution), but the backward pass keeps ``x`` instead of its padded copy and pads
    it again when it needs it (a tenth of M5's activation memory; one cheap copy per step)."""
    import tensorflow as tf

    paddings = [[0, 0], [pad, pad], [pad, pad], [0, 0]]
    strides = [1, conv.strides[0], conv.strides[1], 1]
    depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
    forward = tf.nn.depthwise_conv2d if depthwise else tf.nn.conv2d
    backprop_input = (tf.raw_ops.DepthwiseConv2dNativeBackpropInput if depthwise
                      else tf.raw_ops.Conv2DBackpropInput)
    backprop_filter = (tf.raw_ops.DepthwiseConv2dNativeBackpropFilter if depthwise
                       else tf.raw_ops.Conv2DBackpropFilter)

    @tf.custom_gradient
    def padded_conv(x, kernel):
        def grad(dy):
            with tf.control_dependencies([dy]):  # else the executor pads as soon as x exists, in the forward pass
                padded = tf.pad(x, paddings)
            dx = backprop_input(input_sizes=tf.shape(padded), filter=kernel, out_backprop=dy, strides=strides,
                                padding="VALID")
            dkernel = backprop_filter(input=padded, filter_sizes=tf.shape(kernel), out_backprop=dy,
                                      strides=strides, padding="VALID")
            return dx[:, pad:-pad, pad:-pad, :], dkernel

        return forward(tf.pad(x, paddings), kernel, strides, "VALID"), grad

    y = padded_conv(x, ops.cast(conv.kernel, x.dtype))
    return y + ops.cast(conv.bias, y.dtype) if conv.use_bias else y


@register
class ConvBN(Rematerializable, keras.layers.Layer):
    """Conv2d (no bias) + BatchNorm2d with PyTorch padding semantics (symmetric ``k // 2``).

    ``depthwise=True`` is a depthwise conv (groups = channels). ``bn_gamma_init`` is 0 for branches
    that start as identity (docs/ARCHITECTURE.md).
    """

    def __init__(self, filters, kernel_size=1, strides=1, depthwise=False, bn_gamma_init=1.0,
                 fused=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.depthwise = bool(depthwise)
        self.bn_gamma_init = float(bn_gamma_init)
        self.fused = bool(fused)
        # stride-1 odd kernels: Keras "same" is symmetric; stride 2 needs explicit symmetric padding
        self._explicit_pad = self.strides > 1 and self.kernel_size > 1
        padding = "valid" if self._explicit_pad or self.kernel_size == 1 else "same"
        if self.depthwise:
            self.conv = DepthwiseConv(
                self.kernel_size, self.strides, padding=padding, use_bias=self.fused,
                depthwise_initializer=torch_conv_initializer(self.kernel_size ** 2), name="conv",
                dtype=self.dtype_policy)
        else:
            self.conv = keras.layers.Conv2D(
                self.filters, self.kernel_size, self.strides, padding=padding, use_bias=self.fused,
                name="conv", dtype=self.dtype_policy)
        self.bn = None if self.fused else BatchNorm(
            epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
            gamma_initializer=keras.initializers.Constant(self.bn_gamma_init), name="bn", dtype=self.dtype_policy)

    def build(self, input_shape):
        channels = input_shape[-1]
        if self.depthwise and channels != self.filters:
            raise ValueError(f"{self.name}: depthwise ConvBN needs {self.filters} input channels, got {channels}")
        if not self.depthwise:
            self.conv.kernel_initializer = torch_conv_initializer(channels * self.kernel_size ** 2)
        conv_in = list(input_shape)
        if self._explicit_pad:
            p = self.kernel_size // 2
            conv_in[1] = None if conv_in[1] is None else conv_in[1] + 2 * p
            conv_in[2] = None if conv_in[2] is None else conv_in[2] + 2 * p
        self.conv.build(tuple(conv_in))
        if self.bn is not None:
            self.bn.build(self.compute_output_shape(input_shape))
        self.built = True

    def call(self, x, training=None):
        if self._explicit_pad and training and _repad_in_backward_applies(self.conv, x):
            x = _conv_repadding_in_backward(self.conv, x, self.kernel_size // 2)
        elif self._explicit_pad and keras.config.backend() == "torch" and _plain_conv(self.conv):
            x = _torch_padded_conv(self.conv, x, self.kernel_size // 2)
        else:
            if self._explicit_pad:
                p = self.kernel_size // 2
                x = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
            x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], _conv_output_size(input_shape[1], self.kernel_size, self.strides),
                _conv_output_size(input_shape[2], self.kernel_size, self.strides), self.filters)

    def fused_weights(self):
        """[kernel, bias] of the equivalent single conv (docs/ARCHITECTURE.md)."""
        if self.fused:
            return [np.asarray(w) for w in self.conv.get_weights()]
        scale, shift = bn_scale_shift(self.bn)
        kernel = np.asarray(self.conv.get_weights()[0], np.float64)
        # output channels are axis 2 for DepthwiseConv2D (kh, kw, C, 1), axis 3 for Conv2D
        kernel = kernel * (scale[None, None, :, None] if self.depthwise else scale[None, None, None, :])
        return [kernel.astype(np.float32), shift.astype(np.float32)]

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "depthwise": self.depthwise,
                "bn_gamma_init": self.bn_gamma_init, "fused": self.fused}


@register
class TokenInteraction(ConvBN):
    """The sandwich's 3x3 depthwise ConvBN (token interaction); callers add the residual."""

    def __init__(self, filters, bn_gamma_init=0.0, fused=False, **kwargs):
        for key in ("kernel_size", "strides", "depthwise"):
            kwargs.pop(key, None)
        super().__init__(filters, 3, 1, depthwise=True, bn_gamma_init=bn_gamma_init, fused=fused, **kwargs)

    def get_config(self):
        config = super().get_config()
        for key in ("kernel_size", "strides", "depthwise"):
            config.pop(key)
        return config


@register
class PatchEmbedding(Rematerializable, keras.layers.Layer):
    """Overlapping patch embedding: four 3x3 stride-2 ConvBNs (ReLU after the first three).

    ``input_scale``/``input_offset`` (per input channel, fused stems only): the stem takes raw pixels
    ``x`` and computes what it would on ``x * scale + offset``, with that normalization folded into
    ``conv1``'s kernel and bias. Zero padding in normalized space is ``-offset/scale`` padding in raw
    space, so the outputs whose window touches the border get a constant correction (``border_bias``,
    zero elsewhere). One conv and one add instead of two broadcast element-wise ops on the full image:
    the deploy form (:func:`keras_evit.fold_normalization`).
    """

    def __init__(self, embed_dim, fused=False, input_scale=None, input_offset=None, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = int(embed_dim)
        self.fused = bool(fused)
        if (input_scale is None) != (input_offset is None):
            raise ValueError("PatchEmbedding: pass both input_scale and input_offset, or neither")
        if input_scale is not None and not self.fused:
            raise ValueError("PatchEmbedding: a folded input normalization needs fused=True")
        self.input_scale = None if input_scale is None else [float(v) for v in input_scale]
        self.input_offset = None if input_offset is None else [float(v) for v in input_offset]
        dims = [self.embed_dim // 8, self.embed_dim // 4, self.embed_dim // 2, self.embed_dim]
        self.convs = [ConvBN(d, 3, 2, fused=fused, name=f"conv{i + 1}", dtype=self.dtype_policy)
                      for i, d in enumerate(dims)]
        self.border_bias = None

    def build(self, input_shape):
        shape = input_shape
        for conv in self.convs:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        if self.input_scale is not None:
            out = self.convs[0].compute_output_shape(input_shape)
            if None in out[1:3]:
                raise ValueError("PatchEmbedding: a folded input normalization needs a static image size")
            self.border_bias = self.add_weight(shape=tuple(out[1:]), initializer="zeros", trainable=False,
                                               name="border_bias")
        self.built = True

    def call(self, x, training=None):
        for i, conv in enumerate(self.convs):
            x = conv(x, training=training)
            if i == 0 and self.border_bias is not None:
                x = x + ops.cast(self.border_bias, x.dtype)
            if i < 3:
                x = ops.relu(x)
        return x

    def compute_output_shape(self, input_shape):
        for conv in self.convs:
            input_shape = conv.compute_output_shape(input_shape)
        return input_shape

    def folded_input_weights(self, scale, offset, image_shape):
        """[conv1 kernel, conv1 bias, border_bias] that make this (fused) stem's conv1 take raw pixels
        ``x`` and give what it gives on ``x * scale + offset`` zero-padded, for ``image_shape`` (H, W)."""
        kernel, bias = (np.asarray(w, np.float64) for w in self.convs[0].fused_weights())
        scale, offset = np.asarray(scale, np.float64), np.asarray(offset, np.float64)
        k, stride, pad = kernel.shape[0], self.convs[0].strides, kernel.shape[0] // 2
        taps = np.einsum("hwio,i->hwo", kernel, offset)  # what each tap adds on a constant normalized image

        def inside(size):  # [output position, tap]: the tap reads a real pixel, not padding
            out = _conv_output_size(size, k, stride)
            pos = np.arange(out)[:, None] * stride - pad + np.arange(k)[None, :]
            return ((pos >= 0) & (pos < size)).astype(np.float64)

        full = np.einsum("ik,jl,klo->ijo", inside(image_shape[0]), inside(image_shape[1]), taps)
        interior = taps.sum(axis=(0, 1))
        return [(kernel * scale[None, None, :, None]).astype(np.float32),
                (bias + interior).astype(np.float32), (full - interior).astype(np.float32)]

    def get_config(self):
        config = {**super().get_config(), "embed_dim": self.embed_dim, "fused": self.fused}
        if self.input_scale is not None:
            config.update(input_scale=self.input_scale, input_offset=self.input_offset)
        return config


@register
class FFN(Rematerializable, keras.layers.Layer):
    """Pointwise FFN: ConvBN(E->2E) -> ReLU -> ConvBN(2E->E, gamma 0). Callers add the residual."""

    def __init__(self, dim, fused=False, **kwargs):
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.fused = bool(fused)
        self.pw1 = ConvBN(self.dim * MLP_RATIO, fused=fused, name="pw1", dtype=self.dtype_policy)
        self.pw2 = ConvBN(self.dim, bn_gamma_init=0.0, fused=fused, name="pw2", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.pw1.build(input_shape)
        self.pw2.build(self.pw1.compute_output_shape(input_shape))
        self.built = True

    def call(self, x, training=None):
        return self.pw2(ops.relu(self.pw1(x, training=training)), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "fused": self.fused}


@register
class SqueezeExcite(keras.layers.Layer):
    """timm SEModule: mean over H, W -> 1x1 conv (bias) -> ReLU -> 1x1 conv (bias) -> sigmoid gate."""

    def __init__(self, reduced_dim, **kwargs):
        super().__init__(**kwargs)
        self.reduced_dim = int(reduced_dim)
        self.fc1 = keras.layers.Conv2D(self.reduced_dim, 1, name="fc1", dtype=self.dtype_policy)
        self.fc2 = None

    def build(self, input_shape):
        channels = input_shape[-1]
        init = torch_conv_initializer(channels)
        self.fc1.kernel_initializer = self.fc1.bias_initializer = init
        init2 = torch_conv_initializer(self.reduced_dim)
        self.fc2 = keras.layers.Conv2D(channels, 1, kernel_initializer=init2, bias_initializer=init2,
                                       name="fc2", dtype=self.dtype_policy)
        self.fc1.build((input_shape[0], 1, 1, channels))
        self.fc2.build((input_shape[0], 1, 1, self.reduced_dim))
        self.built = True

    def call(self, x):
        s = ops.mean(x, axis=(1, 2), keepdims=True)
        s = self.fc2(ops.relu(self.fc1(s)))
        return x * ops.sigmoid(s)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "reduced_dim": self.reduced_dim}


@register
class PatchMerging(Rematerializable, keras.layers.Layer):
    """Stride-2 downsampling: 1x1 expand x4 -> 3x3 DW stride 2 -> SE -> 1x1 project (docs/ARCHITECTURE.md)."""

    def __init__(self, out_dim, fused=False, **kwargs):
        super().__init__(**kwargs)
        self.out_dim = int(out_dim)
        self.fused = bool(fused)
        self.conv1 = self.conv2 = self.se = None
        self.conv3 = ConvBN(self.out_dim, fused=fused, name="conv3", dtype=self.dtype_policy)

    def build(self, input_shape):
        in_dim = input_shape[-1]
        hidden = in_dim * 4
        self.conv1 = ConvBN(hidden, fused=self.fused, name="conv1", dtype=self.dtype_policy)
        self.conv2 = ConvBN(hidden, 3, 2, depthwise=True, fused=self.fused, name="conv2", dtype=self.dtype_policy)
        # make_divisible(4 * in_dim * 0.25, 8) == in_dim
        self.se = SqueezeExcite(in_dim, name="se", dtype=self.dtype_policy)
        self.conv1.build(input_shape)
        shape = self.conv1.compute_output_shape(input_shape)
        self.conv2.build(shape)
        shape = self.conv2.compute_output_shape(shape)
        self.se.build(shape)
        self.conv3.build(shape)
        self.built = True

    def call(self, x, training=None):
        x = ops.relu(self.conv1(x, training=training))
        x = ops.relu(self.conv2(x, training=training))
        return self.conv3(self.se(x), training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], _conv_output_size(input_shape[1], 3, 2),
                _conv_output_size(input_shape[2], 3, 2), self.out_dim)

    def get_config(self):
        return {**super().get_config(), "out_dim": self.out_dim, "fused": self.fused}


@register
class NormLinear(Rematerializable, keras.layers.Layer):
    """Classifier head: BatchNorm1d -> Dropout -> Linear (timm NormLinear); fused: one Dense."""

    def __init__(self, units, dropout=0.0, fused=False, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.dropout = float(dropout)
        self.fused = bool(fused)
        self.bn = None if self.fused else BatchNorm(
            epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name="bn", dtype=self.dtype_policy)
        self.drop = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy) if self.dropout > 0 else None
        self.linear = keras.layers.Dense(
            self.units, kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02), name="linear",
            dtype=self.dtype_policy)

    def build(self, input_shape):
        if self.bn is not None:
            self.bn.build(input_shape)
        self.linear.build(input_shape)
        self.built = True

    def call(self, x, training=None):
        if self.bn is not None:
            x = self.bn(x, training=training)
        if self.drop is not None:
            x = self.drop(x, training=training)
        return self.linear(x)

    def rematerialized_call(self, layer_call, *args, **kwargs):
        if self.drop is not None:  # recomputed, the dropout would draw another mask than the forward pass did
            return layer_call
        return super().rematerialized_call(layer_call, *args, **kwargs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def fused_weights(self):
        if self.fused:
            return [np.asarray(w) for w in self.linear.get_weights()]
        scale, shift = bn_scale_shift(self.bn)
        kernel, bias = (np.asarray(w, np.float64) for w in self.linear.get_weights())
        return [(kernel * scale[:, None]).astype(np.float32), (shift @ kernel + bias).astype(np.float32)]

    def get_config(self):
        return {**super().get_config(), "units": self.units, "dropout": self.dropout, "fused": self.fused}
