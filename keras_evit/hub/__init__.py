"""EfficientViT-M in keras-hub's shape: a ``Backbone`` with ``pyramid_outputs``, an ``ImageClassifier`` task
with its preprocessor and image converter, and ``efficientvit_m0_imagenet`` .. ``m5`` presets.

Needs the ``hub`` extra (``pip install keras-evit[hub]``). As everywhere in keras-hub, the backbone takes
normalized images and the preprocessor (the image converter) resizes, crops and normalizes; the
``keras_evit.EfficientViTM*`` builders instead normalize inside the model. Same layers, same weights,
same logits. Import this module before loading a saved EfficientViT preset or ``.keras`` file in a new
process, so Keras knows the classes.
"""

try:
    import keras_hub  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("keras_evit.hub needs keras-hub: pip install 'keras-evit[hub]'") from exc

from .backbone import EfficientViTBackbone
from .image_classifier import (EfficientViTImageClassifier, EfficientViTImageClassifierPreprocessor,
                               EfficientViTImageConverter)
from .presets import PRESETS

__all__ = ["EfficientViTBackbone", "EfficientViTImageClassifier", "EfficientViTImageClassifierPreprocessor",
           "EfficientViTImageConverter", "PRESETS"]
