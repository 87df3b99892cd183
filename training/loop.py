"""train / finetune / evaluate: model + data + recipe under a tf.distribute strategy, resumable."""

import json
import os
import sys

from .checkpoint import AtomicCheckpoint, read_state
from .data import load_source, make_dataset
from .distributed import is_chief, make_strategy, prebuild, synchronize_batchnorm, task_index
from .recipe import get_recipe

CHECKPOINT_DIR = "checkpoints"


def build_classifier(variant, num_classes, weights=None, image_size=224, dropout=0.0):
    """A logits model for ``num_classes``: from scratch, from a run's .keras/.weights.h5, or a new
    head on pretrained features (ImageNet or any checkpoint the model builders accept)."""
    import keras

    import keras_evit as ke
    from keras_evit.layers import NormLinear

    shape = (image_size, image_size, 3)
    if weights and str(weights).endswith(".keras"):
        return keras.models.load_model(weights)
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

    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if num_classes > 5:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5"))
    model.compile(optimizer=make_optimizer(recipe, steps_per_epoch),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=recipe.label_smoothing),
                  metrics=metrics)


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


def train(variant, data, output, recipe=None, strategy="mirrored", weights=None, data_dir=None,
          freeze_backbone=False, steps_per_epoch=None, verbose="auto", log=print):
    """Runs (or resumes) a training run in ``output``; returns the final validation metrics."""
    import keras
    import tensorflow as tf

    recipe = recipe or get_recipe()
    if recipe.mixed_precision:
        keras.mixed_precision.set_global_policy(
            "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16")
    strat = make_strategy(strategy)
    chief = is_chief()
    source = load_source(data, data_dir, seed=recipe.seed)
    if source.skipped:
        log(f"skipped {len(source.skipped)} unreadable or unsupported file(s):")
        for msg in source.skipped[:10]:
            log(f"  {msg}")
    batch = recipe.batch_size
    steps = steps_per_epoch or source.sizes["train"] // batch
    if steps < 1:
        raise ValueError(f"{source.sizes['train']} training images are fewer than one batch of {batch}")
    log(f"{data}: {source.sizes['train']} train / {source.sizes['validation']} validation images, "
        f"{source.num_classes} classes; {steps} steps/epoch at global batch {batch} on "
        f"{strat.num_replicas_in_sync} replica(s); peak lr {recipe.peak_lr:.2e}")

    ckpt_dir = os.path.join(output, CHECKPOINT_DIR)
    state = read_state(ckpt_dir)
    with strat.scope():
        model = build_classifier(variant, source.num_classes, None if state else weights,
                                 recipe.image_size, recipe.dropout)
        if freeze_backbone:
            for layer in model.layers:
                layer.trainable = layer.name == "head"
        if recipe.sync_bn and strat.num_replicas_in_sync > 1:
            synchronize_batchnorm(model)
        train_model = model
        if recipe.distill_teacher:
            from .distill import Distiller

            teacher = keras.models.load_model(recipe.distill_teacher)
            train_model = Distiller(model, teacher, recipe.distill_type, recipe.distill_alpha, recipe.distill_tau)
        _compile(train_model, recipe, steps, source.num_classes)
        start_epoch, skip = 0, 0
        if state:
            train_model.optimizer.build(train_model.trainable_variables)
            train_model.load_weights(os.path.join(ckpt_dir, state["weights"]))
            start_epoch, skip = state["epoch"], state["step"]
            log(f"resuming from {state['weights']}: epoch {start_epoch + 1}, step {skip} "
                f"(global step {state['global_step']})")
            if skip >= steps:
                start_epoch, skip = start_epoch + 1, 0

    val_ds = make_dataset(source, "validation", batch, recipe, training=False)
    os.makedirs(output, exist_ok=True)
    csv_path = os.path.join(output, "metrics.csv")
    callbacks_common = [keras.callbacks.CSVLogger(csv_path, append=True)]
    if chief:
        callbacks_common.append(keras.callbacks.TensorBoard(os.path.join(output, "logs"), update_freq="epoch"))
    if recipe.ema_decay:
        callbacks_common.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))

    def fit(first_epoch, end_epoch, skip_steps):
        ds = make_dataset(source, "train", batch, recipe, training=True, start_epoch=first_epoch,
                          skip_steps=skip_steps)
        if isinstance(strat, tf.distribute.MultiWorkerMirroredStrategy):
            prebuild(train_model, strat, ds)
        ckpt = AtomicCheckpoint(ckpt_dir, recipe.checkpoint_every, skip_steps, write=chief)
        return train_model.fit(ds, epochs=end_epoch, initial_epoch=first_epoch, steps_per_epoch=steps - skip_steps,
                               validation_data=val_ds, callbacks=[ckpt] + callbacks_common, verbose=verbose,
                               shuffle=False)

    if start_epoch < recipe.epochs:
        if skip:
            fit(start_epoch, start_epoch + 1, skip)
            start_epoch += 1
        if start_epoch < recipe.epochs:
            fit(start_epoch, recipe.epochs, 0)
    if recipe.ema_decay:
        train_model.optimizer.finalize_variable_values(model.trainable_variables)
    results = train_model.evaluate(val_ds, return_dict=True, verbose=0)
    from keras_evit.utils import atomic_output

    if not chief:  # other workers keep their (identical) weights apart from the chief's outputs
        worker_dir = os.path.join(output, f"worker-{task_index()}")
        os.makedirs(worker_dir, exist_ok=True)
        with atomic_output(os.path.join(worker_dir, "model.weights.h5")) as tmp:
            model.save_weights(tmp)
    else:
        with atomic_output(os.path.join(output, "model.keras")) as tmp:
            model.save(tmp)
        with atomic_output(os.path.join(output, "model.weights.h5")) as tmp:
            model.save_weights(tmp)
        with atomic_output(os.path.join(output, "classes.json")) as tmp:
            with open(tmp, "w") as f:
                json.dump(source.class_names, f)
        if os.path.isfile(csv_path):
            plot_curves(csv_path, os.path.join(output, "curves.png"))
    log("validation: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    return results


def evaluate(variant, weights, data, split="validation", batch_size=64, image_size=224, data_dir=None,
             log=print):
    from .recipe import Recipe

    source = load_source(data, data_dir, eval_split=None if split == "validation" else split)
    split = split if split in source.splits else "validation"  # tfds: the requested split is loaded as it
    recipe = Recipe(image_size=image_size, batch_size=batch_size)
    model = build_classifier(variant, source.num_classes, weights, image_size)
    import keras

    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if source.num_classes > 5:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5"))
    model.compile(loss=keras.losses.CategoricalCrossentropy(from_logits=True), metrics=metrics)
    results = model.evaluate(make_dataset(source, split, batch_size, recipe, training=False), return_dict=True,
                             verbose="auto" if sys.stdout.isatty() else 2)
    log(f"{data} [{split}]: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    return results
