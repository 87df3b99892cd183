"""Train and eval transforms (tf.data side), built from Keras preprocessing layers where they exist."""


from keras_evit.preprocessing import CROP_PCT, IMAGENET_MEAN, IMAGENET_STD


def _normalize(image):
    import tensorflow as tf

    return (tf.cast(image, tf.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def eval_transform(size, crop_pct=CROP_PCT):
    """Reference eval transform: shorter side to size / crop_pct (bicubic), center crop, normalize."""
    import tensorflow as tf

    scale = int(size / crop_pct)

    def fn(image):
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        factor = scale / tf.reduce_min(shape)
        new = tf.cast(tf.floor(shape * factor), tf.int32)
        new = tf.maximum(new, scale)
        resized = tf.image.resize(image, new, method="bicubic", antialias=True)
        top = (new[0] - size + 1) // 2
        left = (new[1] - size + 1) // 2
        crop = resized[top:top + size, left:left + size]
        crop = tf.clip_by_value(crop, 0.0, 255.0)
        crop.set_shape([size, size, 3])
        return _normalize(crop)
    return fn


def train_transform(recipe):
    """Random-resized crop (bicubic), flip, RandAugment, normalize, random erasing."""
    import keras
    import tensorflow as tf

    size = recipe.image_size
    rand_augment = None
    if recipe.randaugment_magnitude:
        rand_augment = keras.layers.RandAugment(value_range=(0, 255), num_ops=recipe.randaugment_ops,
                                                factor=recipe.randaugment_magnitude / 10.0,
                                                interpolation="bilinear", seed=recipe.seed)
    erasing = None
    if recipe.random_erasing:
        erasing = keras.layers.RandomErasing(factor=recipe.random_erasing, value_range=(0, 255),
                                             seed=recipe.seed)

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
            crop = rand_augment(crop, training=True)
        if erasing is not None:
            crop = erasing(crop, training=True)
        crop = tf.ensure_shape(tf.cast(crop, tf.float32), [size, size, 3])
        return _normalize(crop)
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


__all__ = ["eval_transform", "mix_batch", "train_transform"]
