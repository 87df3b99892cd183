"""Training: the paper's recipe with tf.distribute, distillation, transfer learning, resume.

Names are imported on first use, so that the command line can describe its options without TensorFlow.
Scoring a model is ``keras_evit.training.evaluate.evaluate`` (the sub-module keeps its own name).
"""

import importlib

_WHERE = {
    "AtomicCheckpoint": "checkpoint", "TrainingDiverged": "checkpoint", "checkpoint_states": "checkpoint",
    "read_state": "checkpoint", "load_source": "data", "make_dataset": "data", "build_classifier": "classifier",
    "make_strategy": "distributed", "train": "loop", "build_before_fit": "loop", "PRESETS": "recipe",
    "Recipe": "recipe", "get_recipe": "recipe", "ReleaseFreedMemory": "release_memory",
}
__all__ = sorted(_WHERE)


def __getattr__(name):  # PEP 562
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
