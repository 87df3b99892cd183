"""tf.distribute helpers: strategy choice, chief detection, BN-statistics averaging, Keras 3.15 fixes."""

import json
import os

import keras

from keras_evit.compat import scalar_safe_reduce, sublayers, symbolic_build


def make_strategy(name="mirrored"):
    """mirrored (local devices), multiworker (from TF_CONFIG), tpu, or default (no distribution)."""
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multiworker needs the TF_CONFIG environment variable (cluster and task)")
        return scalar_safe_reduce(tf.distribute.MultiWorkerMirroredStrategy())
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", ""))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if name == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"unknown --strategy {name!r}: mirrored, multiworker, tpu or default")


def task_index():
    return json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0)


def is_chief():
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task", {})
    return task.get("type", "chief") == "chief" or (task.get("type") == "worker" and task.get("index", 0) == 0
                                                     and "chief" not in config.get("cluster", {}))


def prebuild(model, strategy, dataset):
    """Builds metrics/optimizer state from one local batch before ``fit``.

    Keras 3.15's ``fit`` otherwise reduces a first *distributed* batch eagerly to build them, which
    MultiWorkerMirroredStrategy rejects ("Attempt to convert a value (PerReplica...)").
    """
    batch = next(iter(dataset))
    with strategy.scope():
        symbolic_build(model, batch)


def synchronize_batchnorm(model):
    """Batch statistics over the global batch (all replicas) instead of each replica's shard.

    Every replica then updates identical BN moving statistics, so all workers end with identical
    weights (per-replica BN would leave each worker with its own shard's statistics). The flag is
    a runtime attribute: saved models load with ordinary BatchNormalization.
    """
    count = 0
    for layer in sublayers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
            count += 1
    return count
