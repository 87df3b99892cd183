import pytest

from keras_evit.training import get_recipe
from keras_evit.training.optim import NO_DECAY, make_optimizer, make_schedule


def test_paper_recipe_defaults():
    r = get_recipe()
    assert (r.epochs, r.batch_size, r.weight_decay, r.label_smoothing) == (300, 2048, 0.025, 0.1)
    assert r.peak_lr == pytest.approx(4e-3)  # 1e-3 x 2048 / 512
    assert (r.mixup, r.cutmix, r.random_erasing, r.ema_decay, r.agc_clip) == (0.8, 1.0, 0.25, 0.99996, 0.02)
    assert (r.randaugment_magnitude, r.warmup_epochs, r.min_lr) == (9, 5.0, 1e-5)
    assert get_recipe(batch_size=256).peak_lr == pytest.approx(5e-4)


def test_unknown_overrides_and_presets():
    with pytest.raises(ValueError, match="unknown recipe fields"):
        get_recipe(learning_rate=1)
    with pytest.raises(ValueError, match="unknown recipe 'fast'"):
        get_recipe("fast")


def test_schedule_warmup_then_cosine():
    r = get_recipe(epochs=10, warmup_epochs=2)
    sched = make_schedule(r, steps_per_epoch=100)
    lr = lambda step: float(sched(step))  # noqa: E731
    assert lr(0) == pytest.approx(1e-6)
    assert lr(200) == pytest.approx(r.peak_lr, rel=1e-4)
    assert lr(100) == pytest.approx((1e-6 + r.peak_lr) / 2, rel=1e-3)
    assert lr(1000) == pytest.approx(r.min_lr, rel=1e-3)
    assert lr(600) < lr(400) < lr(200)


def test_no_weight_decay_on_biases_bn_and_attention_biases():
    import keras_evit as ke

    model = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3))
    opt = make_optimizer(get_recipe(), steps_per_epoch=10)
    opt.build(model.trainable_variables)
    decayed = {v.path.split("/")[-1] for v in model.trainable_variables if opt._use_weight_decay(v)}
    assert decayed == {"kernel"}
    assert all(any(n in v.path for n in NO_DECAY) for v in model.trainable_variables if not opt._use_weight_decay(v))
