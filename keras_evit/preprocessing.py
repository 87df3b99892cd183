"""Images in, as the reference evaluates them: decode, resize 256 bicubic, center-crop 224, normalize.

Models built with ``include_preprocessing=True`` (the default, as keras.applications EfficientNetV2)
hold the ImageNet normalization as their first layer and take RGB 0..255, uint8 or float; then
:func:`preprocess_input` is a documented pass-through. :func:`normalize_images` is the same
normalization outside the model, for ``include_preprocessing=False`` models.
See docs/ARCHITECTURE.md ("Preprocessing").
"""

import functools
import json
import os

import numpy as np

from .configs import CROP_PCT, IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (re-exported: public names)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
# the formats PIL may decode (its JPEG reader opens cameras' multi-picture files too, as "MPO"); never the
# others, whatever a file's name: PIL hands EPS files to Ghostscript, and parses dozens of rarer formats
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "GIF", "TIFF")
# the largest image side the models are built for, and the largest file we decode (pixels): bigger
# files are refused per image with a clear message instead of exhausting memory
MAX_IMAGE_SIZE = 4096
MAX_DECODE_PIXELS = 100_000_000
# the eval transform resizes the short side to ~1.14x the model's input, so a 65000x1 strip would become
# billions of pixels: images longer than this many times their width (or the reverse) are refused
MAX_ASPECT_RATIO = 100
# a progressive JPEG has about 10 scans; a file with hundreds repeats passes over the image for minutes
MAX_JPEG_SCANS = 256
PREPROCESSING_LAYER = "preprocessing"


def preprocessing_layer():
    """The in-model normalization: x * 1/(255 std) - mean/std, per channel (an ``ImageNormalization``)."""
    from .layers import ImageNormalization

    return ImageNormalization(name=PREPROCESSING_LAYER)


def is_normalization(layer):
    """The in-model normalization, by type (files written before it had a type of its own: a ``Rescaling``
    named "preprocessing")."""
    import keras

    from .layers import ImageNormalization

    return isinstance(layer, ImageNormalization) or (isinstance(layer, keras.layers.Rescaling)
                                                     and layer.name == PREPROCESSING_LAYER)


def raw_input_model(model):
    """``model`` taking RGB 0..255: itself when it normalizes inside, else the normalization in front of it
    (a model built with ``include_preprocessing=False``, or a keras-hub classifier whose preprocessor does
    it). What exported files take: MediaPipe normalizes with one mean and std for all channels only."""
    import keras

    if has_preprocessing(model):
        return model
    inputs = keras.Input(model.inputs[0].shape[1:], name="image")
    return keras.Model(inputs, model(preprocessing_layer()(inputs)), name=model.name)


def has_preprocessing(model):
    """True when ``model`` takes raw RGB 0..255: it holds the normalization layer (or a stem with the
    normalization folded in), itself or in a model it calls as a layer (``x = backbone(inputs)``)."""
    from .compat import sublayers
    from .layers import PatchEmbedding

    return any(is_normalization(layer) or (isinstance(layer, PatchEmbedding) and layer.input_scale is not None)
               for layer in sublayers(model))


def preprocess_input(x, data_format=None):
    """A pass-through, as ``keras.applications.efficientnet_v2.preprocess_input``.

    keras_evit models normalize inside (``include_preprocessing=True``, the default): feed them RGB
    0..255. For models built with ``include_preprocessing=False`` use :func:`normalize_images`.
    """
    return x


def normalize_images(x, data_format=None):
    """RGB in [0, 255] (uint8 or float, channels last) -> (x / 255 - mean) / std, float32.

    Only for models built with ``include_preprocessing=False``; float inputs are taken as 0..255.
    """
    if data_format not in (None, "channels_last"):
        raise ValueError("keras_evit models are channels-last; pass NHWC images")
    if tuple(np.shape(x))[-1:] != (3,):
        raise ValueError(f"normalize_images expects RGB images with 3 channels last, got shape {np.shape(x)}")
    if isinstance(x, (np.ndarray, list, tuple)):
        x = np.asarray(x).astype("float32")
    elif type(x).__module__.startswith("tensorflow"):  # tf.data under any Keras backend
        import tensorflow as tf

        x = tf.cast(x, "float32")
    else:  # a backend tensor or a symbolic Keras input
        from keras import ops

        x = ops.cast(x, "float32")
    return (x / 255.0 - np.array(IMAGENET_MEAN, "float32")) / np.array(IMAGENET_STD, "float32")


def model_inputs(model, images):
    """``images`` (RGB 0..255) as ``model`` wants them: raw when it normalizes itself, else normalized."""
    return images if has_preprocessing(model) else normalize_images(images)


@functools.lru_cache(maxsize=1)
def imagenet_classes():
    """[(synset, name)] in the standard class-index order (0 = tench ... 999 = toilet tissue)."""
    path = os.path.join(os.path.dirname(__file__), "data", "imagenet_classes.json")
    with open(path) as f:
        return [tuple(item) for item in json.load(f)]


