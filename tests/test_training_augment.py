"""The training transforms: the paper's probabilities, and RandAugment running only what it picks."""

import numpy as np

from conftest import require

tf = require("tensorflow")


def test_random_erasing_hits_the_papers_fraction_of_images():
    """timm's reprob 0.25 erases a quarter of the images (Keras' factor=0.25 alone would erase an eighth)."""
    from keras_evit.training.augment import erase_with_probability

    erase = tf.function(erase_with_probability(0.25, seed=0))
    image = tf.fill((32, 32, 3), 128.0)
    erased = sum(bool(tf.reduce_any(erase(image) != image)) for _ in range(800))
    assert 0.25 * 800 - 50 <= erased <= 0.25 * 800 + 50, erased  # binomial sd ~12


def test_rand_augment_runs_only_the_ops_it_picks():
    """It picks among the layer's own 11 ops, keeps the image's shape, dtype and value range, and augments."""
    import keras

    from keras_evit.compat import rand_augment_ops
    from keras_evit.training.augment import chosen_ops_only

    layer = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.9, seed=0)
    ops = rand_augment_ops(layer)
    assert len(ops) == 11 and all(isinstance(op, keras.layers.Layer) for op in ops)
    fn = tf.function(chosen_ops_only(layer))
    image = tf.random.stateless_uniform((48, 40, 3), (1, 2), 0, 255)
    outputs = [fn(image) for _ in range(20)]
    assert all(tuple(o.shape) == (48, 40, 3) and o.dtype == tf.float32 for o in outputs)
    assert sum(not np.allclose(o, image) for o in outputs) >= 15  # augmented, not passed through
    assert all(np.isfinite(o).all() and float(tf.reduce_min(o)) >= 0 and float(tf.reduce_max(o)) <= 255.5
               for o in outputs)
