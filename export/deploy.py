"""The model as every exporter takes it: BatchNorm folded, a fixed input signature."""


def deploy_model(model, fuse=True):
    """The model to export: BatchNorm folded (fewer ops, same outputs)."""
    import keras_evit

    return keras_evit.fuse_batchnorm(model) if fuse else model


def input_spec(model, batch_size):
    import tensorflow as tf

    shape = tuple(model.inputs[0].shape[1:])
    return tf.TensorSpec((batch_size,) + shape, tf.float32, name="image")
