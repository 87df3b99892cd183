"""train / finetune: model + data + recipe under a tf.distribute strategy, resumable, and the run's outputs."""

import contextlib
import json
import os

import numpy as np

from .checkpoint import AtomicCheckpoint, checkpoint_states
from .classifier import accuracy_metrics, build_classifier
from .data import load_source, make_dataset
from .distributed import is_chief, make_strategy, prebuild, synchronize_batchnorm, task_index
from .recipe import get_recipe
from .run_lock import run_dir_lock

CHECKPOINT_DIR = "checkpoints"
METRICS_CSV = "metrics.csv"


def _compile(model, recipe, steps_per_epoch, num_classes):
    import keras

    from .optim import make_optimizer

    model.compile(optimizer=make_optimizer(recipe, steps_per_epoch),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=recipe.label_smoothing),
                  metrics=accuracy_metrics(num_classes))


def build_state(model, labels, outputs, x=None):
    """Creates a compiled model's optimizer and metric variables before ``fit``, with public APIs;
    ``labels`` and ``outputs``: one example of each, as the loss takes them. With ``x`` (the inputs of that
    example) the loss runs once too, for models whose loss makes variables of its own (a tracker per output,
    as keras-hub's RetinaNet: 10 s of a first ``fit`` on a CPU).

    Outside a distribution strategy Keras creates them inside the first traced train step, and
    TensorFlow then traces that step a second time. For an M0 on CPU (224 px, batch 32) building them
    first saves ~20 s before the first step and ~300 MB of peak memory. (Under a strategy Keras builds
    them itself before tracing.)"""
    import tensorflow as tf

    if tf.distribute.has_strategy():
        return
    model.optimizer.build(model.trainable_variables)
    if x is not None:
        model.compute_loss(x=x, y=labels, y_pred=outputs, sample_weight=None)
    model.compute_metrics(x, labels, outputs, None)
    model.reset_metrics()


def build_before_fit(model, data):
    """Creates a compiled model's optimizer, loss and metric variables from one batch before ``fit``, so that
    TensorFlow traces the first training step once. ``data``: an ``(x, y)`` batch or a ``tf.data.Dataset`` of
    them (its first batch is read). ``optimizer.build`` alone leaves the compiled metrics' variables to the
    first trace, which TensorFlow then traces again. Nothing to do under a distribution strategy (Keras
    builds first there) or on JAX and PyTorch."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    if tf.distribute.has_strategy():
        return
    if isinstance(data, tf.data.Dataset):
        data = next(iter(data.take(1)))
    x1, y1 = (keras.tree.map_structure(lambda a: a[:1], part) for part in data[:2])
    build_state(model, y1, model(x1, training=False), x=x1)


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
    from keras_evit.layers.remat import remat_scope

    with remat_scope() if recipe.remat else contextlib.nullcontext():
        model = build_classifier(variant, source.num_classes, weights, recipe.image_size, recipe.dropout)
    if freeze_backbone:
        for layer in model.layers:
            layer.trainable = layer.name == "head"
    if recipe.sync_bn and strat.num_replicas_in_sync > 1:
        synchronize_batchnorm(model)
    if not recipe.distill_teacher:
        return model, model
    from .distill import Distiller, load_teacher

    teacher = load_teacher(recipe.distill_teacher)
    return model, Distiller(model, teacher, recipe.distill_type, recipe.distill_alpha, recipe.distill_tau)


def _resume(train_model, ckpt_dir, steps, log):
    """(start epoch, steps to skip) from the newest checkpoint that loads; (0, 0) for a new run."""
    candidates = checkpoint_states(ckpt_dir)
    if not candidates:
        return 0, 0
    from keras_evit.weights.keras_h5 import check_declared_sizes, variable_bytes

    train_model.optimizer.build(train_model.trainable_variables)
    # what a checkpoint may declare: the model's and the optimizer's variables (float64 at most), so that a
    # damaged or crafted file is refused from its metadata instead of read
    held = variable_bytes(list(train_model.weights) + list(train_model.optimizer.variables))
    for i, state in enumerate(candidates):
        path = os.path.join(ckpt_dir, state["weights"])
        try:
            check_declared_sizes(path, 2 * held + (1 << 20))
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

    from .release_memory import ReleaseFreedMemory

    callbacks = [keras.callbacks.CSVLogger(os.path.join(output, METRICS_CSV), append=True), ReleaseFreedMemory()]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(output, "logs"), update_freq="epoch"))
    if recipe.ema_decay:
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    return callbacks


def save_run_outputs(model, class_names, output):
    """RUN_DIR/model.keras (an inference model: no optimizer, loads with ``import keras_evit``),
    model.weights.h5, classes.json, curves.png."""
    import keras

    from keras_evit.weights.artifacts import RUN_CLASSES, RUN_MODEL
    from keras_evit.utils import atomic_output, save_keras

    inference = keras.Model(model.inputs[0], model.outputs[0], name=model.name)  # same layers, not compiled
    save_keras(inference, os.path.join(output, RUN_MODEL))
    save_keras(model, os.path.join(output, "model.weights.h5"))
    with atomic_output(os.path.join(output, RUN_CLASSES)) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(list(class_names), f)
    csv_path = os.path.join(output, METRICS_CSV)
    if os.path.isfile(csv_path):
        from .plots import plot_curves

        plot_curves(csv_path, os.path.join(output, "curves.png"))


def train(variant, data, output, recipe=None, strategy="mirrored", weights=None, data_dir=None,
          freeze_backbone=False, steps_per_epoch=None, verbose="auto", log=print):
    """Runs (or resumes) a training run in ``output``; returns the final validation metrics."""
    recipe = recipe or get_recipe()
    recipe.validate()
    lock = run_dir_lock(output) if is_chief() else contextlib.nullcontext()  # workers write elsewhere
    with lock, precision_policy(recipe.mixed_precision):
        return _train(variant, data, output, recipe, strategy, weights, data_dir, freeze_backbone,
                      steps_per_epoch, verbose, log)


def _train(variant, data, output, recipe, strategy, weights, data_dir, freeze_backbone, steps_per_epoch,
           verbose, log):
    import tensorflow as tf

    from keras_evit.preprocessing import has_preprocessing
    from keras_evit.utils import check_own_file

    check_own_file(os.path.join(output, METRICS_CSV))  # appended to each epoch: before any work
    strat = make_strategy(strategy)
    chief = is_chief()
    source = load_source(data, data_dir, seed=recipe.seed)
    steps = _steps(source, recipe, steps_per_epoch, log)
    batch = recipe.batch_size
    log(f"{data}: {source.sizes['train']} train / {source.sizes['validation']} validation images, "
        f"{source.num_classes} classes; {steps} steps/epoch at global batch {batch} on "
        f"{strat.num_replicas_in_sync} replica(s); peak lr {recipe.peak_lr:.2e}")
    if recipe.remat:
        log("recomputing each block's activations in the backward pass (--remat): less memory, slower steps")
    ckpt_dir = os.path.join(output, CHECKPOINT_DIR)
    resuming = bool(checkpoint_states(ckpt_dir))
    with strat.scope():
        model, train_model = _training_model(variant, source, recipe, None if resuming else weights,
                                             freeze_backbone, strat)
        _compile(train_model, recipe, steps, source.num_classes)
        start_epoch, skip = _resume(train_model, ckpt_dir, steps, log)
        one_hot = np.zeros((1, source.num_classes), "float32")
        build_state(train_model, one_hot, one_hot)
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
