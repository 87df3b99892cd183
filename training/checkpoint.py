"""Fault tolerance: atomic checkpoints every N steps and each epoch; resume at the saved step."""

import json
import math
import os

import keras

from keras_evit.utils import atomic_output

STATE_FILE = "state.json"


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the message names the step."""


def read_state(directory):
    path = os.path.join(directory, STATE_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        state = json.load(f)
    if not os.path.isfile(os.path.join(directory, state["weights"])):
        raise FileNotFoundError(f"{path} points to a missing checkpoint {state['weights']}: delete "
                                f"{directory} to start over")
    return state


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
        name = f"ckpt-{global_step:08d}.weights.h5"
        with atomic_output(os.path.join(self.directory, name)) as tmp:
            self.model.save_weights(tmp)
        with atomic_output(os.path.join(self.directory, STATE_FILE)) as tmp:
            with open(tmp, "w") as f:
                json.dump({"epoch": epoch, "step": step, "global_step": global_step, "weights": name}, f)
        old = sorted(f for f in os.listdir(self.directory) if f.startswith("ckpt-") and f.endswith(".weights.h5"))
        for stale in old[:-self.keep]:
            os.remove(os.path.join(self.directory, stale))
