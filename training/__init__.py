"""Training: the paper's recipe with tf.distribute, distillation, transfer learning, resume."""

from .checkpoint import AtomicCheckpoint, TrainingDiverged, checkpoint_states, read_state
from .data import load_source, make_dataset
from .classifier import build_classifier
from .distributed import make_strategy
from .evaluate import evaluate
from .loop import train
from .recipe import PRESETS, Recipe, get_recipe

__all__ = ["AtomicCheckpoint", "PRESETS", "checkpoint_states", "Recipe", "TrainingDiverged", "build_classifier", "evaluate",
           "get_recipe", "load_source", "make_dataset", "make_strategy", "read_state", "train"]
