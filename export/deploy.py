"""The model as every exporter takes it: BatchNorm folded, the normalization folded into the stem, a
fixed input signature."""


def deploy_model(model, fuse=True, fold_input=True):
    """The model to export: float32 (whatever policy it was trained under), BatchNorm folded (``fuse``;
    pass False for a model already fused) and, for a model that takes raw pixels and ``fold_input``, its
    normalization folded into the stem's first conv: same outputs, and in TFLite as fast as the same model
    fed normalized images. (ONNX Runtime does better with the normalization kept: see ``to_onnx``.)"""
    import keras_evit

    fused = keras_evit.fuse_batchnorm(model, dtype="float32") if fuse else model
    return keras_evit.fold_normalization(fused) if fold_input else fused


def input_spec(model, batch_size):
    import tensorflow as tf

    shape = tuple(model.inputs[0].shape[1:])
    return tf.TensorSpec((batch_size,) + shape, tf.float32, name="image")
