"""Input pipelines: ``folder:PATH``, ``tfds:NAME`` and ``digits`` (UCI handwritten digits, shipped in the package).

Records (paths, a tfds set's encoded images, or small arrays) are shuffled per epoch with seed ``seed +
epoch``, so a resumed run sees the same epoch order; decoding and augmentation run in parallel and the result
is prefetched. Files and tfds images are decoded by the one decoder predict uses
(``keras_evit.preprocessing.decode_image``), and every file is decoded once at scan time, so a file training
could not read is skipped and counted up front instead of killing the run at its batch.
"""

import gzip
import os
from dataclasses import dataclass, field
from typing import List

import numpy as np

import keras_evit
from keras_evit.weights.artifacts import check_class_names
from keras_evit.preprocessing import IMAGE_EXTENSIONS

TRAIN_EXTENSIONS = tuple(e for e in IMAGE_EXTENSIONS if e != ".gif")  # GIFs: skipped, not photos
# tfds sets are too big to shuffle whole: a window of this many records (folders shuffle whole)
TFDS_SHUFFLE_BUFFER = 10_000


@dataclass
class Source:
    kind: str
    class_names: List[str]
    splits: dict                      # split -> (records..., ) numpy arrays or a tfds dataset
    sizes: dict
    skipped: List[str] = field(default_factory=list)
    encoded: bool = False             # records are image files' bytes (a tfds image feature left encoded)

    @property
    def num_classes(self):
        return len(self.class_names)


def _check_image(path):
    """None if the training decoder reads the whole file, else the reason to skip it."""
    from keras_evit.preprocessing import decode_image

    if path.lower().endswith(".gif"):
        return f"{path}: GIF skipped (not a photo format used for training; convert it to JPEG/PNG)"
    if not path.lower().endswith(TRAIN_EXTENSIONS):
        return f"{path}: not an image file ({'/'.join(TRAIN_EXTENSIONS)})"
    try:
        decode_image(path)
    except (ValueError, OSError) as exc:
        return f"{path}: unreadable image ({exc})"
    return None


def _scan(root, class_names=None):
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder not found: {root}")
    names = class_names or sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not names:
        raise ValueError(f"{root} has no class sub-folders: expected one folder of images per class")
    check_class_names(names, f"class folders of {root}")
    candidates = [(os.path.join(root, name, fname), label) for label, name in enumerate(names)
                  if os.path.isdir(os.path.join(root, name)) for fname in sorted(os.listdir(os.path.join(root, name)))]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # PIL decodes without the GIL
        reasons = list(tqdm(pool.map(_check_image, [p for p, _ in candidates]), total=len(candidates),
                            desc=f"checking {root}", unit="img", disable=len(candidates) < 2000))
    paths = [p for (p, _), r in zip(candidates, reasons) if r is None]
    labels = [label for (_, label), r in zip(candidates, reasons) if r is None]
    skipped = [r for r in reasons if r is not None]
    found = set(labels)
    empty = [name for label, name in enumerate(names) if label not in found]
    if empty and paths and class_names is None:  # (a val/ folder may lack some of train/'s classes)
        raise ValueError(f"class folder(s) {', '.join(repr(n) for n in empty[:5])} of {root} hold no readable "
                         "image: add images or remove the folder (an empty class cannot be learned)")
    if not paths:
        raise ValueError(f"no readable training images under {root}")
    return names, np.array(paths), np.array(labels, np.int32), skipped


