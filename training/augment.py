"""Train and eval transforms (tf.data side).

Both yield RGB 0..255 float32: the models normalize inside (``include_preprocessing=True``). Decoding
and the eval transform call the very functions predict calls (PIL, in ``tf.numpy_function``), so a
file gives the same pixels, and the same logits, through ``predict`` and through ``evaluate``. The
per-image training augmentation is the reference's (timm's PIL transforms, ported draw for draw), run
with the decode in one numpy function: PIL's uint8 operations take a fraction of the time of Keras' float
image layers. Mixup and CutMix are timm's batch mode, which mixes image i of a batch with image n-1-i: each
such pair is augmented and mixed in one call, while its pixels are in the cache.
"""

import io
import math

import numpy as np

from keras_evit.preprocessing import (CROP_PCT, as_rgb_array, center_crop, check_aspect_ratio, decode_image, decode_rgb,
                                      load_image)


def _path(value):
    """A numpy_function string argument (bytes in graphs, a 0-d array eagerly) as str."""
    value = value.item() if hasattr(value, "item") else value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _encoded(value):
    """A numpy_function string argument holding an encoded image (a data set's JPEG or PNG bytes) as a file."""
    return io.BytesIO(value.item() if hasattr(value, "item") else value)


def _decode_path(path):
    return decode_image(_path(path))


def _decode_encoded(value):
    return decode_image(_encoded(value))


def decode(record, encoded=False):
    """A file path (string tensor; ``encoded``: the image file's bytes) or an image array -> RGB uint8 (H, W,
    3), PIL-decoded as predict.

    The numpy functions here and below are made outside the traced functions: a function defined or made
    inside one is rewritten by AutoGraph, and then runs AutoGraph's wrappers on every call, holding
    Python's lock."""
    import tensorflow as tf

    if record.dtype == tf.string:
        image = tf.numpy_function(_decode_encoded if encoded else _decode_path, [record], tf.uint8, stateful=False)
    else:
        image = tf.numpy_function(as_rgb_array, [record], tf.uint8, stateful=False)
    image.set_shape([None, None, 3])
    return image


def eval_transform(size, crop_pct=CROP_PCT, encoded=False):
    """Reference eval transform (``keras_evit.load_image``) on a path (``encoded``: an image file's bytes) or
    an image array: float32 0..255."""
    import tensorflow as tf

    read = _encoded if encoded else _path

    def from_path(path):
        return load_image(read(path), size, crop_pct)

    def from_array(image):
        return center_crop(image, size, crop_pct)

    def fn(record):
        if record.dtype == tf.string:
            crop = tf.numpy_function(from_path, [record], tf.uint8, stateful=False)
        else:
            crop = tf.numpy_function(from_array, [record], tf.uint8, stateful=False)
        crop.set_shape([size, size, 3])
        return tf.cast(crop, tf.float32)
    return fn


def random_resized_crop(img, size, scale, ratio, rng):
    """timm's ``RandomResizedCropAndInterpolation`` (bicubic) on a PIL image: same draws, same fallback."""
    from PIL import Image

    width, height = img.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = rng.uniform(*scale) * area
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top, left = int(rng.integers(0, height - h, endpoint=True)), int(rng.integers(0, width - w, endpoint=True))
            break
    else:  # central crop at the nearest allowed aspect ratio
        in_ratio = width / height
        w, h = width, height
        if in_ratio < min(ratio):
            h = int(round(w / min(ratio)))
        elif in_ratio > max(ratio):
            w = int(round(h * max(ratio)))
        top, left = (height - h) // 2, (width - w) // 2
    return img.crop((left, top, left + w, top + h)).resize((size, size), Image.BICUBIC)


def random_erase(image, probability, rng):
    """timm's ``RandomErasing(probability, mode="pixel")`` on a float RGB 0..255 array, in place.

    timm erases after normalization with N(0, 1) noise per pixel and channel; in 0..255 that is
    255 * (mean + std * N(0, 1)), which the model's own normalization maps back to N(0, 1).
    """
    from keras_evit.preprocessing import IMAGENET_MEAN, IMAGENET_STD

    if rng.random() > probability:
        return image
    height, width = image.shape[:2]
    for _ in range(10):
        target_area = rng.uniform(0.02, 1 / 3) * height * width
        aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
        h, w = int(round(math.sqrt(target_area * aspect))), int(round(math.sqrt(target_area / aspect)))
        if w < width and h < height:
            top, left = int(rng.integers(0, height - h, endpoint=True)), int(rng.integers(0, width - w, endpoint=True))
            noise = rng.standard_normal((h, w, 3), dtype=np.float32)
            image[top:top + h, left:left + w] = 255.0 * (np.asarray(IMAGENET_MEAN, np.float32)
                                                         + np.asarray(IMAGENET_STD, np.float32) * noise)
            break
    return image


def train_image(record, recipe, rand_augment, rng, out=None):
    """One training image (a file path or an RGB array) -> float32 (size, size, 3), 0..255 but where erased:
    random-resized crop (bicubic), flip, RandAugment (None: off), random erasing, in PIL and numpy as timm does.
    ``out``: the float32 array to write it into (else a new one)."""
    from PIL import Image

    if isinstance(record, (str, io.BytesIO)):
        img = decode_rgb(record)  # checks the file's size and aspect ratio
    else:
        array = as_rgb_array(record)
        check_aspect_ratio(array.shape[1], array.shape[0], "training image")
        img = Image.fromarray(array)
    img = random_resized_crop(img, recipe.image_size, tuple(recipe.crop_scale), (3 / 4, 4 / 3), rng)
    if recipe.hflip and rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if rand_augment is not None:
        img = rand_augment(img, rng)
    pixels = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    if out is None:
        out = np.empty(pixels.shape, np.float32)
    out[...] = pixels
    if recipe.random_erasing:
        random_erase(out, recipe.random_erasing, rng)
    return out