def imagenet_class_names():
    """The 1000 human-readable names, as :func:`decode_predictions` names them."""
    return [name for _, name in imagenet_classes()]


def decode_predictions(preds, top=5, class_names=None):
    """[[(id, name, score), ...] per image], best first, as ``keras.applications`` returns.

    ``class_names``: a fine-tuned model's classes (id = name); default the 1000 ImageNet classes.
    """
    preds = np.asarray(preds)
    classes = imagenet_classes() if class_names is None else [(n, n) for n in class_names]
    if preds.ndim != 2 or preds.shape[1] != len(classes):
        raise ValueError(f"decode_predictions expects a (batch, {len(classes)}) array, got shape {preds.shape}")
    if int(top) < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    results = []
    for row in preds:
        order = np.argsort(-row, kind="stable")[:int(top)]
        results.append([(classes[i][0], classes[i][1], float(row[i])) for i in order])
    return results


def _to_rgb(img):
    """PIL image in any mode -> RGB uint8 array; 16-bit and float modes are scaled, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        data = np.asarray(img, dtype=np.int64)
        top = 65535 if img.mode.startswith("I;16") or data.max(initial=0) > 255 else 255
        grey = np.clip(np.round(data * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if img.mode == "F":
        data = np.asarray(img, dtype=np.float64)
        scale = 255.0 if data.max(initial=0.0) <= 1.0 else 1.0
        grey = np.clip(np.round(data * scale), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        from PIL import Image

        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))  # transparent -> white, as browsers
        img = Image.alpha_composite(background, img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def decode_image(path):
    """RGB uint8 array of the file at ``path`` (or of an open binary file: a data set's encoded image in
    ``io.BytesIO``); ValueError naming the file when it cannot be used."""
    return _decode(path, _to_rgb)


def decode_rgb(path):
    """``decode_image``'s pixels as a PIL RGB image, for transforms that work in PIL (training's crop and
    augmentation) without a round trip through numpy."""
    return _decode(path, _to_rgb_image)


def _to_rgb_image(img):
    from PIL import Image

    return img if img.mode == "RGB" else Image.fromarray(_to_rgb(img))


def _open_image_file(path):
    """``path`` open for reading if it is a regular file (a pipe would block the decoder), else a ValueError
    (FileNotFoundError when missing) that names it."""
    from .regular_file import NotRegularFile, open_regular

    try:
        return open_regular(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except NotRegularFile:
        raise ValueError(f"{path} is not a regular file (a folder, pipe, device or socket): skipped") from None
    except OSError as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc


def _decode(path, convert):
    if hasattr(path, "read"):
        return _decode_open(path, getattr(path, "name", "(encoded image)"), convert)
    with _open_image_file(path) as f:
        return _decode_open(f, path, convert)


def _decode_open(f, path, convert):
    """The image in the open binary file ``f`` (named ``path`` in errors), checked before it is decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(f, formats=IMAGE_FORMATS) as img:
            width, height = img.size
            if width * height > MAX_DECODE_PIXELS:
                raise ValueError(f"image {path} is {width}x{height} pixels, over the {MAX_DECODE_PIXELS:,}-pixel "
                                 "limit (a decompression bomb or a huge scan): downscale it first")
            check_aspect_ratio(width, height, f"image {path}")
            if img.format in ("JPEG", "MPO"):
                check_jpeg_scans(f, path)
            img.load()
            return convert(img)
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image {path} is too large to decode ({exc}): a decompression bomb or a huge scan; "
                         "downscale it first") from exc
    except MemoryError:
        raise ValueError(f"image {path}: out of memory while decoding it: downscale it first") from None
    except ValueError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}. Use a JPEG/PNG/BMP/WebP/GIF file.") from exc


def _jpeg_decodes_every_scan(f):
    """True when libjpeg will decode each scan of this JPEG (progressive, or a first scan without every
    component); False for a single interleaved baseline scan, after which libjpeg stops. Walks the marker
    segments up to the first scan (a few small reads); an unreadable header counts as True."""
    progressive, components = False, None
    f.seek(2)
    for _ in range(4096):
        head = f.read(4)
        while head[:1] == b"\xff" and head[1:2] == b"\xff":  # fill bytes before a marker
            head = head[1:] + f.read(1)
        if len(head) < 4 or head[0] != 0xFF:
            return True
        marker, length = head[1], int.from_bytes(head[2:4], "big")
        if marker in (0xD8, 0xD9):  # a second start, or an end before any scan: left to the full count
            return True
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length, skipped as libjpeg skips them
            f.seek(-2, 1)
            continue
        if marker == 0xDA:
            scan_components = f.read(1)
            return progressive or components is None or scan_components[:1] != bytes([components])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
            progressive = marker in (0xC2, 0xC6, 0xCA, 0xCE)
            frame = f.read(6)
            components = frame[5] if len(frame) == 6 else None
            f.seek(length - 8, 1)
        else:
            f.seek(length - 2, 1)
    return True


