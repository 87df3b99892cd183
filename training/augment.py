"""Train and eval transforms (tf.data side).

Both yield RGB 0..255 float32: the models normalize inside (``include_preprocessing=True``). Decoding
and the eval transform call the very functions predict calls (PIL, in ``tf.numpy_function``), so a
file gives the same pixels, and the same logits, through ``predict`` and through ``evaluate``. The
per-image training augmentation is the reference's (timm's PIL transforms, ported draw for draw), run
with the decode in one numpy function per image: PIL's uint8 operations take a fraction of the time of
Keras' float image layers. Mixup and CutMix, which act on whole batches, are timm's batch mode in
TensorFlow ops.
"""

import math

import numpy as np

from keras_evit.preprocessing import (CROP_PCT, as_rgb_array, center_crop, check_aspect_ratio, decode_image, decode_rgb,
                                      load_image)


def _path(value):
    """A numpy_function string argument (bytes in graphs, a 0-d array eagerly) as str."""
    value = value.item() if hasattr(value, "item") else value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def decode(record):
    """A file path (string tensor) or an image array -> RGB uint8 (H, W, 3), PIL-decoded as predict."""
    import tensorflow as tf

    if record.dtype == tf.string:
        image = tf.numpy_function(lambda p: decode_image(_path(p)), [record], tf.uint8, stateful=False)
    else:
        image = tf.numpy_function(as_rgb_array, [record], tf.uint8, stateful=False)
    image.set_shape([None, None, 3])
    return image


def eval_transform(size, crop_pct=CROP_PCT):
    """Reference eval transform (``keras_evit.load_image``) on a path or an image array: float32 0..255."""
    import tensorflow as tf

    def from_path(path):
        return load_image(_path(path), size, crop_pct)

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


def train_image(record, recipe, rand_augment, rng):
    """One training image (a file path or an RGB array) -> float32 (size, size, 3), 0..255 but where erased:
    random-resized crop (bicubic), flip, RandAugment (None: off), random erasing, in PIL and numpy as timm does."""
    from PIL import Image

    if isinstance(record, str):
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
    image = np.asarray(img if img.mode == "RGB" else img.convert("RGB")).astype(np.float32)
    if recipe.random_erasing:
        random_erase(image, recipe.random_erasing, rng)
    return image


def train_transform(recipe):
    """(record, key) -> the augmented image, a float32 tensor. The randomness of an image is a function of
    ``key`` (the run's seed, epoch and position are passed in), so a resumed run repeats it exactly."""
    import tensorflow as tf

    from .rand_augment import RandAugment

    rand_augment = None
    if recipe.randaugment_magnitude:
        rand_augment = RandAugment(recipe.randaugment_magnitude, recipe.randaugment_ops,
                                   magnitude_std=recipe.randaugment_mstd)

    def augment(record, key):
        rng = np.random.default_rng([int(k) % 2**64 for k in np.asarray(key).ravel()])
        return train_image(record, recipe, rand_augment, rng)

    def from_path(path, key):
        return augment(_path(path), key)

    size = recipe.image_size

    def fn(record, key):
        image = tf.numpy_function(from_path if record.dtype == tf.string else augment, [record, key], tf.float32,
                                  stateful=False)
        return tf.ensure_shape(image, [size, size, 3])
    return fn


def mix_batch(recipe, num_classes):
    """(images, labels, keys) of a batch -> (images, one-hot labels), mixed as timm's ``Mixup`` in its default
    batch mode: one Beta-drawn weight per batch, each image paired with the batch's mirror image, CutMix
    (one box for the batch, weight corrected to the box's area) with ``mix_switch_prob`` when both are on.
    The draws are stateless, from the batch's first key, so a resumed run repeats them."""
    import tensorflow as tf

    mixup, cutmix = float(recipe.mixup or 0.0), float(recipe.cutmix or 0.0)

    def beta(alpha, seed):
        a, b = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        x = tf.random.stateless_gamma((), a, alpha)
        return x / (x + tf.random.stateless_gamma((), b, alpha))

    def cut(images, flipped, lam, seed):
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        ratio = tf.sqrt(1.0 - lam)
        cut_h = tf.cast(tf.cast(height, tf.float32) * ratio, tf.int32)
        cut_w = tf.cast(tf.cast(width, tf.float32) * ratio, tf.int32)
        center = tf.random.stateless_uniform((2,), seed, 0, tf.int32.max, dtype=tf.int32) % tf.stack([height, width])
        top = tf.clip_by_value(center[0] - cut_h // 2, 0, height)
        bottom = tf.clip_by_value(center[0] + cut_h // 2, 0, height)
        left = tf.clip_by_value(center[1] - cut_w // 2, 0, width)
        right = tf.clip_by_value(center[1] + cut_w // 2, 0, width)
        rows, cols = tf.range(height), tf.range(width)
        inside = ((rows >= top) & (rows < bottom))[:, None, None] & ((cols >= left) & (cols < right))[None, :, None]
        area = tf.cast((bottom - top) * (right - left), tf.float32) / tf.cast(height * width, tf.float32)
        return tf.where(inside, flipped, images), 1.0 - area

    def fn(images, labels, keys):
        onehot = tf.one_hot(labels, num_classes)
        if not (mixup or cutmix):
            return images, onehot
        seed = tf.random.experimental.stateless_fold_in(keys[0, :2], keys[0, 2])
        switch_seed, lam_seed, box_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
        flipped = tf.reverse(images, [0])

        def with_cutmix():
            return cut(images, flipped, beta(cutmix, lam_seed), box_seed)

        def with_mixup():
            lam = beta(mixup, lam_seed)
            return images * lam + flipped * (1.0 - lam), lam

        if mixup and cutmix:
            use_cutmix = tf.random.stateless_uniform((), switch_seed) < recipe.mix_switch_prob
            images, lam = tf.cond(use_cutmix, with_cutmix, with_mixup)
        else:
            images, lam = with_cutmix() if cutmix else with_mixup()
        return images, onehot * lam + tf.reverse(onehot, [0]) * (1.0 - lam)
    return fn


__all__ = ["decode", "eval_transform", "mix_batch", "random_erase", "random_resized_crop", "train_image",
           "train_transform"]
