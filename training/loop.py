"""train / finetune / evaluate: model + data + recipe under a tf.distribute strategy, resumable."""

import contextlib
import json
import os
import sys

from .checkpoint import AtomicCheckpoint, checkpoint_states
from .data import load_source, make_dataset
from .distributed import is_chief, make_strategy, prebuild, synchronize_batchnorm, task_index
from .recipe import get_recipe

CHECKPOINT_DIR = "checkpoints"
METRICS_CSV = "metrics.csv"
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


def _compile(model, recipe, steps_per_epoch, num_classes):
    import keras

    from .optim import make_optimizer

    model.compile(optimizer=make_optimizer(recipe, steps_per_epoch),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=recipe.label_smoothing),
                  metrics=accuracy_metrics(num_classes))


def accuracy_metrics(num_classes):
    """Top-1, and top-5 where top-5 means something (more than 5 classes)."""
    import keras

    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if num_classes > TOP_K:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(TOP_K, name="top5"))
    return metrics


def plot_curves(csv_path, png_path):
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_evit.utils import atomic_output

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "val_loss"):
        if key in rows[0]:
            ax1.plot(epochs, [float(r[key]) for r in rows], label=key)
    for key in ("accuracy", "val_accuracy", "val_top5"):
        if key in rows[0]:
            ax2.plot(epochs, [float(r[key]) for r in rows], label=key)
    ax1.set_xlabel("epoch"), ax2.set_xlabel("epoch"), ax1.legend(), ax2.legend()
    ax1.set_title("loss"), ax2.set_title("accuracy")
    fig.tight_layout()
    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


@contextlib.contextmanager
def precision_policy(mixed):
    """Mixed precision for the run only: the global Keras policy is restored afterwards."""
    import keras
    import tensorflow as tf

    previous = keras.mixed_precision.global_policy()
    if mixed:
        keras.mixed_precision.set_global_policy(
            "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _steps(source, recipe, steps_per_epoch, log):
    if source.skipped:
        log(f"skipped {len(source.skipped)} unreadable or unsupported file(s):")
        for msg in source.skipped[:10]:
            log(f"  {msg}")
    steps = steps_per_epoch or source.sizes["train"] // recipe.batch_size
    if steps < 1:
        raise ValueError(f"{source.sizes['train']} training images are fewer than one batch of {recipe.batch_size}: "
                         "lower --batch-size")
    return steps


def _training_model(variant, source, recipe, weights, freeze_backbone, strat):
    """(model, the model that fit() trains: the model itself or its Distiller), built in ``strat``."""
    import keras

    model = build_classifier(variant, source.num_classes, weights, recipe.image_size, recipe.dropout)
    if freeze_backbone:
        for layer in model.layers:
            layer.trainable = layer.name == "head"
    if recipe.sync_bn and strat.num_replicas_in_sync > 1:
        synchronize_batchnorm(model)
    if not recipe.distill_teacher:
        return model, model
    from .distill import Distiller

    teacher = keras.models.load_model(recipe.distill_teacher)
    return model, Distiller(model, teacher, recipe.distill_type, recipe.distill_alpha, recipe.distill_tau)


def _resume(train_model, ckpt_dir, steps, log):
    """(start epoch, steps to skip) from the newest checkpoint that loads; (0, 0) for a new run."""
    candidates = checkpoint_states(ckpt_dir)
    if not candidates:
        return 0, 0
    train_model.optimizer.build(train_model.trainable_variables)
    for i, state in enumerate(candidates):
        path = os.path.join(ckpt_dir, state["weights"])
        try:
            train_model.load_weights(path)
        except Exception as exc:  # truncated or corrupt file: h5py/Keras raise many types
            log(f"WARNING: checkpoint {path} does not load ({type(exc).__name__}: {str(exc)[:200]})"
                + ("; trying the previous one" if i + 1 < len(candidates) else ""))
            continue
        log(f"resuming from {state['weights']}: epoch {state['epoch'] + 1}, step {state['step']} "
            f"(global step {state['global_step']})")
        if state["step"] >= steps:
            return state["epoch"] + 1, 0
        return state["epoch"], state["step"]
    raise ValueError(f"no checkpoint in {ckpt_dir} loads (see the warnings above): delete {ckpt_dir} to start "
                     "the run over, or restore a good checkpoint file")


def _callbacks(output, recipe, chief):
    import keras

    callbacks = [keras.callbacks.CSVLogger(os.path.join(output, METRICS_CSV), append=True)]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(output, "logs"), update_freq="epoch"))
    if recipe.ema_decay:
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    return callbacks


def save_run_outputs(model, class_names, output):
    """RUN_DIR/model.keras (an inference model: no optimizer, loads with ``import keras_evit``),
    model.weights.h5, classes.json, curves.png."""
    import keras

    from keras_evit.artifacts import RUN_CLASSES, RUN_MODEL
    from keras_evit.utils import atomic_output, save_keras

    inference = keras.Model(model.inputs[0], model.outputs[0], name=model.name)  # same layers, not compiled
    save_keras(inference, os.path.join(output, RUN_MODEL))
    save_keras(model, os.path.join(output, "model.weights.h5"))
    with atomic_output(os.path.join(output, RUN_CLASSES)) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(list(class_names), f)
    csv_path = os.path.join(output, METRICS_CSV)
    if os.path.isfile(csv_path):
        plot_curves(csv_path, os.path.join(output, "curves.png"))


