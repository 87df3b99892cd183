"""The sandwich block and the subsample block between stages (docs/ARCHITECTURE.md)."""

import keras

from ..configs import KEY_DIM, WINDOW_SIZE
from .attention import LocalWindowAttention
from .conv import FFN, PatchMerging, TokenInteraction
from .remat import Rematerializable

register = keras.saving.register_keras_serializable(package="keras_evit")


@register
class EfficientViTBlock(Rematerializable, keras.layers.Layer):
    """Sandwich layout, five residuals: DW -> FFN -> window attention -> DW -> FFN."""

    def __init__(self, num_heads, kernels, key_dim=KEY_DIM, window_size=WINDOW_SIZE, fused=False, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.kernels = tuple(int(k) for k in kernels)
        self.key_dim = int(key_dim)
        self.window_size = int(window_size)
        self.fused = bool(fused)
        self.mixer = LocalWindowAttention(self.num_heads, self.kernels, self.key_dim, self.window_size,
                                          fused=fused, name="mixer-m", dtype=self.dtype_policy)
        self.dw0 = self.ffn0 = self.dw1 = self.ffn1 = None

    def build(self, input_shape):
        dim = input_shape[-1]
        # "-m" mirrors timm's ResidualDrop wrapper: variable paths map to timm keys ("-" for ".")
        self.dw0 = TokenInteraction(dim, fused=self.fused, name="dw0-m", dtype=self.dtype_policy)
        self.ffn0 = FFN(dim, fused=self.fused, name="ffn0-m", dtype=self.dtype_policy)
        self.dw1 = TokenInteraction(dim, fused=self.fused, name="dw1-m", dtype=self.dtype_policy)
        self.ffn1 = FFN(dim, fused=self.fused, name="ffn1-m", dtype=self.dtype_policy)
        for layer in (self.dw0, self.ffn0, self.mixer, self.dw1, self.ffn1):
            layer.build(input_shape)
        self.built = True

    def call(self, x, training=None):
        for layer in (self.dw0, self.ffn0, self.mixer, self.dw1, self.ffn1):
            x = x + layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "kernels": list(self.kernels),
                "key_dim": self.key_dim, "window_size": self.window_size, "fused": self.fused}


@register
class SubsampleBlock(Rematerializable, keras.layers.Layer):
    """Residual DW + FFN, stride-2 patch merging (with squeeze-excite), residual DW + FFN."""

    def __init__(self, out_dim, fused=False, **kwargs):
        super().__init__(**kwargs)
        self.out_dim = int(out_dim)
        self.fused = bool(fused)
        self.patchmerge = PatchMerging(self.out_dim, fused=fused, name="patchmerge", dtype=self.dtype_policy)
        self.res2_dw = TokenInteraction(self.out_dim, bn_gamma_init=1.0, fused=fused, name="res2-0-m",
                                        dtype=self.dtype_policy)
        self.res2_ffn = None
        self.res1_dw = self.res1_ffn = None

    def build(self, input_shape):
        dim = input_shape[-1]
        self.res1_dw = TokenInteraction(dim, bn_gamma_init=1.0, fused=self.fused, name="res1-0-m",
                                        dtype=self.dtype_policy)
        self.res1_ffn = FFN(dim, fused=self.fused, name="res1-1-m", dtype=self.dtype_policy)
        self.res2_ffn = FFN(self.out_dim, fused=self.fused, name="res2-1-m", dtype=self.dtype_policy)
        self.res1_dw.build(input_shape)
        self.res1_ffn.build(input_shape)
        self.patchmerge.build(input_shape)
        out_shape = self.patchmerge.compute_output_shape(input_shape)
        self.res2_dw.build(out_shape)
        self.res2_ffn.build(out_shape)
        self.built = True

    def call(self, x, training=None):
        x = x + self.res1_dw(x, training=training)
        x = x + self.res1_ffn(x, training=training)
        x = self.patchmerge(x, training=training)
        x = x + self.res2_dw(x, training=training)
        return x + self.res2_ffn(x, training=training)

    def compute_output_shape(self, input_shape):
        return self.patchmerge.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "out_dim": self.out_dim, "fused": self.fused}
