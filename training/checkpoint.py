"""Fault tolerance: atomic checkpoints every N steps and each epoch; resume at the saved step."""

import json
import math
import os
import re

import keras

from keras_evit.regular_file import read_regular
from keras_evit.utils import atomic_output, save_keras

STATE_FILE = "state.json"
MAX_STATE_BYTES = 1 << 20  # a checkpoint's state is a few numbers
# what keras_evit.utils.atomic_output leaves of a checkpoint file whose save was killed: only these are removed
ORPHAN = re.compile(r"\.(ckpt-\d+\.(weights\.h5|json)|state\.json)\.\w+\.tmp(\.weights\.h5|\.json)?")


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the message names the step."""


def _read_json(path):
    try:
        # a FIFO would block the resume forever; a huge file is not one we wrote
        state = json.loads(read_regular(path, MAX_STATE_BYTES).decode("utf-8"))
        if not isinstance(state, dict) or not {"epoch", "step", "global_step", "weights"} <= set(state):
            return None
        if not all(type(state[key]) is int and state[key] >= 0 for key in ("epoch", "step", "global_step")):
            return None  # a resume compares and counts with them
        name = state["weights"]
        if not isinstance(name, str) or os.path.basename(name) != name or not name.startswith("ckpt-"):
            return None  # never follow a path out of the checkpoint folder
        return state
    except (OSError, ValueError, RecursionError):  # RecursionError: nested past Python's limit
        return None


def checkpoint_states(directory):
    """States of the checkpoints in ``directory``, newest first (each ``ckpt-N.weights.h5`` has a
    ``ckpt-N.json`` beside it), so that resume can fall back past a file that does not load.
    Orphan temporary files of an interrupted save are removed."""
    if not os.path.isdir(directory):
        return []
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if ORPHAN.fullmatch(name) and os.path.isfile(path) and not os.path.islink(path):
            os.remove(path)
    states = [_read_json(os.path.join(directory, n)) for n in os.listdir(directory)
              if n.startswith("ckpt-") and n.endswith(".json")]
    latest = _read_json(os.path.join(directory, STATE_FILE))  # runs from before the sidecar files
    states = [s for s in states + [latest] if s and os.path.isfile(os.path.join(directory, s["weights"]))]
    unique = {s["weights"]: s for s in states}
    return sorted(unique.values(), key=lambda s: s["global_step"], reverse=True)


def read_state(directory):
    """The newest checkpoint's state, or None."""
    states = checkpoint_states(directory)
    return states[0] if states else None


class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves model + optimizer state (``.weights.h5``) and ``state.json`` with (epoch, step).

    Each file is written under a temporary name and renamed, and ``state.json`` is replaced only
    after its weights file is complete, so a kill at any moment leaves the last good checkpoint.
    ``step_offset`` is the step within the first epoch at which this fit call started (resume).
    """

    def __init__(self, directory, every_steps, epoch_offset_step=0, write=True, keep=2):
        super().__init__()
        self.directory = directory
        self.every_steps = int(every_steps) if every_steps else 0
        self.step_offset = epoch_offset_step
        self.write = write
        self.keep = keep
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        step = self.step_offset + batch + 1
        global_step = int(self.model.optimizer.iterations.numpy())
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDiverged(
                f"loss is {loss} at step {global_step} (epoch {self.epoch + 1}, batch {step}): stopping. "
                "Lower the learning rate (--lr), enable gradient clipping, or check the data.")
        if self.every_steps and global_step % self.every_steps == 0:
            self.save(self.epoch, step)

    def on_epoch_end(self, epoch, logs=None):
        self.step_offset = 0
        self.save(epoch + 1, 0)

    def save(self, epoch, step):
        if not self.write:
            return
        os.makedirs(self.directory, exist_ok=True)
        global_step = int(self.model.optimizer.iterations.numpy())
        stem = f"ckpt-{global_step:08d}"
        name = stem + ".weights.h5"
        state = {"epoch": epoch, "step": step, "global_step": global_step, "weights": name}
        save_keras(self.model, os.path.join(self.directory, name),
                   list(self.model.weights) + list(self.model.optimizer.variables))
        for target in (stem + ".json", STATE_FILE):
            with atomic_output(os.path.join(self.directory, target)) as tmp:
                with open(tmp, "w") as f:
                    json.dump(state, f)
        old = sorted(f for f in os.listdir(self.directory) if f.startswith("ckpt-") and f.endswith(".weights.h5"))
        for stale in old[:-self.keep]:
            os.remove(os.path.join(self.directory, stale))
            sidecar = os.path.join(self.directory, stale[:-len(".weights.h5")] + ".json")
            if os.path.exists(sidecar):
                os.remove(sidecar)
