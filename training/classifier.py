"""The classifier a run trains or evaluates: from scratch, from a run, or a new head on pretrained
features; and the accuracy metrics it reports."""

TOP_K = 5


def build_classifier(variant, num_classes, weights=None, image_size=224, dropout=0.0):
    """A logits model for ``num_classes``: from scratch, from a run's .keras/.weights.h5, or a new
    head on pretrained features (ImageNet or any checkpoint the model builders accept)."""
    import keras

    import keras_evit as ke
    from keras_evit.layers import NormLinear

    from keras_evit.artifacts import load_keras_file, model_file, with_activation

    model_path = model_file(weights)
    if model_path:
        model = with_activation(load_keras_file(model_path), None)
        units = int(model.outputs[0].shape[-1])
        if units != num_classes:
            raise ValueError(f"{model_path} has {units} outputs but the data has {num_classes} classes: fine-tune "
                             "from its weights file with a new head instead (--weights RUN_DIR/model.weights.h5)")
        return model
    shape = (image_size, image_size, 3)
    full = ke.build_model(variant, weights=None, input_shape=shape, classes=num_classes,
                          classifier_activation=None, dropout_rate=dropout)
    if not weights:
        return full
    if str(weights).endswith(".weights.h5"):
        try:
            full.load_weights(weights)
            return full
        except ValueError:
            pass  # another head (e.g. an ImageNet .weights.h5): load as pretrained features below
    backbone = ke.build_model(variant, weights=weights, include_top=False, input_shape=shape)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(backbone.output)
    x = NormLinear(num_classes, dropout=dropout, name="head")(x)
    return keras.Model(backbone.input, x, name=backbone.name)


def accuracy_metrics(num_classes):
    """Top-1, and top-5 where top-5 means something (more than 5 classes)."""
    import keras

    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if num_classes > TOP_K:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(TOP_K, name="top5"))
    return metrics
