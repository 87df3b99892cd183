"""PyTorch's default conv/linear init, drawn so that the JAX backend compiles one program for every shape."""

import math

import keras
import numpy as np

register = keras.saving.register_keras_serializable(package="keras_evit")


@register
class TorchUniform(keras.initializers.RandomUniform):
    """uniform(minval, maxval) drawn in blocks of ``BLOCK`` numbers, then cut to the weight's shape.

    Keras' ``RandomUniform`` on JAX compiles one XLA program per weight shape: 61 programs and ~10 s before
    an M0 is built, in every new process, weights file or not. The block has one shape, so one program serves
    every weight. Same distribution and seeding rules as ``RandomUniform`` (the values differ). Where the
    draw cannot become NumPy (inside a trace) or the dtype is not float32, it draws as ``RandomUniform``."""

    BLOCK = 1 << 16

    def __call__(self, shape, dtype=None):
        dtype = keras.backend.standardize_dtype(dtype or keras.config.floatx())
        size = math.prod(shape)
        if dtype != "float32" or not size:
            return super().__call__(shape, dtype)
        blocks = []
        for i in range(-(-size // self.BLOCK)):
            seed = self.seed + i if isinstance(self.seed, int) else self.seed
            block = keras.random.uniform((self.BLOCK,), self.minval, self.maxval, dtype="float32", seed=seed)
            try:
                blocks.append(keras.ops.convert_to_numpy(block))
            except Exception:  # a symbolic tensor or tracer (a weight made inside a traced function)
                return super().__call__(shape, dtype)
        return np.concatenate(blocks)[:size].reshape(shape)


def torch_conv_initializer(fan_in):
    """PyTorch's default conv/linear init (kaiming-uniform, a=sqrt(5)) is uniform(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return TorchUniform(-bound, bound)
