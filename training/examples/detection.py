"""The paper's detection setup at toy scale: EfficientViT as the backbone of keras-hub's RetinaNet (P4-P6 in, FPN to
P7) and of a DeepLabV3 segmenter, each trained a few steps on generated shapes whose boxes and masks are known.

Prints the loss falling, the boxes found on a held-out image, reloads the saved detector, and converts both
models to TFLite (builtin ops only). Needs the ``hub`` extra.

    python -m keras_evit.training.examples.detection [--output runs/detection] [--steps 60] [--weights imagenet]
"""

import argparse
import os
import sys

import numpy as np

from keras_evit.training import build_before_fit

SIZE = 128  # small images: P4..P6 are 8, 4 and 2 px maps, FPN P7 1 px
CLASSES = ("square", "disc")


def shapes(n, seed=0, size=SIZE):
    """``n`` RGB images (0..255) of 1-2 shapes on noisy backgrounds: boxes (yxyx pixels), labels, masks."""
    rng = np.random.RandomState(seed)
    images = rng.uniform(0, 80, (n, size, size, 3)).astype("float32")
    boxes = np.full((n, 2, 4), -1.0, "float32")
    labels = np.full((n, 2), -1, "int32")
    masks = np.zeros((n, size, size, 1), "int32")  # 0 background, 1 square, 2 disc
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        for j in range(rng.randint(1, 3)):
            side = rng.randint(size // 5, size // 2)
            top, left = rng.randint(0, size - side, 2)
            if j == 1 and (abs(top - boxes[i, 0, 0]) < side and abs(left - boxes[i, 0, 1]) < side):
                break  # keep shapes apart
            kind = rng.randint(2)
            color = rng.uniform(150, 255, 3)
            if kind == 0:
                inside = (yy >= top) & (yy < top + side) & (xx >= left) & (xx < left + side)
            else:
                r = side / 2
                inside = (yy - top - r + 0.5) ** 2 + (xx - left - r + 0.5) ** 2 <= r * r
            images[i][inside] = color
            masks[i][inside] = kind + 1
            boxes[i, j] = (top, left, top + side, left + side)
            labels[i, j] = kind
    return images, boxes, labels, masks


def backbone(weights):
    from keras_evit.configs import VARIANTS
    from keras_evit.hub import EfficientViTBackbone

    if weights == "imagenet":  # bias tables resized to this size, as the builders do
        return EfficientViTBackbone.from_preset("efficientvit_m0_imagenet", image_shape=(SIZE, SIZE, 3))
    cfg = VARIANTS["m0"]
    return EfficientViTBackbone(cfg.embed_dims, cfg.depths, cfg.num_heads, cfg.kernels, image_shape=(SIZE, SIZE, 3))


def to_tflite(model, path, image):
    """Converts ``model`` (batch 1, float32, through a SavedModel as keras-evit export does) and runs the file on
    ``image``; returns (non-builtin ops, max |TFLite - Keras| over all outputs)."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from keras_evit.export.tflite import convert_tflite, non_builtin_ops
    from keras_evit.utils import atomic_output

    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(convert_tflite(model))
    interpreter = Interpreter(path)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None].astype("float32"))
    interpreter.invoke()
    got = sorted((interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()), key=np.shape)
    expected = sorted((np.asarray(t) for t in keras.tree.flatten(model(image[None], training=False))), key=np.shape)
    return non_builtin_ops(path), max(float(np.abs(a - b).max()) for a, b in zip(got, expected))


def ten_steps(*arrays):
    """The arrays tiled to at least 10 batches of 8, so each ``fit(steps_per_epoch=10)`` trains 10 steps
    (with fewer images Keras stops the epoch when the data runs out)."""
    import keras

    def tile(a):
        a = np.asarray(a)
        return np.concatenate([a] * -(-80 // len(a)))

    return [keras.tree.map_structure(tile, a) for a in arrays]


def detect(args, normalize):
    import keras
    import keras_hub

    images, boxes, labels, _ = shapes(args.train_images, seed=0)
    test_images, test_boxes, test_labels, _ = shapes(4, seed=1)
    retina_backbone = keras_hub.models.RetinaNetBackbone(image_encoder=backbone(args.weights), min_level=4,
                                                         max_level=7, use_p5=False, image_shape=(SIZE, SIZE, 3))
    detector = keras_hub.models.RetinaNetObjectDetector(backbone=retina_backbone, num_classes=len(CLASSES),
                                                        bounding_box_format="yxyx")
    detector.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = ten_steps(normalize(images), {"boxes": boxes, "labels": labels})
    build_before_fit(detector, (x, y))  # TensorFlow then traces the training step once
    losses = []
    for start in range(0, args.steps, 10):
        history = detector.fit(x, y, batch_size=8, epochs=1, steps_per_epoch=10, verbose=0)
        losses.append(history.history["loss"][-1])
        print(f"detector step {start + 10:4d}  loss {losses[-1]:.4f}")
    found = detector.predict(normalize(test_images), verbose=0)
    for i in range(len(test_images)):
        truth = [(CLASSES[c], [int(v) for v in b]) for b, c in zip(test_boxes[i], test_labels[i]) if c >= 0]
        top = int(np.argmax(found["confidence"][i]))
        if found["labels"][i][top] < 0:
            guess = "none above the score threshold yet"
        else:
            guess = (CLASSES[int(found["labels"][i][top])], [int(v) for v in found["boxes"][i][top]],
                     round(float(found["confidence"][i][top]), 3))
        print(f"  image {i}: truth {truth}  best box {guess}")
    path = os.path.join(args.output, "detector.keras")
    detector.save(path)
    reloaded = keras.models.load_model(path)
    same = all(np.allclose(np.asarray(a), np.asarray(b), atol=1e-4) for a, b in
               zip(keras.tree.flatten(detector(normalize(test_images[:1]))),
                   keras.tree.flatten(reloaded(normalize(test_images[:1])))))
    print(f"detector saved to {path}, reloaded with the same raw outputs: {same}")
    ops, diff = to_tflite(detector, os.path.join(args.output, "detector.tflite"), normalize(test_images[0]))
    print(f"detector TFLite (box and class maps; NMS stays in the app): builtin ops only: "
          f"{'yes' if not ops else ops}; max |TFLite - Keras| {diff:.2e}")
    return losses, same and diff < 1e-3, ops


def segment(args, normalize):
    import keras
    import keras_hub

    images, _, _, masks = shapes(args.train_images, seed=2)
    deeplab_backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=backbone(args.weights), spatial_pyramid_pooling_key="P6", upsampling_size=4,
        dilation_rates=[2, 4], low_level_feature_key="P4", image_shape=(SIZE, SIZE, 3))
    segmenter = keras_hub.models.DeepLabV3ImageSegmenter(backbone=deeplab_backbone, num_classes=len(CLASSES) + 1)
    segmenter.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"])
    x, y = ten_steps(normalize(images), masks)
    build_before_fit(segmenter, (x, y))
    losses = []
    for start in range(0, args.steps, 10):
        history = segmenter.fit(x, y, batch_size=8, epochs=1, steps_per_epoch=10, verbose=0)
        losses.append(history.history["loss"][-1])
        print(f"segmenter step {start + 10:4d}  loss {losses[-1]:.4f}  pixel accuracy "
              f"{history.history['accuracy'][-1]:.3f}")
    path = os.path.join(args.output, "segmenter.keras")
    segmenter.save(path)
    same = np.allclose(np.asarray(segmenter(normalize(images[:1]))),
                       np.asarray(keras.models.load_model(path)(normalize(images[:1]))), atol=1e-4)
    print(f"segmenter saved to {path}, reloaded with the same outputs: {same}")
    ops, diff = to_tflite(segmenter, os.path.join(args.output, "segmenter.tflite"), normalize(images[0]))
    print(f"segmenter TFLite: builtin ops only: {'yes' if not ops else ops}; max |TFLite - Keras| {diff:.2e}")
    return losses, same and diff < 1e-3, ops


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=os.path.join("runs", "detection"))
    parser.add_argument("--steps", type=int, default=60, help="training steps per model (batches of 8)")
    parser.add_argument("--train-images", type=int, default=96)
    parser.add_argument("--weights", choices=("none", "imagenet"), default="none",
                        help="backbone start: random, or the efficientvit_m0_imagenet preset")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.makedirs(args.output, exist_ok=True)
    import keras

    import keras_evit as ke

    keras.utils.set_random_seed(0)  # the same run every time

    def normalize(x):
        return np.asarray(ke.normalize_images(x))

    det_losses, same, det_ops = detect(args, normalize)  # same: reloads and TFLite agree with Keras
    seg_losses, seg_same, seg_ops = segment(args, normalize)
    ok = (det_losses[-1] < det_losses[0] and seg_losses[-1] < seg_losses[0] and same and seg_same
          and not det_ops and not seg_ops)
    print(f"\ndetector loss {det_losses[0]:.4f} -> {det_losses[-1]:.4f}; segmenter loss {seg_losses[0]:.4f} -> "
          f"{seg_losses[-1]:.4f}; {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