def folder_source(root, val_fraction=0.1, seed=0):
    """One sub-folder per class, or ``train/`` and ``val/`` (or ``validation/``) each holding them."""
    val_dir = next((os.path.join(root, d) for d in ("val", "validation") if os.path.isdir(os.path.join(root, d))),
                   None)
    if os.path.isdir(os.path.join(root, "train")) and val_dir:
        names, tp, tl, skipped = _scan(os.path.join(root, "train"))
        _, vp, vl, vskipped = _scan(val_dir, names)
        skipped += vskipped
    else:
        names, paths, labels, skipped = _scan(root)
        order = np.random.RandomState(seed).permutation(len(paths))
        n_val = max(1, int(round(len(paths) * val_fraction)))
        tp, tl = paths[order[n_val:]], labels[order[n_val:]]
        vp, vl = paths[order[:n_val]], labels[order[:n_val]]
    if len(names) < 2:
        raise ValueError(f"{root} has {len(names)} class folder ({', '.join(names)}): a classifier needs at least 2 "
                         "classes, one sub-folder of images each")
    return Source("folder", names, {"train": (tp, tl), "validation": (vp, vl)},
                  {"train": len(tp), "validation": len(vp)}, skipped)


def imagenet_label_map(class_names):
    """{folder index: ImageNet class index} when every class name is an ImageNet synset (``n01440764``...),
    all 1000 or a subset such as Imagenette's 10; else None."""
    from keras_evit.preprocessing import imagenet_classes

    index = {synset: i for i, (synset, _) in enumerate(imagenet_classes())}
    if not class_names or not all(name in index for name in class_names):
        return None
    return {i: index[name] for i, name in enumerate(class_names)}


def folder_eval_source(root, split="validation"):
    """The images ``evaluate`` scores: ``val/`` (or ``validation/``) of a train/val folder for the
    validation split, ``train/`` for train, and a plain folder of class sub-folders whole. Folders named
    by ImageNet synsets are labelled with ImageNet class indices (1000 classes)."""
    val_dir = next((os.path.join(root, d) for d in ("val", "validation") if os.path.isdir(os.path.join(root, d))),
                   None)
    has_train = os.path.isdir(os.path.join(root, "train"))
    if split == "train":
        if not has_train:
            raise ValueError(f"{root} has no train/ folder: use --split all (the whole folder) or validation")
        folder = os.path.join(root, "train")
    elif split in ("validation", "val") and has_train and val_dir:
        folder = val_dir
    elif split in ("validation", "val", "all"):
        folder = root
    else:
        raise ValueError(f"unknown --split {split!r} for a folder: use validation, train or all")
    names, paths, labels, skipped = _scan(folder)
    mapping = imagenet_label_map(names)
    if mapping is not None:
        from keras_evit.preprocessing import imagenet_classes

        labels = np.array([mapping[int(label)] for label in labels], np.int32)
        names = [synset for synset, _ in imagenet_classes()]
    return Source("folder", names, {"validation": (paths, labels)}, {"validation": len(paths)}, skipped), folder


def digits_source(seed=0):
    """The 1,797 real 8x8 handwritten digits shipped in ``keras_evit/data/digits`` (the copy scikit-learn
    bundles, read without it: with scikit-learn installed, every ``import keras`` imports it, ~0.7 s), as
    3-channel uint8 images (80/20 split)."""
    images, labels = load_digits()
    images = np.repeat((images * (255.0 / 16.0)).round().astype(np.uint8)[..., None], 3, axis=-1)
    order = np.random.RandomState(seed).permutation(len(images))
    n_val = len(images) // 5
    val, train = order[:n_val], order[n_val:]
    return Source("digits", [str(i) for i in range(10)],
                  {"train": (images[train], labels[train]), "validation": (images[val], labels[val])},
                  {"train": len(train), "validation": len(val)})


def load_digits():
    """(images (1797, 8, 8) float64 of 0..16, labels (1797,) int32) from the shipped CSV."""
    path = os.path.join(os.path.dirname(keras_evit.__file__), "data", "digits", "digits.csv.gz")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",")
    return table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int32)


class _SplitSizes(dict):
    """Split sizes counted on first use: evaluation never touches a data set's train split (imagenet_v2 has
    none, and counting one can mean reading it)."""

    def __init__(self, count, names):
        super().__init__()
        self._count, self._names = count, names

    def __missing__(self, split):
        self[split] = self._count(self._names[split])
        return self[split]