def train(variant, data, output, recipe=None, strategy="mirrored", weights=None, data_dir=None,
          freeze_backbone=False, steps_per_epoch=None, verbose="auto", log=print):
    """Runs (or resumes) a training run in ``output``; returns the final validation metrics."""
    recipe = recipe or get_recipe()
    recipe.validate()
    with precision_policy(recipe.mixed_precision):
        return _train(variant, data, output, recipe, strategy, weights, data_dir, freeze_backbone,
                      steps_per_epoch, verbose, log)


def _train(variant, data, output, recipe, strategy, weights, data_dir, freeze_backbone, steps_per_epoch,
           verbose, log):
    import tensorflow as tf

    from keras_evit.preprocessing import has_preprocessing

    strat = make_strategy(strategy)
    chief = is_chief()
    source = load_source(data, data_dir, seed=recipe.seed)
    steps = _steps(source, recipe, steps_per_epoch, log)
    batch = recipe.batch_size
    log(f"{data}: {source.sizes['train']} train / {source.sizes['validation']} validation images, "
        f"{source.num_classes} classes; {steps} steps/epoch at global batch {batch} on "
        f"{strat.num_replicas_in_sync} replica(s); peak lr {recipe.peak_lr:.2e}")
    ckpt_dir = os.path.join(output, CHECKPOINT_DIR)
    resuming = bool(checkpoint_states(ckpt_dir))
    with strat.scope():
        model, train_model = _training_model(variant, source, recipe, None if resuming else weights,
                                             freeze_backbone, strat)
        _compile(train_model, recipe, steps, source.num_classes)
        start_epoch, skip = _resume(train_model, ckpt_dir, steps, log)
    normalize = not has_preprocessing(model)
    val_ds = make_dataset(source, "validation", batch, recipe, training=False, normalize=normalize)
    os.makedirs(output, exist_ok=True)
    callbacks = _callbacks(output, recipe, chief)

    def fit(first_epoch, end_epoch, skip_steps):
        ds = make_dataset(source, "train", batch, recipe, training=True, start_epoch=first_epoch,
                          skip_steps=skip_steps, normalize=normalize)
        if isinstance(strat, tf.distribute.MultiWorkerMirroredStrategy):
            prebuild(train_model, strat, ds)
        ckpt = AtomicCheckpoint(ckpt_dir, recipe.checkpoint_every, skip_steps, write=chief)
        return train_model.fit(ds, epochs=end_epoch, initial_epoch=first_epoch, steps_per_epoch=steps - skip_steps,
                               validation_data=val_ds, callbacks=[ckpt] + callbacks, verbose=verbose,
                               shuffle=False)

    if skip and start_epoch < recipe.epochs:
        fit(start_epoch, start_epoch + 1, skip)
        start_epoch += 1
    if start_epoch < recipe.epochs:
        fit(start_epoch, recipe.epochs, 0)
    if recipe.ema_decay:
        train_model.optimizer.finalize_variable_values(model.trainable_variables)
    results = train_model.evaluate(val_ds, return_dict=True, verbose=0)
    if chief:
        save_run_outputs(model, source.class_names, output)
    else:  # other workers keep their (identical) weights apart from the chief's outputs
        from keras_evit.utils import save_keras

        worker_dir = os.path.join(output, f"worker-{task_index()}")
        os.makedirs(worker_dir, exist_ok=True)
        save_keras(model, os.path.join(worker_dir, "model.weights.h5"))
    log("validation: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    return results


def evaluate(variant, weights, data, split="validation", batch_size=64, image_size=None, data_dir=None,
             log=print):
    """Top-1 (and top-5) of ``weights`` (a run folder, .keras or checkpoint) on ``data``'s ``split``,
    through the same eval transform as ``predict``."""
    import keras

    from keras_evit.artifacts import model_file, model_image_size
    from keras_evit.preprocessing import check_image_size, has_preprocessing

    from .recipe import Recipe

    source = load_source(data, data_dir, eval_split=None if split == "validation" else split)
    split = split if split in source.splits else "validation"  # tfds: the requested split is loaded as it

    model = build_classifier(variant, source.num_classes, weights, check_image_size(image_size or 224))
    if model_file(weights) and image_size and model_image_size(model) != image_size:
        raise ValueError(f"{weights} takes {model_image_size(model)} px images: drop --image-size or pass that")
    recipe = Recipe(image_size=model_image_size(model), batch_size=batch_size)
    model.compile(loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  metrics=accuracy_metrics(source.num_classes))
    dataset = make_dataset(source, split, batch_size, recipe, training=False, normalize=not has_preprocessing(model))
    results = model.evaluate(dataset, return_dict=True, verbose="auto" if sys.stdout.isatty() else 2)
    log(f"{data} [{split}]: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    return results
