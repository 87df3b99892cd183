"""End-to-end training runs: outputs, finetune on real images, resume after SIGKILL, 2 workers."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_evit.cli import main
from keras_evit.training import TrainingDiverged
from keras_evit.training.checkpoint import AtomicCheckpoint

from conftest import HYMENOPTERA, declare_empty_gzip_dataset, missing, outputs

TINY = ["--model", "m0", "--image-size", "64", "--checkpoint-every", "2"]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


def test_nan_loss_stops_with_step(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(1e30), "mse")
    x = np.full((64, 4), 1e3, np.float32)
    with pytest.raises(TrainingDiverged, match=r"at step \d+ \(epoch 1, batch \d+\)"):
        model.fit(x, x[:, :1], batch_size=8, epochs=1, verbose=0,
                  callbacks=[AtomicCheckpoint(str(tmp_path), 0, write=False)])


def test_teacher_ending_in_softmax_gives_logits(tmp_path):
    """A saved builder model (softmax output) or a Dense-softmax head as teacher: its logits are used."""
    import keras_evit as ke
    from keras_evit.training.distill import load_teacher

    from conftest import raw_images

    builder = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3))
    inputs = keras.Input((64, 64, 3))
    head = keras.layers.Dense(3, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(ke.EfficientViTM0(weights=None, include_top=False,
                                                                input_shape=(64, 64, 3))(inputs)))
    x = raw_images(2, 64)
    for i, saved in enumerate((builder, keras.Model(inputs, head))):
        path = str(tmp_path / f"teacher{i}.keras")
        saved.save(path)
        logits, probs = outputs(load_teacher(path), x), outputs(saved, x)
        assert np.abs(logits.sum(axis=-1) - 1).max() > 1e-3  # not probabilities any more
        np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.softmax(logits)), probs, atol=1e-6)


def test_distillation_losses():
    from keras_evit.training.distill import Distiller

    student = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    teacher = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    x = np.random.RandomState(0).randn(8, 3).astype("float32")
    y = keras.ops.one_hot(np.arange(8) % 4, 4)
    losses = {}
    for kind in ("soft", "hard"):
        d = Distiller(student, teacher, kind, alpha=1.0, tau=2.0)
        d.compile(loss=keras.losses.CategoricalCrossentropy(from_logits=True))
        losses[kind] = float(d.compute_loss(x, y, d(x)))
    s, t = student.predict(x, verbose=0) / 2, teacher.predict(x, verbose=0) / 2
    p_t = np.exp(t) / np.exp(t).sum(1, keepdims=True)
    kl = (p_t * (np.log(p_t) - (s - np.log(np.exp(s).sum(1, keepdims=True))))).sum(1).mean() * 4
    assert losses["soft"] == pytest.approx(kl, rel=1e-4)
    s1 = student.predict(x, verbose=0)
    ce = -(s1 - np.log(np.exp(s1).sum(1, keepdims=True)))[np.arange(8), (t * 2).argmax(1)].mean()
    assert losses["hard"] == pytest.approx(ce, rel=1e-4)


def _fit_creating(model, x, y):
    """Names of the variables ``fit`` creates while it runs (inside its first traced step)."""
    import tensorflow as tf

    made = []

    def record(next_creator, **kwargs):
        made.append(kwargs.get("name"))
        return next_creator(**kwargs)

    with tf.variable_creator_scope(record):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    return made


def test_state_built_before_fit_leaves_nothing_to_create_in_the_traced_step():
    """Outside a strategy, Keras creates optimizer and metric variables inside the first traced step, and
    TensorFlow then traces it twice; build_state creates them first, and training is unchanged."""
    from keras_evit.training.classifier import accuracy_metrics
    from keras_evit.training.loop import build_state

    x = np.random.RandomState(0).randn(8, 5).astype("float32")
    y = keras.ops.one_hot(np.arange(8) % 7, 7)
    models = []
    for _ in range(2):
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(7)])
        if models:
            model.set_weights(models[0].get_weights())
        model.compile(keras.optimizers.AdamW(1e-2), keras.losses.CategoricalCrossentropy(from_logits=True),
                      metrics=accuracy_metrics(7))
        models.append(model)
    plain, built = models
    build_state(built, np.zeros((1, 7), "float32"), np.zeros((1, 7), "float32"))
    assert _fit_creating(built, x, y) == []
    assert len(_fit_creating(plain, x, y)) >= 4  # two Adam moments per weight, the metrics' totals and counts
    for a, b in zip(plain.get_weights(), built.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_state_built_with_inputs_includes_the_loss_trackers_of_several_outputs():
    """A loss over two outputs keeps a tracker per output, made by the loss' first run: given the inputs,
    build_state runs it, so fit again creates nothing in its traced step (without them it would)."""
    from keras_evit.training.loop import build_state

    x = np.random.RandomState(0).randn(8, 5).astype("float32")
    y = {"a": np.random.RandomState(1).randn(8, 3).astype("float32"),
         "b": np.random.RandomState(2).randn(8, 2).astype("float32")}
    made, weights, first = {}, {}, None
    for with_inputs in (False, True):
        inputs = keras.Input((5,))
        model = keras.Model(inputs, {"a": keras.layers.Dense(3, name="a")(inputs),
                                     "b": keras.layers.Dense(2, name="b")(inputs)})
        first = first or model.get_weights()
        model.set_weights(first)  # the same start, without touching the process' global seed
        model.compile(keras.optimizers.Adam(1e-2), loss={"a": "mse", "b": "mse"})
        labels = {k: v[:1] for k, v in y.items()}
        build_state(model, labels, model(x[:1]), x=x[:1] if with_inputs else None)
        made[with_inputs] = _fit_creating(model, x, y)
        weights[with_inputs] = model.get_weights()
    assert made[True] == [] and len(made[False]) >= 4  # each output's loss total and count
    for a, b in zip(weights[False], weights[True]):
        np.testing.assert_allclose(a, b, rtol=1e-6)



def test_build_before_fit_from_a_dataset_covers_what_optimizer_build_leaves():
    """The README's advice for a user's own model: ``optimizer.build`` alone leaves the compiled metrics to
    the first traced step (so TensorFlow traces it twice); ``build_before_fit`` on the user's dataset leaves
    nothing, and training is unchanged."""
    import tensorflow as tf

    from keras_evit.training import build_before_fit

    x = np.random.RandomState(0).randn(8, 5).astype("float32")
    y = np.arange(8) % 3
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    made, weights, first = {}, {}, None
    for way in ("optimizer.build", "build_before_fit"):
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="softmax")])
        first = first or model.get_weights()
        model.set_weights(first)
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
        if way == "optimizer.build":
            model.optimizer.build(model.trainable_variables)
        else:
            build_before_fit(model, data)
        made[way] = _fit_creating(model, x, y)
        weights[way] = model.get_weights()
    assert made["build_before_fit"] == [] and len(made["optimizer.build"]) >= 2  # accuracy's total and count
    for a, b in zip(weights["optimizer.build"], weights["build_before_fit"]):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.slow  # a fine-tune of the new head alone, then an evaluation, on the ants/bees folder
def test_finetune_hymenoptera_then_evaluate(tmp_path, capsys):
    if not os.path.isdir(HYMENOPTERA):
        missing("shared/data/hymenoptera not present")
    import keras_evit as ke

    pretrained = str(tmp_path / "pretrained.weights.h5")
    ke.EfficientViTM0(weights=None).save_weights(pretrained)
    run = str(tmp_path / "run")
    code = main(["finetune", *TINY, "--weights", pretrained, "--data", f"folder:{HYMENOPTERA}", "--epochs", "1",
                 "--batch-size", "16", "--steps-per-epoch", "3", "--output", run, "--freeze-backbone"])
    assert code == 0
    out = capsys.readouterr().out
    assert "skipped 1 unreadable or unsupported file(s)" in out and "imageNotFound.gif" in out
    expected = {"model.keras", "model.weights.h5", "metrics.csv", "curves.png", "logs", "checkpoints"}
    assert expected <= set(os.listdir(run))
    # --freeze-backbone: every weight but the new head's is still the pretrained one, BatchNorm statistics too
    start = ke.EfficientViTM0(weights=pretrained, input_shape=(64, 64, 3), include_top=False)
    tuned = {w.path: keras.ops.convert_to_numpy(w) for w in
             keras.models.load_model(os.path.join(run, "model.keras")).weights if not w.path.startswith("head/")}
    assert sorted(tuned) == sorted(w.path for w in start.weights)
    for w in start.weights:
        np.testing.assert_array_equal(tuned[w.path], keras.ops.convert_to_numpy(w), err_msg=w.path)
    assert main(["evaluate", "--model", "m0", "--weights", os.path.join(run, "model.keras"),
                 "--data", f"folder:{HYMENOPTERA}", "--image-size", "64", "--batch-size", "32"]) == 0
    assert "accuracy" in capsys.readouterr().out


def _train_cmd(run, extra=()):
    return [sys.executable, "-m", "keras_evit.cli", "train", *TINY, "--data", "digits", "--recipe", "digits",
            "--epochs", "2", "--batch-size", "32", "--steps-per-epoch", "6", "--strategy", "default",
            "--output", run, *extra]


@pytest.mark.slow  # two training processes: about 1.5 minutes
def test_resume_after_kill_mid_epoch(tmp_path):
    run = str(tmp_path / "run")
    state_path = os.path.join(run, "checkpoints", "state.json")
    proc = subprocess.Popen(_train_cmd(run), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    state = None
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(state_path):
            state = json.load(open(state_path))
            if state["epoch"] == 0 and state["step"] >= 2:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state is not None and state["epoch"] == 0 and 2 <= state["step"] < 6, state
    saved = json.load(open(state_path))  # the last complete checkpoint at kill time
    assert not [f for f in os.listdir(os.path.dirname(state_path)) if ".tmp" in f]

    # resumed with --remat, as a run that ran out of memory would be: the same steps, recomputed activations
    done = subprocess.run(_train_cmd(run, ["--remat"]), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "recomputing each block's activations in the backward pass" in done.stdout
    assert (f"resuming from {saved['weights']}: epoch 1, step {saved['step']} "
            f"(global step {saved['global_step']})") in done.stdout
    final = json.load(open(state_path))
    assert (final["epoch"], final["step"], final["global_step"]) == (2, 0, 12)  # no step lost or repeated
    import h5py

    import keras_evit  # noqa: F401

    with h5py.File(os.path.join(run, "checkpoints", final["weights"]), "r") as f:
        assert "optimizer" in f  # checkpoints carry the optimizer state, not only the model
        # the optimizer's step counter (its first variable), on which the lr schedule runs: no step lost
        assert int(f["optimizer/vars/0"][()]) == 12
    model = keras.models.load_model(os.path.join(run, "model.keras"))  # an inference model: no optimizer
    assert model.output.shape[-1] == 10 and getattr(model, "optimizer", None) is None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_on_loopback_end_identical(tmp_path):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = _env()
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        cmd = _train_cmd(str(tmp_path / f"w{i}"))
        cmd[cmd.index("--strategy") + 1] = "multiworker"
        cmd[cmd.index("--epochs") + 1] = "1"
        cmd[cmd.index("--steps-per-epoch") + 1] = "3"
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
    import keras_evit as ke

    weights = []
    for path in (tmp_path / "w0" / "model.weights.h5", tmp_path / "w1" / "worker-1" / "model.weights.h5"):
        model = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3), classes=10, classifier_activation=None)
        model.load_weights(str(path))
        weights.append(model.get_weights())
    start = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3), classes=10).get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(weights[0], start) if a.shape == b.shape)
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_resume_falls_back_past_a_truncated_checkpoint(tmp_path):
    """A half-written newest checkpoint (disk full, copy cut) gives a warning and the previous one."""
    from keras_evit.training.loop import _resume

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(), "mse")
    model.optimizer.build(model.trainable_variables)
    saver = AtomicCheckpoint(str(tmp_path), 0)
    saver.set_model(model)
    first = [w.copy() for w in model.get_weights()]
    model.optimizer.iterations.assign(5)
    saver.save(0, 5)
    model.set_weights([w + 1 for w in first])
    model.optimizer.iterations.assign(10)
    saver.save(0, 10)
    newest = tmp_path / "ckpt-00000010.weights.h5"
    newest.write_bytes(newest.read_bytes()[:300])
    (tmp_path / ".ckpt-00000012.weights.h5.x.tmp.weights.h5").write_bytes(b"orphan of a killed save")
    logs = []
    assert _resume(model, str(tmp_path), 100, logs.append) == (0, 5)
    assert any("WARNING" in line and "ckpt-00000010" in line for line in logs)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), first))
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]
    for name in ("ckpt-00000005.weights.h5",):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match="no checkpoint in .* loads"):
        _resume(model, str(tmp_path), 100, logs.append)


def test_resume_refuses_a_checkpoint_declaring_more_than_the_run_holds(tmp_path):
    """A newest checkpoint whose dataset declares 400 MB of empty gzip chunks (a few KB on disk) is refused
    from its metadata, before Keras reads it, and the run resumes from the previous one."""
    from keras_evit.training.loop import _resume

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(), "mse")
    model.optimizer.build(model.trainable_variables)
    saver = AtomicCheckpoint(str(tmp_path), 0)
    saver.set_model(model)
    for step in (5, 10):
        model.optimizer.iterations.assign(step)
        saver.save(0, step)
    declare_empty_gzip_dataset(tmp_path / "ckpt-00000010.weights.h5", lambda names: names[0], (100_000_000,))
    assert os.path.getsize(tmp_path / "ckpt-00000010.weights.h5") < 100_000
    logs = []
    assert _resume(model, str(tmp_path), 100, logs.append) == (0, 5)
    assert any("ckpt-00000010" in line and "more than this model's weights could take" in line for line in logs), logs


def test_checkpoint_states_skip_what_a_run_never_writes(tmp_path):
    """A FIFO, an oversized file or one nested past Python's limit, named like a checkpoint's state, is skipped
    (reading a FIFO blocked the resume forever); a killed save's temporary files are removed, but no other file
    in the folder."""
    import threading

    from keras_evit.training.checkpoint import checkpoint_states

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(), "mse")
    model.optimizer.build(model.trainable_variables)
    saver = AtomicCheckpoint(str(tmp_path), 0)
    saver.set_model(model)
    model.optimizer.iterations.assign(5)
    saver.save(0, 5)
    os.mkfifo(tmp_path / "ckpt-00000099.json")
    (tmp_path / "ckpt-00000098.json").write_text(" " * (2 << 20) + '{"epoch": 0, "step": 98, "global_step": 98, '
                                                 '"weights": "ckpt-00000005.weights.h5"}')
    (tmp_path / "ckpt-00000097.json").write_text("[" * 100_000 + "]" * 100_000)  # past Python's nesting limit
    for n, step in ((96, '"96"'), (95, "-1"), (94, "1.5"), (93, "true")):  # a resume compares and counts with it
        shutil.copy(tmp_path / "ckpt-00000005.weights.h5", tmp_path / f"ckpt-000000{n}.weights.h5")
        (tmp_path / f"ckpt-000000{n}.json").write_text(f'{{"epoch": 0, "step": 1, "global_step": {step}, '
                                                       f'"weights": "ckpt-000000{n}.weights.h5"}}')
    (tmp_path / ".ckpt-00000012.json.abc_123.tmp.json").write_text("{")  # a killed save's leftover
    (tmp_path / ".notes.tmp.txt").write_text("the user's")
    found = []
    reader = threading.Thread(target=lambda: found.append(checkpoint_states(str(tmp_path))), daemon=True)
    reader.start()
    reader.join(60)
    assert found, "checkpoint_states blocked or raised (see the thread's traceback above)"
    assert [s["global_step"] for s in found[0]] == [5]
    assert sorted(os.listdir(tmp_path)) == sorted([".notes.tmp.txt", "ckpt-00000005.json", "ckpt-00000005.weights.h5",
                                                   *[f"ckpt-000000{n}.json" for n in range(93, 100)],
                                                   *[f"ckpt-000000{n}.weights.h5" for n in range(93, 97)],
                                                   "state.json"])
