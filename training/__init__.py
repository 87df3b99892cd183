"""Training: the paper's recipe with tf.distribute, distillation, transfer learning, resume."""

from .checkpoint import AtomicCheckpoint, TrainingDiverged, read_state
from .data import load_source, make_dataset
from .loop import build_classifier, evaluate, make_strategy, train
from .recipe import PRESETS, Recipe, get_recipe

__all__ = ["AtomicCheckpoint", "PRESETS", "Recipe", "TrainingDiverged", "build_classifier", "evaluate",
           "get_recipe", "load_source", "make_dataset", "make_strategy", "read_state", "train"]
