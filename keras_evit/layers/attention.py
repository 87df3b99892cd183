"""Cascaded group attention and the local-window wrapper (docs/ARCHITECTURE.md)."""

import keras
import numpy as np
from keras import ops

from ..configs import KEY_DIM, WINDOW_SIZE
from .conv import ConvBN
from .remat import Rematerializable

register = keras.saving.register_keras_serializable(package="keras_evit")


def attention_bias_index(resolution):
    """(N, N) index into the (r*r,) bias table: |drow| * r + |dcol| (closed form)."""
    rows, cols = np.divmod(np.arange(resolution * resolution), resolution)
    return (np.abs(rows[:, None] - rows[None, :]) * resolution
            + np.abs(cols[:, None] - cols[None, :])).astype("int32")


@register
class CascadedGroupAttention(Rematerializable, keras.layers.Layer):
    """Attention on an (r, r) window where head i sees channel split i plus head i-1's output.

    Heads are sequential by construction, so they are a Python loop of small ops, not one batched
    matmul. The learned bias table (heads, r*r) is gathered into (heads, N, N) with a constant index.
    """

    def __init__(self, num_heads, kernels, key_dim=KEY_DIM, fused=False, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.kernels = tuple(int(k) for k in kernels)
        self.key_dim = int(key_dim)
        self.fused = bool(fused)
        self.scale = self.key_dim ** -0.5
        if len(self.kernels) < self.num_heads:
            raise ValueError(f"{self.name}: {self.num_heads} heads need as many kernels, got {self.kernels}")
        self.resolution = None
        self.qkvs, self.dws, self.proj = [], [], None

    def build(self, input_shape):
        _, height, width, dim = input_shape
        if height is None or height != width:
            raise ValueError(f"{self.name}: CascadedGroupAttention needs a static square window, got "
                             f"{height}x{width}")
        if dim % self.num_heads:
            raise ValueError(f"{self.name}: {dim} channels do not split into {self.num_heads} heads")
        self.resolution = int(height)
        self.val_dim = dim // self.num_heads
        split_shape = (input_shape[0], height, width, self.val_dim)
        for i in range(self.num_heads):
            qkv = ConvBN(2 * self.key_dim + self.val_dim, fused=self.fused, name=f"qkvs-{i}",
                         dtype=self.dtype_policy)
            dw = ConvBN(self.key_dim, self.kernels[i], depthwise=True, fused=self.fused, name=f"dws-{i}",
                        dtype=self.dtype_policy)
            qkv.build(split_shape)
            dw.build(split_shape[:3] + (self.key_dim,))
            self.qkvs.append(qkv)
            self.dws.append(dw)
        self.proj = ConvBN(dim, bn_gamma_init=0.0, fused=self.fused, name="proj-1", dtype=self.dtype_policy)
        self.proj.build(split_shape[:3] + (self.val_dim * self.num_heads,))
        self.attention_biases = self.add_weight(
            shape=(self.num_heads, self.resolution ** 2), initializer="zeros", name="attention_biases")
        self._bias_index = attention_bias_index(self.resolution)
        self.built = True

    def call(self, x, training=None, return_attention_scores=False):
        """``return_attention_scores``: also return the per-head maps softmax(QK^T * scale + bias),
        (batch, heads, N, N), as ``keras.layers.MultiHeadAttention`` does; the output is unchanged."""
        size = self.resolution
        tokens = size * size
        kd, vd = self.key_dim, self.val_dim
        splits = ops.split(x, self.num_heads, axis=-1)
        table = ops.reshape(self.attention_biases, (-1,))
        outputs, maps = [], []
        feat = splits[0]
        for i in range(self.num_heads):
            if i > 0:
                feat = feat + splits[i]
            qkv = self.qkvs[i](feat, training=training)
            if self.fused:  # deploy form: slices, which XNNPACK runs (it has no SPLIT_V)
                q, k, v = qkv[..., :kd], qkv[..., kd:2 * kd], qkv[..., 2 * kd:]
            else:  # its gradient is one concat, not 3 pads
                q, k, v = ops.split(qkv, [kd, 2 * kd], axis=-1)
            q = self.dws[i](q, training=training)
            q = ops.reshape(q, (-1, tokens, kd)) * self.scale
            k = ops.reshape(k, (-1, tokens, kd))
            v = ops.reshape(v, (-1, tokens, vd))
            # each head gathers its own (N, N) bias: a constant once exported, not a slice of one
            attn = ops.matmul(q, ops.transpose(k, (0, 2, 1))) + ops.take(table, self._bias_index + i * tokens)
            if tokens == 1:  # softmax over one key is exactly 1; keep q/k/bias gradients zero, not None
                attn = attn * 0.0 + 1.0
            else:
                attn = ops.softmax(attn, axis=-1)
            if return_attention_scores:
                maps.append(attn)
            feat = ops.reshape(ops.matmul(attn, v), (-1, size, size, vd))
            outputs.append(feat)
        out = ops.concatenate(outputs, axis=-1) if len(outputs) > 1 else outputs[0]
        out = self.proj(ops.relu(out), training=training)
        if return_attention_scores:
            return out, ops.stack(maps, axis=1)
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "kernels": list(self.kernels),
                "key_dim": self.key_dim, "fused": self.fused}


