"""ImageNet preprocessing as the reference evaluates: resize 256 bicubic, center-crop 224, mean/std."""

import functools
import json
import os

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_PCT = 0.875
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def preprocess_input(x, data_format=None):
    """RGB in [0, 255] (uint8 or float, channels last) -> (x / 255 - mean) / std, float32.

    Like ``keras.applications``, float inputs are taken as 0..255, not 0..1.
    """
    if data_format not in (None, "channels_last"):
        raise ValueError("keras_evit models are channels-last; pass NHWC images")
    if tuple(np.shape(x))[-1:] != (3,):
        raise ValueError(f"preprocess_input expects RGB images with 3 channels last, got shape {np.shape(x)}")
    if isinstance(x, (np.ndarray, list, tuple)):
        x = np.asarray(x).astype("float32")
    else:  # a backend tensor (tf.data pipelines, symbolic inputs): stay in the graph
        from keras import ops

        x = ops.cast(x, "float32")
    return (x / 255.0 - np.array(IMAGENET_MEAN, "float32")) / np.array(IMAGENET_STD, "float32")


@functools.lru_cache(maxsize=1)
def imagenet_classes():
    """[(synset, name)] in the standard class-index order (0 = tench ... 999 = toilet tissue)."""
    path = os.path.join(os.path.dirname(__file__), "data", "imagenet_classes.json")
    with open(path) as f:
        return [tuple(item) for item in json.load(f)]


def decode_predictions(preds, top=5):
    """[[(synset, name, score), ...] per image], best first, as ``keras.applications`` returns."""
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != 1000:
        raise ValueError(f"decode_predictions expects a (batch, 1000) array, got shape {preds.shape}")
    classes = imagenet_classes()
    results = []
    for row in preds:
        order = np.argsort(-row, kind="stable")[:top]
        results.append([(classes[i][0], classes[i][1], float(row[i])) for i in order])
    return results


def load_image(path, image_size=224, crop_pct=CROP_PCT):
    """The reference eval transform on one file: RGB uint8 (size, size, 3).

    Shorter side resized to ``int(size / crop_pct)`` with bicubic (PIL), then center crop, as timm's
    ``transforms_imagenet_eval`` / the official ``build_transform``.
    """
    from PIL import Image, UnidentifiedImageError

    height, width = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}. Use a JPEG/PNG/BMP/WebP/GIF file.") from exc
    scale = int(min(height, width) / crop_pct)
    w, h = img.size
    if w <= h:
        new_w, new_h = scale, int(scale * h / w)
    else:
        new_w, new_h = int(scale * w / h), scale
    img = img.resize((new_w, new_h), Image.BICUBIC)
    top = int(round((new_h - height) / 2.0))
    left = int(round((new_w - width) / 2.0))
    img = img.crop((left, top, left + width, top + height))
    return np.asarray(img, dtype=np.uint8)


def list_images(folder):
    """Image files directly in ``folder``, sorted."""
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
