"""Same weights in, same logits out: the Keras port against timm's efficientvit_m0..m5."""


import numpy as np

from keras_evit.compat import sublayers
import pytest

import keras_evit as ke
from keras_evit.configs import VARIANTS
from keras_evit.weights import assign_state_dict

from conftest import random_images, raw_images, timm_vs_keras

TOL = 1e-4


def _pair(ref, variant, height, width=None, timm_size=None, include_preprocessing=True):
    width = width or height
    tm = ref.create_timm_model(variant, img_size=timm_size or (height, width))
    km = ke.build_model(variant, weights=None, input_shape=(height, width, 3), classifier_activation=None,
                        include_preprocessing=include_preprocessing)
    assign_state_dict(km, ref.timm_state_dict(tm), variant=variant)
    return tm, km


_max_diff = timm_vs_keras


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_parity_224(ref, variant):
    """Raw RGB into the model (it normalizes inside), normalized images into timm."""
    tm, km = _pair(ref, variant, 224)
    assert _max_diff(ref, tm, km, raw_images(2, 224)) <= TOL


@pytest.mark.parametrize("variant", ["m0", "m5"])
def test_parity_224_without_preprocessing(ref, variant):
    tm, km = _pair(ref, variant, 224, include_preprocessing=False)
    assert _max_diff(ref, tm, km, random_images(2, 224)) <= TOL


@pytest.mark.parametrize("variant,size", [("m0", 288), ("m4", 256)])
def test_parity_with_window_padding(ref, variant, size):
    """288: stage 1 is 18x18 -> padded to 21x21 (3x3 windows), stage 2 9x9 -> 14x14."""
    tm, km = _pair(ref, variant, size, include_preprocessing=False)
    lwa = km.get_layer("stages-0-blocks-0").mixer
    assert lwa.window_resolution == 7 and (size // 16) % 7 != 0
    assert _max_diff(ref, tm, km, random_images(2, size)) <= TOL


def test_parity_non_square(ref):
    tm, km = _pair(ref, "m2", 224, 160)
    assert _max_diff(ref, tm, km, raw_images(2, 224, 160)) <= TOL


def test_bias_tables_resized_like_timm(ref):
    """224 weights into a 160 px model: bias tables 7x7 -> 5x5 (stage 2), 4x4 -> 3x3 (stage 3)."""
    tm = ref.create_timm_model("m2", img_size=224)
    state = ref.timm_state_dict(tm)
    tm.set_input_size(160)
    km = ke.build_model("m2", weights=None, input_shape=(160, 160, 3), classifier_activation=None)
    with pytest.warns(UserWarning, match="Resized attention-bias tables.*49->25"):
        assign_state_dict(km, state, variant="m2")
    assert _max_diff(ref, tm, km, raw_images(2, 160)) <= TOL


def test_parity_is_sensitive_to_attention_biases(ref):
    """Guard against a port that ignores the biases (the candle bug): zeroing them must show."""
    tm, km = _pair(ref, "m0", 224)
    for layer in sublayers(km):
        if isinstance(layer, ke.layers.CascadedGroupAttention):
            layer.attention_biases.assign(np.zeros(layer.attention_biases.shape, "float32"))
    assert _max_diff(ref, tm, km, raw_images(2, 224)) > 10 * TOL


def test_resize_matches_timm_function(ref):
    import torch
    from timm.layers import resize_rel_pos_bias_table_levit

    from keras_evit.weights import resize_bias_table

    table = np.random.RandomState(0).randn(3, 49).astype("float32")
    for new in (4, 5, 9):
        expected = resize_rel_pos_bias_table_levit(torch.from_numpy(table.T), (new * new, 3)).T.numpy()
        np.testing.assert_allclose(resize_bias_table(table, new), expected, atol=1e-5)
