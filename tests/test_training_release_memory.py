"""ReleaseFreedMemory: glibc's malloc_trim while the first training / evaluation batch is built, then nothing."""

import threading
import time

import keras
import numpy as np

from keras_evit.training import release_memory
from keras_evit.training.loop import _callbacks
from keras_evit.training.recipe import get_recipe


def _trimmers():
    return [t for t in threading.enumerate() if t.name == "keras-evit-malloc-trim" and t.is_alive()]


def _wait(condition, timeout=10.0):
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.01)
    return condition()


def test_trims_only_around_the_first_batch_of_each_pass(monkeypatch):
    calls = []
    monkeypatch.setattr(release_memory, "_malloc_trim", lambda: lambda pad: calls.append(pad))
    cb = release_memory.ReleaseFreedMemory(period=0.01)
    cb.on_train_begin()
    assert _wait(lambda: len(calls) >= 3)  # trims while the first step is built
    cb.on_train_batch_end(0)
    assert _wait(lambda: not _trimmers())
    stopped = len(calls)
    time.sleep(0.1)
    assert len(calls) == stopped and calls[-1] == 0  # one last trim when the batch ends, then none
    cb.on_train_end()
    # a second fit with the same callbacks (a resumed run's next call) has its step built already
    cb.on_train_begin()
    time.sleep(0.1)
    assert len(calls) == stopped and not _trimmers()
    # the first validation pass builds the evaluation step: trimmed; later passes: not
    cb.on_test_begin()
    assert _wait(lambda: len(calls) >= stopped + 3)
    cb.on_test_end()
    assert _wait(lambda: not _trimmers())
    tested = len(calls)
    cb.on_test_begin()
    time.sleep(0.1)
    cb.on_test_end()
    assert len(calls) == tested


def test_does_nothing_without_glibc(monkeypatch):
    monkeypatch.setattr(release_memory, "_malloc_trim", lambda: None)
    cb = release_memory.ReleaseFreedMemory(period=0.01)
    cb.on_train_begin()
    time.sleep(0.05)
    assert not _trimmers()
    cb.on_train_batch_end(0)
    cb.on_train_end()


def test_this_machine_has_malloc_trim():
    """Linux with glibc (where training runs here and in CI): the real function is found."""
    assert release_memory._malloc_trim() is not None


def test_fit_ends_with_no_thread_left_and_training_runs_use_it(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    x, y = np.zeros((8, 4), "float32"), np.zeros((8, 2), "float32")
    cb = release_memory.ReleaseFreedMemory()
    model.fit(x, y, batch_size=4, epochs=2, validation_data=(x, y), verbose=0, callbacks=[cb])
    assert cb._seen == {"train", "test"} and _wait(lambda: not _trimmers())
    assert any(isinstance(c, release_memory.ReleaseFreedMemory) for c in _callbacks(str(tmp_path), get_recipe(),
                                                                                      chief=True))
