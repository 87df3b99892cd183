"""keras-evit: EfficientViT-M0..M5 (MSRA, CVPR 2023) for Keras 3, exact to the timm reference.

``import keras_evit`` imports Keras and registers every layer, so ``keras.saving.load_model`` reads our
``.keras`` files. Only the ``keras-evit`` command defers that until its arguments are parsed, so that
``keras-evit --help`` and argument errors answer at once, without starting TensorFlow.
"""

import os
import sys

__version__ = "0.1.0"

__all__ = [
    "EfficientViTM0", "EfficientViTM1", "EfficientViTM2", "EfficientViTM3", "EfficientViTM4",
    "EfficientViTM5", "VARIANTS", "attention_maps", "build_model", "decode_predictions", "feature_extractor",
    "fold_normalization", "fuse_batchnorm", "get_variant", "head_similarity", "layers", "load_classifier", "load_image",
    "normalize_images", "preprocess_input", "remat_scope",
]

_importing = []  # guards __getattr__ against re-entry while import_all runs
CONSOLE_SCRIPTS = ("keras-evit", "keras-evit.exe", "keras-evit-script.py")


def import_all():
    """Imports the public API (and with it Keras and every registered layer); idempotent."""
    import importlib

    layers = importlib.import_module(".layers", __name__)
    from .layers.remat import remat_scope
    importlib.import_module(".optimizers", __name__)  # registers AGCAdamW, which run outputs name
    from .analysis import attention_maps, head_similarity
    from .configs import VARIANTS, get_variant
    from .models import (
        EfficientViTM0, EfficientViTM1, EfficientViTM2, EfficientViTM3, EfficientViTM4, EfficientViTM5,
        build_model, feature_extractor, fold_normalization, fuse_batchnorm,
    )
    from .weights.artifacts import load_classifier
    from .preprocessing import decode_predictions, load_image, normalize_images, preprocess_input

    namespace = dict(locals())
    del namespace["importlib"]
    globals().update(namespace)


def __getattr__(name):  # PEP 562: only reached while the console script has deferred the imports
    if name in __all__ and not _importing:
        _importing.append(name)
        import_all()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if os.path.basename(sys.argv[0] if sys.argv else "") not in CONSOLE_SCRIPTS:
    import_all()