def tfds_source(name, data_dir=None, eval_split=None):
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    builder.download_and_prepare()
    info = builder.info
    label = info.supervised_keys[1] if info.supervised_keys else "label"
    names = list(info.features[label].names)
    available = list(info.splits.keys())  # empty under tfds.testing.mock_data
    if eval_split is None:
        eval_split = next((s for s in ("validation", "test") if s in available), "test" if not available else "train")

    def size(split):
        if split in info.splits:
            return info.splits[split].num_examples
        if available:
            raise ValueError(f"tfds:{name} has no {split!r} split (it has {', '.join(available)})")
        count = int(builder.as_dataset(split=split).cardinality())
        return count if count >= 0 else sum(1 for _ in builder.as_dataset(split=split))

    splits = {"train": ("tfds", builder, "train"), "validation": ("tfds", builder, eval_split)}
    sizes = _SplitSizes(size, {"train": "train", "validation": eval_split})  # counted when first needed
    return Source("tfds", names, splits, sizes, encoded=encoded_image_decoders(info) is not None)


def encoded_image_decoders(info):
    """TFDS decoders that leave the supervised image feature encoded (its JPEG/PNG bytes), or None when it is
    not an encoded image. The pipeline then decodes it as it decodes files: predict's decoder, after the checks
    that refuse crafted images. TFDS's own decoding (TensorFlow's) allocates whatever an image's header
    declares: a 49 KB PNG declaring 20000x20000 pixels was decoded into 1.2 GB."""
    import tensorflow_datasets as tfds

    key = info.supervised_keys[0] if info.supervised_keys else "image"
    feature = info.features[key] if key in info.features.keys() else None
    if isinstance(feature, tfds.features.Image) and feature.np_dtype == np.uint8:  # 8-bit PNG or JPEG
        return {key: tfds.decode.SkipDecoding()}
    return None


def load_source(spec, data_dir=None, seed=0, eval_split=None):
    """``folder:PATH``, ``tfds:NAME`` or ``digits``."""
    if spec == "digits":
        return digits_source(seed)
    kind, _, value = spec.partition(":")
    if kind == "folder" and value:
        return folder_source(value, seed=seed)
    if kind == "tfds" and value:
        return tfds_source(value, data_dir, eval_split)
    raise ValueError(f"unknown --data {spec!r}: use folder:PATH, tfds:NAME or digits")


def _records(source, split):
    import tensorflow as tf

    from .record_files import check_split_files

    entry = source.splits[split]
    if isinstance(entry[0], str) and entry[0] == "tfds":
        _, builder, name = entry
        check_split_files(builder, name)  # a crafted record length crashes TensorFlow's reader
        decoders = {"decoders": encoded_image_decoders(builder.info)} if source.encoded else {}
        return builder.as_dataset(split=name, as_supervised=True, shuffle_files=False, **decoders), True
    return tf.data.Dataset.from_tensor_slices(entry), False


def _decode(record, label):
    import tensorflow as tf

    from .augment import decode

    return decode(record), tf.cast(label, tf.int32)


