"""Eager outputs in batches: predict's numbers, the model's output structure, every image once."""

import keras
import numpy as np
import pytest

from keras_evit.models.inference import outputs


def test_batched_eager_outputs_equal_predict_for_one_and_two_outputs():
    inputs = keras.Input((6, 6, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    logits = keras.layers.Dense(3)(features)
    x = np.random.RandomState(0).uniform(0, 255, (37, 6, 6, 3)).astype("float32")  # 2 full batches and 5
    single = keras.Model(inputs, logits)
    np.testing.assert_allclose(outputs(single, x), single.predict(x, batch_size=16, verbose=0), rtol=1e-6)
    pair = keras.Model(inputs, {"logits": logits, "features": features})
    got, expected = outputs(pair, x), pair.predict(x, verbose=0)
    assert set(got) == {"logits", "features"} and got["logits"].shape == (37, 3)
    for key in got:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6)


def test_dropout_is_off_and_no_images_is_an_error():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dropout(0.9)])
    x = np.ones((20, 8), "float32")
    np.testing.assert_array_equal(outputs(model, x, batch_size=7), x)  # inference mode: nothing dropped
    with pytest.raises(ValueError, match="no images"):
        outputs(model, x[:0])