def mix_params(recipe, rng, height, width):
    """timm's ``Mixup._params_per_batch`` and CutMix box for one batch, drawn from ``rng``: (lam, box), box
    (top, bottom, left, right) for CutMix (lam corrected to the box's area), None for Mixup. (1.0, None):
    no mixing."""
    mixup, cutmix = float(recipe.mixup or 0.0), float(recipe.cutmix or 0.0)
    if not (mixup or cutmix):
        return 1.0, None
    use_cutmix = not mixup or (cutmix > 0 and rng.random() < recipe.mix_switch_prob)
    lam = float(rng.beta(cutmix, cutmix) if use_cutmix else rng.beta(mixup, mixup))
    if not use_cutmix:
        return lam, None
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    center_y, center_x = int(rng.integers(0, height)), int(rng.integers(0, width))
    top, bottom = np.clip([center_y - cut_h // 2, center_y + cut_h // 2], 0, height)
    left, right = np.clip([center_x - cut_w // 2, center_x + cut_w // 2], 0, width)
    return 1.0 - float((bottom - top) * (right - left)) / (height * width), (top, bottom, left, right)


def mix_pair(pair, lam, box):
    """Mixup (box None) or CutMix, in place, of a (2, H, W, 3) float pair of images that are each other's mirror
    in the batch, as timm's batch mode mixes image i with image n-1-i (same expressions, same order)."""
    if box is not None:
        top, bottom, left, right = box
        patch = pair[0, top:bottom, left:right].copy()
        pair[0, top:bottom, left:right] = pair[1, top:bottom, left:right]
        pair[1, top:bottom, left:right] = patch
    elif lam != 1.0:
        lam = np.float32(lam)
        first_rest = pair[0] * (np.float32(1.0) - lam)
        pair[0] *= lam
        pair[0] += pair[1] * (np.float32(1.0) - lam)
        pair[1] *= lam
        pair[1] += first_rest
    return pair


def _rng(key):
    return np.random.default_rng([int(k) % 2**64 for k in np.asarray(key).ravel()])


def train_transform(recipe, num_classes, batch_size, encoded=False):
    """(image a, image b) of a batch, each a (record, label, key) triple (a record: a path, an image file's bytes
    with ``encoded``, or an image array), b the mirror of a (the same image for
    the middle of an odd batch) -> (images (2, size, size, 3) float32, soft labels (2, classes)): each
    augmented as ``train_image``, then the pair mixed with its batch's Mixup/CutMix draw (the middle image of
    an odd batch, its own mirror, comes back twice, unmixed). Augmenting a pair in one call mixes each image
    while it is in the cache, instead of three passes over the whole batch. An image's randomness is a
    function of its key (the run's seed, epoch and position), and the batch's draw of the key of its first
    position, so a resumed run repeats them exactly."""
    import tensorflow as tf

    from .rand_augment import RandAugment

    rand_augment = None
    if recipe.randaugment_magnitude:
        rand_augment = RandAugment(recipe.randaugment_magnitude, recipe.randaugment_ops,
                                   magnitude_std=recipe.randaugment_mstd)
    size = recipe.image_size

    def make_pair(read):
        def pair(record_a, record_b, key_a, key_b):
            # the middle image of an odd batch is its own mirror: mixed with itself, it stays as it is
            out = np.empty((2, size, size, 3), np.float32)
            train_image(read(record_a), recipe, rand_augment, _rng(key_a), out=out[0])
            if np.array_equal(key_a, key_b):
                out[1] = out[0]
                return out, np.float32(1.0)
            train_image(read(record_b), recipe, rand_augment, _rng(key_b), out=out[1])
            seed, epoch, position = (int(k) for k in key_a)
            # the batch's draw: a stream of its own (4 entropy words), the same for every pair of the batch
            lam, box = mix_params(recipe, _rng([seed, epoch, position - position % batch_size, 1]), size, size)
            return mix_pair(out, lam, box), np.float32(lam)
        return pair

    pair_of_files, pair_of_arrays = make_pair(_encoded if encoded else _path), make_pair(np.asarray)

    def fn(first, second):
        (record_a, label_a, key_a), (record_b, label_b, key_b) = first, second
        pair = pair_of_files if record_a.dtype == tf.string else pair_of_arrays  # chosen when traced
        images, lam = tf.numpy_function(pair, [record_a, record_b, key_a, key_b], (tf.float32, tf.float32),
                                        stateful=False)
        images, lam = tf.ensure_shape(images, [2, size, size, 3]), tf.ensure_shape(lam, [])
        one_a, one_b = tf.one_hot(label_a, num_classes), tf.one_hot(label_b, num_classes)
        return images, tf.stack([one_a * lam + one_b * (1.0 - lam), one_b * lam + one_a * (1.0 - lam)])
    return fn


__all__ = ["decode", "eval_transform", "mix_pair", "mix_params", "random_erase", "random_resized_crop",
           "train_image", "train_transform"]
