"""keras_evit.layers.initializers: PyTorch's default conv init, drawn in fixed-size blocks."""

import keras
import numpy as np

from keras_evit.layers.initializers import TorchUniform, torch_conv_initializer


def test_torch_uniform_has_pytorchs_bounds_and_spread_across_blocks():
    """Shapes smaller and larger than a block (the larger cut from two draws): every value inside
    +-1/sqrt(fan_in), mean 0, std bound/sqrt(3), and the two blocks are not the same numbers."""
    init = torch_conv_initializer(64 * 9)
    bound = 1 / np.sqrt(64 * 9)
    for shape in [(3, 3, 64, 1), (1, 1, 384, 768)]:
        w = keras.ops.convert_to_numpy(init(shape))
        assert w.shape == shape and w.dtype == np.float32
        assert -np.float32(bound) <= w.min() and w.max() <= np.float32(bound)  # the float32 bound can be drawn
        # five standard errors of a uniform sample of this size: mean bound/sqrt(3n), std 0.258 bound/sqrt(n)
        n = w.size
        assert abs(w.mean()) < 5 * bound / np.sqrt(3 * n)
        assert abs(w.std() - bound / np.sqrt(3)) < 5 * 0.258 * bound / np.sqrt(n)
    flat = w.reshape(-1)
    assert not np.array_equal(flat[:1000], flat[TorchUniform.BLOCK:TorchUniform.BLOCK + 1000])


def test_torch_uniform_seeds_as_random_uniform_does():
    """An int seed gives the same values each call; unseeded instances differ from each other but repeat
    under keras.utils.set_random_seed."""
    a = TorchUniform(-0.1, 0.1, seed=3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(a((4, 5))), keras.ops.convert_to_numpy(a((4, 5))))
    keras.utils.set_random_seed(0)
    first = [keras.ops.convert_to_numpy(TorchUniform(-0.1, 0.1)((4, 5))) for _ in range(2)]
    keras.utils.set_random_seed(0)
    again = [keras.ops.convert_to_numpy(TorchUniform(-0.1, 0.1)((4, 5))) for _ in range(2)]
    assert not np.array_equal(*first)
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)


def test_torch_uniform_serializes_and_other_dtypes_draw_as_random_uniform():
    init = TorchUniform(-0.25, 0.25, seed=1)
    back = keras.initializers.deserialize(keras.initializers.serialize(init))
    assert type(back) is TorchUniform and back.get_config() == init.get_config()
    half = keras.ops.convert_to_numpy(init((8, 8), dtype="float16"))
    assert half.dtype == np.float16 and np.abs(half).max() <= 0.25
