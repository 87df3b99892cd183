import pytest

import keras_evit as ke
from keras_evit import configs
from keras_evit.configs import VARIANTS, get_variant

# the reference's trainable parameters, and Keras totals (incl. BN moving statistics)
TRAINABLE = {"m0": 2_349_436, "m1": 2_980_560, "m2": 4_187_554, "m3": 6_900_722, "m4": 8_804_228,
             "m5": 12_473_772}
TOTAL = {"m0": 2_378_092, "m1": 3_012_784, "m2": 4_225_538, "m3": 6_949_746, "m4": 8_859_236,
         "m5": 12_548_028}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_parameter_counts(variant):
    model = ke.build_model(variant, weights=None)
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    assert trainable == TRAINABLE[variant]
    assert model.count_params() == TOTAL[variant]


@pytest.mark.parametrize("name", ["m3", "M3", "efficientvit_m3", "EfficientViTM3"])
def test_variant_aliases(name):
    assert get_variant(name)[0] == "m3"


def test_unknown_variant_names_choices():
    with pytest.raises(ValueError, match="Unknown EfficientViT variant 'b1'.*m0, m1"):
        get_variant("b1")


def test_one_row_of_facts_per_variant():
    """Config, release file, preprocessing, top-1 and license in one place; unknown file facts stay None."""
    for key, cfg in configs.VARIANTS.items():
        facts = configs.pretrained_cfg(key)
        assert facts["architecture"] == cfg.name and facts["top1"] == cfg.top1
        assert facts["url"] == f"{configs.RELEASE_URL}/efficientvit_{key}.pth"
        assert (facts["mean"], facts["std"], facts["crop_pct"]) == (configs.IMAGENET_MEAN, configs.IMAGENET_STD, 0.875)
        assert facts["file_sha256"] is None and "none published" in facts["file_check"]
