"""Train and eval transforms (tf.data side), built from Keras preprocessing layers where they exist.

Both yield RGB 0..255 float32: the models normalize inside (``include_preprocessing=True``). Decoding
and the eval transform call the very functions predict calls (PIL, in ``tf.numpy_function``), so a
file gives the same pixels, and the same logits, through ``predict`` and through ``evaluate``.
"""

from keras_evit.preprocessing import CROP_PCT, as_rgb_array, center_crop, decode_image, load_image


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


def chosen_ops_only(rand_augment):
    """Keras' ``RandAugment`` as a function that runs only the augmentations it picks.

    The layer applies every one of its 11 augmentations at each of its ``num_ops`` steps and keeps the
    picked one with ``where`` (22 image transforms per image where 2 are used: ~80% of the input pipeline's
    time). Here each step picks uniformly among the same layers, as the layer does, and ``tf.switch_case``
    runs only that branch: the same distribution of outputs at a fraction of the cost.
    """
    import tensorflow as tf

    from keras_evit.compat import rand_augment_ops

    ops = rand_augment_ops(rand_augment)

    def fn(image):
        image = tf.cast(image, tf.float32)
        for _ in range(rand_augment.num_ops):
            index = tf.random.uniform((), 0, len(ops), dtype=tf.int32)
            branches = [lambda op=op: tf.cast(op(image, training=True), tf.float32) for op in ops]
            image = tf.ensure_shape(tf.switch_case(index, branches), image.shape)
        return image
    return fn


def erase_with_probability(probability, seed=None):
    """Random erasing (timm's ``reprob``) applied to exactly ``probability`` of the images.

    Keras' ``RandomErasing(factor=p)`` draws each image's chance from U(0, p), so erases p/2 of them, and
    builds the erased copy for every image before choosing. Here an always-on layer runs only for the
    images chosen, with the paper's probability.
    """
    import keras
    import tensorflow as tf

    layer = keras.layers.RandomErasing(factor=(1.0, 1.0), value_range=(0, 255), seed=seed)

    def fn(image):
        return tf.cond(tf.random.uniform(()) < probability,
                       lambda: tf.cast(layer(image, training=True), image.dtype), lambda: image)
    return fn


def train_transform(recipe):
    """Random-resized crop (bicubic), flip, RandAugment, normalize, random erasing."""
    import keras
    import tensorflow as tf

    size = recipe.image_size
    rand_augment = None
    if recipe.randaugment_magnitude:
        rand_augment = chosen_ops_only(keras.layers.RandAugment(
            value_range=(0, 255), num_ops=recipe.randaugment_ops, factor=recipe.randaugment_magnitude / 10.0,
            interpolation="bilinear", seed=recipe.seed))
    erasing = None
    if recipe.random_erasing:
        erasing = erase_with_probability(recipe.random_erasing, recipe.seed)

    def fn(image):
        begin, crop_size, _ = tf.image.sample_distorted_bounding_box(
            tf.shape(image), tf.zeros([0, 0, 4]), min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=tuple(recipe.crop_scale), max_attempts=10, use_image_if_no_bounding_boxes=True)
        crop = tf.slice(image, begin, crop_size)
        crop = tf.ensure_shape(tf.image.resize(crop, (size, size), method="bicubic"), [size, size, 3])
        if recipe.hflip:
            crop = tf.image.random_flip_left_right(crop)
        crop = tf.clip_by_value(crop, 0.0, 255.0)
        if rand_augment is not None:
            crop = rand_augment(crop)
        if erasing is not None:
            crop = erasing(crop)
        return tf.ensure_shape(tf.cast(crop, tf.float32), [size, size, 3])
    return fn


def mix_batch(recipe, num_classes):
    """One-hot labels, then per batch Mixup or CutMix (switch probability as timm's Mixup)."""
    import keras
    import tensorflow as tf

    mixup = keras.layers.MixUp(alpha=recipe.mixup, seed=recipe.seed) if recipe.mixup else None
    cutmix = keras.layers.CutMix(factor=recipe.cutmix, seed=recipe.seed) if recipe.cutmix else None

    def fn(images, labels):
        onehot = tf.one_hot(labels, num_classes)
        if mixup is None and cutmix is None:
            return images, onehot
        batch = {"images": images, "labels": onehot}
        if mixup is not None and cutmix is not None:
            use_cutmix = tf.random.uniform(()) < recipe.mix_switch_prob
            out = tf.cond(use_cutmix, lambda: cutmix(batch, training=True), lambda: mixup(batch, training=True))
        else:
            out = (cutmix or mixup)(batch, training=True)
        return out["images"], out["labels"]
    return fn


__all__ = ["decode", "eval_transform", "mix_batch", "train_transform"]
