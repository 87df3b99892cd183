"""How much each TFLite quantization costs on a *trained* model (random weights say little about int8).

    python -m keras_evit.benchmarks.fidelity --weights RUN_DIR --data folder:PATH|digits \
        [--calibration-limit 200] [--json fidelity.json] [--plot fidelity.png]

For every mode: top-1 of the exported file on the validation split, and its top-1 agreement with the
Keras model, through the same eval transform as ``evaluate``. Prints a table, saves JSON and a PNG.
"""

import argparse
import os
import sys
import tempfile

import numpy as np

MODES = ("none", "fp16", "dynamic", "int8", "int8-mixed")


def measure(model, images, labels, calibration, modes=MODES, log=print):
    """Rows of {mode, top1, agreement, bytes} for the Keras model and each exported file."""
    from keras_evit.preprocessing import model_inputs

    from keras_evit.export import TFLiteRunner, to_tflite

    keras_pred = model.predict(model_inputs(model, images), batch_size=32, verbose=0).argmax(-1)
    rows = [{"mode": "keras", "top1": float(np.mean(keras_pred == labels)), "agreement": 1.0, "bytes": None}]
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            path = os.path.join(tmp, f"{mode}.tflite")
            log(f"exporting {mode} ...")
            to_tflite(model, path, mode, model_inputs(model, calibration))
            pred = TFLiteRunner(path)(model_inputs(model, images)).argmax(-1)
            rows.append({"mode": mode, "top1": float(np.mean(pred == labels)),
                         "agreement": float(np.mean(pred == keras_pred)), "bytes": os.path.getsize(path)})
    return rows


def table(rows, title):
    lines = [title, f"{'file':<12} {'top-1':>8} {'agrees with Keras':>18} {'size MB':>8}"]
    for r in rows:
        size = f"{r['bytes'] / 1e6:8.2f}" if r["bytes"] else f"{'-':>8}"
        lines.append(f"{r['mode']:<12} {100 * r['top1']:7.2f}% {100 * r['agreement']:17.2f}% {size}")
    return "\n".join(lines)


def plot(rows, title, path):
    from keras_evit.utils import atomic_output, pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [r["mode"] for r in rows]
    ax.bar(np.arange(len(rows)) - 0.2, [100 * r["top1"] for r in rows], 0.4, label="top-1 (%)")
    ax.bar(np.arange(len(rows)) + 0.2, [100 * r["agreement"] for r in rows], 0.4, label="agrees with Keras (%)")
    ax.set_xticks(np.arange(len(rows)), names)
    ax.set_ylim(min(100 * min(r["top1"] for r in rows) - 10, 90), 100.5)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="a training run folder or its model.keras")
    parser.add_argument("--data", required=True, help="folder:PATH, tfds:NAME or digits (the run's data)")
    parser.add_argument("--calibration-limit", type=int, default=200)
    parser.add_argument("--limit", type=int, default=None, help="validation images at most")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import keras_evit as ke
    from keras_evit.export.images import split_images
    from keras_evit.training.data import load_source
    from keras_evit.utils import check_outputs, write_reports
    from keras_evit.weights.artifacts import model_image_size

    check_outputs({"--json": args.json, "--plot": args.plot}, inputs=[args.weights])
    model, _ = ke.load_classifier(args.weights, classifier_activation=None)
    size = model_image_size(model)
    source = load_source(args.data)
    images, labels = split_images(source, "validation", size, args.limit)
    calibration, _ = split_images(source, "train", size, args.calibration_limit)
    rows = measure(model, images, labels, calibration, [m for m in args.modes.split(",") if m])
    title = f"{model.name} ({args.data}, {len(images)} validation images, {size} px)"
    print(table(rows, title))
    write_reports(args, {"title": title, "rows": rows}, lambda path: plot(rows, title, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
