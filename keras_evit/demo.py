"""The main job: build the default model, classify the ImageNet sample images, print the result.

ImageNet weights need one download (cached after). Offline and without a cache, the demo says so
and runs with random weights, so the pipeline still runs end to end (its predictions are then noise).
"""

import os
import sys
import time

SAMPLE_ENV = "KERAS_EVIT_SAMPLE_DIR"


def find_sample_dir():
    """``$KERAS_EVIT_SAMPLE_DIR``, else ``shared/data/imagenet-sample`` beside the checkout or cwd."""
    candidates = [os.environ.get(SAMPLE_ENV)]
    here = os.path.dirname(os.path.abspath(__file__))
    for base in (os.getcwd(), os.path.dirname(here)):
        candidates += [os.path.join(base, "..", "shared", "data", "imagenet-sample"),
                       os.path.join(base, "shared", "data", "imagenet-sample")]
    for path in candidates:
        if path and os.path.isdir(path):
            return os.path.normpath(path)
    return None


def bundled_sample_dir():
    """Four public-domain / CC0 photos shipped in the package (a cat, a coffee cup, a rocket, an astronaut),
    so the demo runs on a plain clone or a pip install with no data beside it."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "samples")


def _load_model(model, weights, out):
    """(model, class names, a note on the weights); says loudly when it falls back to random weights."""
    import keras_evit as ke
    from keras_evit.weights.artifacts import weights_arg
    from keras_evit.weights import CheckpointError

    weights = weights_arg(weights)
    try:
        net, class_names = ke.load_classifier(weights, model)
        return net, class_names, weights or "random init"
    except CheckpointError as exc:
        if weights != "imagenet":
            raise
        print(f"WARNING: ImageNet weights unavailable ({exc})\n"
              "WARNING: FALLING BACK TO RANDOM WEIGHTS: the predictions below are meaningless.", file=out)
        net, class_names = ke.load_classifier(None, model)
        return net, class_names, "RANDOM init (ImageNet weights unavailable)"


def _print_predictions(paths, probs, class_names, out):
    """One line per image (ok / top5 / -- against the synset in its file name), then top-1/top-5."""
    import keras_evit as ke
    from keras_evit.preprocessing import imagenet_classes

    synsets = {s for s, _ in imagenet_classes()}
    top1 = top5 = labelled = 0
    for path, decoded in zip(paths, ke.decode_predictions(probs, min(5, probs.shape[-1]), class_names)):
        truth = os.path.basename(path).split("_")[0]
        mark = ""
        if truth in synsets:
            labelled += 1
            hits = [d[0] for d in decoded]
            top1 += hits[0] == truth
            top5 += truth in hits
            mark = "ok " if hits[0] == truth else ("top5" if truth in hits else "-- ")
        best = decoded[0]
        print(f"{mark:4} {os.path.basename(path):42} -> {best[1]:<28} {best[2]:.3f}", file=out)
    if labelled:
        print(f"top-1 {100 * top1 / labelled:.1f}%  top-5 {100 * top5 / labelled:.1f}%  "
              f"on {labelled} labelled images", file=out)


def run_demo(model="m2", weights="imagenet", images=None, limit=None, out=None):
    import numpy as np

    import keras_evit as ke
    from keras_evit.models.inference import outputs
    from keras_evit.weights.artifacts import model_image_size
    from keras_evit.preprocessing import list_images, model_inputs

    out = out or sys.stdout  # looked up per call: sys.stdout may be replaced after import
    folder = images or find_sample_dir() or bundled_sample_dir()
    started = time.perf_counter()
    net, class_names, weights_note = _load_model(model, weights, out)
    print(f"{net.name}: {net.count_params():,} parameters, weights: {weights_note}, "
          f"built in {time.perf_counter() - started:.1f}s", file=out)
    batch, kept = [], []
    for path in list_images(folder)[:limit]:
        try:
            batch.append(ke.load_image(path, model_image_size(net)))
            kept.append(path)
        except ValueError as exc:
            print(f"skipped: {exc}", file=out)
    if not batch:
        print(f"No readable images in {folder}", file=out)
        return 1
    print(f"classifying {len(kept)} images from {folder}", file=out)
    started = time.perf_counter()
    probs = outputs(net, model_inputs(net, np.stack(batch)))
    elapsed = time.perf_counter() - started
    _print_predictions(kept, probs, class_names, out)
    print(f"{len(kept)} images in {elapsed:.2f}s ({len(kept) / elapsed:.1f} img/s)", file=out)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(run_demo())