def check_jpeg_scans(f, path):
    """Refuses a JPEG file (``f``, open; ``path`` names it) with more than MAX_JPEG_SCANS scans where libjpeg
    decodes each of them: each is a pass over the whole image, so a few hundred KB of repeated empty scans
    took minutes to decode. Cameras and encoders write 1 (baseline) to about 10 (progressive). Counts
    start-of-scan markers (an embedded thumbnail's included), reading 1 MB at a time; a baseline file with one
    scan is not read past its header. ``f``'s position is restored."""
    scans, tail, position = 0, b"", f.tell()
    try:
        if not _jpeg_decodes_every_scan(f):
            return
        f.seek(0)
        while scans <= MAX_JPEG_SCANS and (chunk := f.read(1 << 20)):
            block = tail + chunk
            scans += block.count(b"\xff\xda")
            tail = block[-1:]  # a marker split between two reads is counted once, in the second
    finally:
        f.seek(position)
    if scans > MAX_JPEG_SCANS:
        raise ValueError(f"image {path} is a JPEG of more than {MAX_JPEG_SCANS} scans, each a pass over the whole "
                         "image (a crafted file): re-encode it (e.g. save it again as a baseline JPEG)")


def check_aspect_ratio(width, height, what="image"):
    """Refuses empty images and strips more than MAX_ASPECT_RATIO times longer than wide (or the reverse)."""
    if min(width, height) < 1:
        raise ValueError(f"{what} is {width}x{height} pixels: empty")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ValueError(f"{what} is {width}x{height} pixels, more than {MAX_ASPECT_RATIO}:1: resizing its short "
                         "side would make it enormous; crop it first")


def _size_pair(image_size):
    height, width = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    return int(height), int(width)


def as_rgb_array(image):
    """An image array (H, W), (H, W, 1) or (H, W, 3) as contiguous RGB uint8 (H, W, 3); any other shape is
    a ValueError naming it."""
    image = np.asarray(image)
    shape = image.shape
    if image.ndim == 2 or (image.ndim == 3 and shape[-1] == 1):
        image = np.repeat(image.reshape(shape[:2] + (1,)), 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"an image must be (H, W), (H, W, 1) or (H, W, 3) pixels, got shape {shape}: convert "
                         "the images to RGB")
    return np.ascontiguousarray(image.astype(np.uint8))


def center_crop(image, image_size=224, crop_pct=CROP_PCT):
    """The reference eval transform on an RGB uint8 array: the one definition predict, evaluate,
    export calibration/verification and the demo share.

    Shorter side resized to ``int(size / crop_pct)`` with bicubic (PIL), then center crop, as timm's
    ``transforms_imagenet_eval`` / the official ``build_transform``.
    """
    from PIL import Image

    height, width = _size_pair(image_size)
    img = Image.fromarray(as_rgb_array(image))
    scale = int(min(height, width) / crop_pct)
    w, h = img.size
    check_aspect_ratio(w, h)
    if w <= h:
        new_w, new_h = scale, int(scale * h / w)
    else:
        new_w, new_h = int(scale * w / h), scale
    img = img.resize((new_w, new_h), Image.BICUBIC)
    top = int(round((new_h - height) / 2.0))
    left = int(round((new_w - width) / 2.0))
    img = img.crop((left, top, left + width, top + height))
    return np.asarray(img, dtype=np.uint8)


def load_image(path, image_size=224, crop_pct=CROP_PCT):
    """The reference eval transform on one file: RGB uint8 (size, size, 3)."""
    image = decode_image(path)
    try:
        return center_crop(image, image_size, crop_pct)
    except MemoryError:
        raise ValueError(f"image {path}: out of memory while resizing it: downscale it first") from None


def check_image_size(image_size):
    """An int side length in [MIN_SIZE, MAX_IMAGE_SIZE], or a ValueError that says so."""
    from .configs import MIN_SIZE

    size = int(image_size)
    if not MIN_SIZE <= size <= MAX_IMAGE_SIZE:
        raise ValueError(f"image size {image_size} is out of range: use {MIN_SIZE}..{MAX_IMAGE_SIZE} px "
                         "(224 is the ImageNet default)")
    return size


def list_images(folder, recursive=False):
    """Image files in ``folder`` (with ``recursive``, in its sub-folders too), sorted."""
    if recursive:
        found = (os.path.join(root, f) for root, _, files in os.walk(folder) for f in files)
    else:
        found = (os.path.join(folder, f) for f in os.listdir(folder))
    return sorted(p for p in found if p.lower().endswith(IMAGE_EXTENSIONS))
