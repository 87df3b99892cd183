"""The classifier a run trains or evaluates: from scratch, from a run, or a new head on pretrained
features; and the accuracy metrics it reports."""

TOP_K = 5


def build_classifier(variant, num_classes, weights=None, image_size=224, dropout=0.0):
    """A logits model for ``num_classes``: from scratch, from a run's .keras/.weights.h5, or a new
    head on pretrained features (ImageNet or any checkpoint the model builders accept)."""
    import keras_evit as ke
    from keras_evit.weights.artifacts import load_keras_file, model_file, with_activation
    from keras_evit.configs import get_variant
    from keras_evit.weights.pretrained import load_weights

    model_path = model_file(weights)
    if model_path:
        model = with_activation(load_keras_file(model_path), None)
        units = int(model.outputs[0].shape[-1])
        if units != num_classes:
            raise ValueError(f"{model_path} has {units} outputs but the data has {num_classes} classes: fine-tune "
                             "from its weights file with a new head instead (--weights RUN_DIR/model.weights.h5)")
        return model
    full = ke.build_model(variant, weights=None, input_shape=(image_size, image_size, 3), classes=num_classes,
                          classifier_activation=None, dropout_rate=dropout)
    if weights:
        key, _ = get_variant(variant)
        load_weights(full, weights, key, new_head=not _same_head(weights, key, num_classes))
    return full


def _same_head(weights, variant, num_classes):
    """Whether ``weights`` is a ``.weights.h5`` whose head has ``num_classes`` (a run's own weights): kept then."""
    if not str(weights).endswith(".weights.h5"):
        return False
    from keras_evit.weights.keras_h5 import keras_weights_layout

    layout = keras_weights_layout(str(weights), variant)
    return layout is not None and layout[0] == num_classes


def accuracy_metrics(num_classes):
    """Top-1, and top-5 where top-5 means something (more than 5 classes)."""
    import keras

    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if num_classes > TOP_K:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(TOP_K, name="top5"))
    return metrics