class AttentionRecorder:
    """Where a window-attention layer puts its maps while ``keras_evit.attention_maps`` records: ``maps`` is a
    list then, else None. A plain object, so Keras tracks neither it nor the list."""

    def __init__(self):
        self.maps = None


@register
class LocalWindowAttention(Rematerializable, keras.layers.Layer):
    """Runs the CGA on non-overlapping windows of ``min(window_size, H, W)``.

    The map is zero-padded bottom/right to whole windows (padded tokens are not masked, as in the
    reference); a map exactly one window big is attended whole. Partition and reverse use rank-4
    reshapes/transposes only, which TFLite and its GPU delegate support.
    """

    def __init__(self, num_heads, kernels, key_dim=KEY_DIM, window_size=WINDOW_SIZE, fused=False, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.kernels = tuple(int(k) for k in kernels)
        self.key_dim = int(key_dim)
        self.window_size = int(window_size)
        self.fused = bool(fused)
        self.attn = CascadedGroupAttention(self.num_heads, self.kernels, self.key_dim, fused=fused, name="attn",
                                           dtype=self.dtype_policy)
        self.capture = AttentionRecorder()

    def build(self, input_shape):
        _, height, width, dim = input_shape
        if height is None or width is None:
            raise ValueError(f"{self.name}: window attention needs a static feature-map size")
        self.window_resolution = min(self.window_size, height, width)
        self.attn.build((input_shape[0], self.window_resolution, self.window_resolution, dim))
        self.built = True

    def call(self, x, training=None, return_attention_scores=False):
        """``return_attention_scores``: also return the maps as (batch, windows down, windows across,
        heads, N, N) with N = window tokens, row-major inside each (zero-padded) window."""
        want = return_attention_scores or self.capture.maps is not None
        out, scores = self._attend(x, training, want)
        if self.capture.maps is not None:
            self.capture.maps.append(scores)
        return (out, scores) if return_attention_scores else out

    def _attention(self, windows, training, want_scores):
        if want_scores:
            return self.attn(windows, training=training, return_attention_scores=True)
        return self.attn(windows, training=training), None

    def _attend(self, x, training, want_scores):
        """(output, scores or None); the maps are only computed when asked for."""
        _, height, width, dim = x.shape
        ws = self.window_resolution
        if height == ws and width == ws:
            out, scores = self._attention(x, training, want_scores)
            return out, None if scores is None else ops.reshape(scores, (-1, 1, 1) + tuple(scores.shape[1:]))
        pad_b, pad_r = (ws - height % ws) % ws, (ws - width % ws) % ws
        if pad_b or pad_r:
            x = ops.pad(x, [[0, 0], [0, pad_b], [0, pad_r], [0, 0]])
        ph, pw = height + pad_b, width + pad_r
        nh, nw = ph // ws, pw // ws
        # (B, nh*ws, nw*ws, C) -> (B*nh, ws, nw, ws*C) -> (B*nh, nw, ws, ws*C) -> (B*nh*nw, ws, ws, C)
        x = ops.reshape(x, (-1, ws, nw, ws * dim))
        x = ops.transpose(x, (0, 2, 1, 3))
        x = ops.reshape(x, (-1, ws, ws, dim))
        x, scores = self._attention(x, training, want_scores)
        x = ops.reshape(x, (-1, nw, ws, ws * dim))
        x = ops.transpose(x, (0, 2, 1, 3))
        x = ops.reshape(x, (-1, ph, pw, dim))
        if pad_b or pad_r:
            x = x[:, :height, :width, :]
        return x, None if scores is None else ops.reshape(scores, (-1, nh, nw) + tuple(scores.shape[1:]))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "kernels": list(self.kernels),
                "key_dim": self.key_dim, "window_size": self.window_size, "fused": self.fused}
