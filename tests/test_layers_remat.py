"""Rematerialization under ``keras.RematScope``: the same training, step for step (weights and BatchNorm statistics),
with far fewer activations kept for the backward pass; inference unchanged. TensorFlow here, JAX and PyTorch each
in a process of its own: tests/test_backends.py."""

import contextlib
import inspect
import json
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_evit as ke
from keras_evit.benchmarks.training_memory import keras_saved_for_backward_mb
from keras_evit.layers.remat import remat_layer_names
from keras_evit.training import build_before_fit

from conftest import run_python

SIZE = 64

# a small EfficientViT from the same layers, named as the models name them (remat_scope finds its blocks): stem,
# three stages of one sandwich block, two subsample blocks; traced in seconds, where M0 takes a minute
def mini(scope, dtype=None):
    import keras
    from keras_evit.models.architecture import build_stages

    with scope:
        inputs = keras.Input((64, 64, 3))
        features = build_stages(inputs, (32, 48, 64), (1, 1, 1), (2, 2, 2), (3, 3, 3, 3), dtype=dtype)[-1]
        return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(dtype=dtype)(features))


def _trained(scope):
    """The keras.applications transfer recipe on the small model: the backbone called as a layer, under mixed
    precision, the user's own Dense softmax head; two steps."""
    keras.utils.set_random_seed(0)
    backbone = mini(scope, dtype="mixed_bfloat16")
    inputs = keras.Input((64, 64, 3))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", dtype="float32")(backbone(inputs)))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x, y = np.random.RandomState(0).uniform(-2, 2, (4, 64, 64, 3)).astype("float32"), np.array([0, 1, 2, 0])
    build_before_fit(model, (x, y))  # the training step traced once
    for _ in range(2):
        model.train_on_batch(x, y)
    return model, x


def test_training_is_the_same_step_for_step():
    """BatchNorm's statistics move once per step, as without rematerialization (run again in the backward pass,
    they would move twice); nested rematerialized layers: test_two_replicas_with_synchronized_batchnorm."""
    plain, x = _trained(contextlib.nullcontext())
    remat, _ = _trained(ke.remat_scope())
    means = [w for w in plain.weights if w.path.endswith("moving_mean")]
    assert len(means) > 15 and min(float(np.abs(np.asarray(w)).max()) for w in means) > 0  # all moved from 0
    for a, b in zip(plain.weights, remat.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, err_msg=a.path)
    np.testing.assert_allclose(plain.predict(x, verbose=0), remat.predict(x, verbose=0), atol=1e-5)


# two replicas (two logical CPUs, made before TensorFlow starts) with synchronized BatchNorm, as `keras-evit train`
# runs distributed, against one device on the whole batch: synchronized statistics are the whole batch's, so the
# statistics move once per step there too, nested rematerialization included; both replicas end equal
TWO_REPLICAS = inspect.getsource(mini) + textwrap.dedent('''
    import json
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import keras_evit as ke
    from keras_evit.training.distributed import synchronize_batchnorm

    x = np.random.RandomState(0).uniform(-2, 2, (8, 64, 64, 3)).astype("float32")
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])

    def trained(strategy, scope):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            backbone = mini(scope)
            model = keras.Sequential([backbone, keras.layers.Dense(3)])
            synchronize_batchnorm(model)
            model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=2, verbose=0)
        return model

    one = trained(tf.distribute.get_strategy(), ke.remat_scope())
    # Keras' own mode there: our layers rematerialized inside rematerialized layers
    two = trained(tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"]), keras.RematScope(mode="larger_than"))
    replicas = max(float(np.abs(c.numpy() - w.value.values[0].numpy()).max())
                   for w in two.weights for c in w.value.values)
    print(json.dumps({"weights": max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                                     for a, b in zip(one.weights, two.weights)), "replicas": replicas}))
''')


@pytest.mark.slow  # a fresh process with two replicas
def test_two_replicas_with_synchronized_batchnorm(tmp_path):
    script = tmp_path / "two_replicas.py"
    script.write_text(TWO_REPLICAS)
    result = json.loads(run_python([str(script)]).strip().splitlines()[-1])
    assert result["weights"] <= 1e-4 and result["replicas"] == 0, result


def test_far_fewer_activations_are_kept_for_backward():
    x = np.random.RandomState(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    y = np.array([0, 1])
    plain = ke.EfficientViTM0(weights=None, input_shape=(SIZE, SIZE, 3), classes=3, classifier_activation=None)
    with ke.remat_scope():
        remat = ke.EfficientViTM0(weights=None, input_shape=(SIZE, SIZE, 3), classes=3, classifier_activation=None)
    kept_plain = keras_saved_for_backward_mb(plain, x, y)
    kept_remat = keras_saved_for_backward_mb(remat, x, y)
    assert kept_remat < 0.25 * kept_plain, (kept_remat, kept_plain)


def test_names_cover_every_block_of_every_variant():
    names = set(remat_layer_names())
    for variant in ke.VARIANTS:
        model = ke.build_model(variant, weights=None, input_shape=(SIZE, SIZE, 3), classes=3)
        blocks = {layer.name for layer in model.layers
                  if isinstance(layer, (ke.layers.PatchEmbedding, ke.layers.SubsampleBlock,
                                        ke.layers.EfficientViTBlock))}
        assert blocks and blocks <= names, (variant, blocks - names)


def test_head_dropout_is_not_recomputed():
    """A recomputed dropout would draw another mask than the forward pass: the head keeps its activations."""
    with keras.RematScope(mode="full"):
        head = ke.layers.NormLinear(3, dropout=0.5)
        plain_head = ke.layers.NormLinear(3)
    x = np.zeros((2, 8), "float32")
    call, plain_call = head.call, plain_head.call
    assert head.rematerialized_call(call, x, training=True) is call
    assert plain_head.rematerialized_call(plain_call, x, training=True) is not plain_call


def test_train_command_takes_remat():
    from keras_evit.cli.main import build_parser
    from keras_evit.cli.training import _recipe

    args = build_parser().parse_args(["train", "--model", "m0", "--data", "digits", "--output", "/tmp/x", "--remat"])
    assert _recipe(args, "imagenet").remat is True
    args = build_parser().parse_args(["train", "--model", "m0", "--data", "digits", "--output", "/tmp/x"])
    assert _recipe(args, "imagenet").remat is False


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
