"""Memory freed while a training step is built, handed back to the system before the step runs."""

import ctypes
import threading

import keras


def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl, Windows)."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except (OSError, TypeError):  # no C library to open by that name (Windows takes no None)
        return None


class ReleaseFreedMemory(keras.callbacks.Callback):
    """Calls glibc's ``malloc_trim`` every ``period`` seconds while the first training batch (and the first
    evaluation batch) of a run is built and run.

    TensorFlow's first call of a training step traces it and optimizes the graph: many small allocations, freed
    before the step computes, which glibc keeps in its heaps, so the process' peak holds them beside the step's
    activations (about 100 MB for M0 and M5 on a CPU). Trimming while they are freed returns them, and the peak
    falls by as much. Later batches build nothing; the thread stops after the first. Without glibc it does
    nothing."""

    def __init__(self, period=0.1):
        super().__init__()
        self.period = float(period)
        self._trim = _malloc_trim()
        self._stop = None
        self._seen = set()  # "train" / "test": the passes whose first batch was already built

    def _start(self, kind):
        if self._trim is None or kind in self._seen or self._stop is not None:
            return
        self._seen.add(kind)
        self._stop = stop = threading.Event()
        trim = self._trim

        def run():
            while not stop.wait(self.period):
                trim(0)

        threading.Thread(target=run, name="keras-evit-malloc-trim", daemon=True).start()

    def _end(self):
        if self._stop is not None:
            self._stop.set()
            self._stop = None
            self._trim(0)

    def on_train_begin(self, logs=None):
        self._start("train")

    def on_train_batch_end(self, batch, logs=None):
        self._end()

    def on_train_end(self, logs=None):
        self._end()

    def on_test_begin(self, logs=None):
        self._start("test")

    def on_test_batch_end(self, batch, logs=None):
        self._end()

    def on_test_end(self, logs=None):
        self._end()