def make_dataset(source, split, batch_size, recipe, training, start_epoch=0, skip_steps=0, drop_remainder=None,
                 normalize=False):
    """A batched, prefetched dataset of RGB 0..255 images (``normalize``: ImageNet-normalized, for
    models without in-model preprocessing). Training: infinite epochs from ``start_epoch``, first
    ``skip_steps`` batches skipped (mid-epoch resume), labels one-hot (mixed when Mixup/CutMix)."""
    import tensorflow as tf

    from keras_evit.preprocessing import normalize_images

    from .augment import eval_transform, train_transform

    records, is_tfds = _records(source, split)
    autotune = tf.data.AUTOTUNE
    if training:
        size = source.sizes[split]
        buffer = TFDS_SHUFFLE_BUFFER if is_tfds else size
        per_epoch = (size // batch_size) * batch_size
        if per_epoch == 0:
            raise ValueError(f"{size} training images are fewer than one batch of {batch_size}: lower --batch-size")
        # each epoch: records shuffled with seed (seed + epoch), cut to whole batches, so a resumed
        # run sees the same order and epochs start on batch boundaries
        def epoch(e):
            # TensorFlow cannot trace a tensor op seed under a process-wide seed of exactly 0
            # (it compares the seed pair with (0, 0)); such a process gets the unseeded order
            if tf.compat.v1.get_default_graph().seed == 0:
                tf.compat.v1.set_random_seed(None)
            shuffled = records.shuffle(buffer, seed=e + recipe.seed, reshuffle_each_iteration=False).take(per_epoch)
            # each image's augmentation is drawn from (seed, epoch, position): a resumed run repeats it
            seed = tf.constant(recipe.seed, tf.int64)
            keyed = shuffled.enumerate().map(lambda i, xy: (xy[0], xy[1], tf.stack([seed, e, i])))
            # a mid-epoch resume skips the records of the batches already trained, not their augmentation
            keyed = keyed.skip(tf.where(e == start_epoch, tf.constant(skip_steps * batch_size, tf.int64), 0))
            return mirror_pairs(keyed, batch_size)

        ds = tf.data.Dataset.range(start_epoch, recipe.epochs + 1).flat_map(epoch)
        transform = train_transform(recipe, source.num_classes, batch_size, encoded=source.encoded)
        # batches of pairs (mapped and batched in one step, as tf.data fuses them) -> batches of images; an odd
        # batch's first pair is its middle image twice, and drops one
        ds = ds.map(transform, num_parallel_calls=autotune).batch((batch_size + 1) // 2, drop_remainder=True)
        ds = ds.map(lambda x, y: (_unpair(x)[batch_size % 2:], _unpair(y)[batch_size % 2:]),
                    num_parallel_calls=autotune)
    else:
        transform = eval_transform(recipe.image_size, encoded=source.encoded)
        ds = records.map(lambda x, y: (transform(x), tf.one_hot(y, source.num_classes)), num_parallel_calls=autotune)
        if recipe.cache:
            ds = ds.cache()
        ds = ds.batch(batch_size, drop_remainder=bool(drop_remainder))
    if normalize:
        ds = ds.map(lambda x, y: (normalize_images(x), y), num_parallel_calls=autotune)
    if not training:
        ds = ds.with_options(without_autotuning())
    return ds.prefetch(autotune)


def _unpair(pairs):
    import tensorflow as tf

    return tf.reshape(pairs, [-1] + pairs.shape[2:].as_list())  # static: Keras reads the batch's rank


def mirror_pairs(ds, batch_size):
    """(record, label, key) elements, in batches of ``batch_size`` -> (first, second) pairs of them: position j of
    each batch with position batch_size - 1 - j, the images timm's batch-mode Mixup/CutMix mixes together (the
    middle of an odd batch is paired with itself, and comes first). Each batch's pairs come out before the next
    batch's."""
    import tensorflow as tf

    size = tf.constant(batch_size, tf.int64)

    def pair_key(record, label, key):
        j = key[2] % size
        return key[2] - j + tf.minimum(j, size - 1 - j)

    def window_size(pair):
        j = pair % size
        return tf.where(2 * j == size - 1, tf.constant(1, tf.int64), 2)

    def pair_up(_, window):  # a window of 2 (first, second), or of 1: the image twice
        return tf.data.Dataset.zip((window.take(1), window.skip(1).concatenate(window).take(1)))

    return ds.group_by_window(pair_key, pair_up, window_size_func=window_size)


def without_autotuning():
    """Options for datasets whose input cannot bound the step (evaluation, an in-memory batch). In
    TensorFlow 2.21 deleting an iterator waits until tf.data's autotuning thread next wakes, and its sleep
    doubles from 10 ms: an evaluation that took 3 s returns at 5.12 s, each time (every epoch's validation
    pass). Without autotuning, parallel maps run on every core and the numbers are the same, with no wait."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return options
