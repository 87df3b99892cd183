"""``keras-evit bench``: batch-1 latency and batch-16 throughput across runtimes, in one run.

The parent process builds every file once (fused Keras model, LiteRT fp32/fp16/int8 per batch size,
our ONNX, and the timm reference's own ONNX); each thread count is then measured in a fresh child
process, because TensorFlow's thread pools can only be sized before it starts.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ALL_RUNTIMES = ("keras", "xla", "litert", "onnxruntime", "torch")
REFERENCE = "torch-onnx"  # timm's own ONNX export on ONNX Runtime: the ratio baseline
# runtime name -> quantization of the .tflite it runs; "--runtimes litert" means all of them
LITERT = {"litert": "none", "litert-fp16": "fp16", "litert-int8": "int8", "litert-int8-mixed": "int8-mixed"}


def add_arguments(p):
    p.add_argument("--model", default="m0", help="variant(s), comma separated: m0,m2,m5")
    p.add_argument("--runtimes", default=",".join(ALL_RUNTIMES),
                   help="keras,xla,litert,onnxruntime,torch (litert = fp32+fp16+int8+int8-mixed; torch = eager + "
                        "its ONNX on ONNX Runtime)")
    p.add_argument("--threads", default=f"1,{os.cpu_count()}", help="thread counts, comma separated")
    p.add_argument("--batch-sizes", default="1,16")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--weights", default="none", help="none (random: speed does not depend on values), "
                   "imagenet, or a file")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds timed per measurement")
    p.add_argument("--calibration-dir", default=None, help="int8 calibration images (default: sample folder)")
    p.add_argument("--large-batch", type=int, default=None,
                   help="also measure TF/XLA mixed-precision throughput at this batch (default: 1024 when "
                        "a GPU is present, else off)")
    p.add_argument("--workdir", default=None, help="keep exported files here (default: a temp folder)")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)


def _expand(runtimes):
    out = []
    for name in runtimes:
        if name == "litert":
            out += list(LITERT)
        elif name == "torch":
            out += ["torch", REFERENCE]
        elif name in ("keras", "xla", "onnxruntime", REFERENCE) or name in LITERT:
            out.append(name)
        else:
            raise ValueError(f"unknown runtime {name!r}: choose from {', '.join(ALL_RUNTIMES)}")
    return list(dict.fromkeys(out))


def _torch_available():
    try:
        from keras_evit import reference

        reference.import_timm()
        return True
    except ImportError:
        return False


def prepare(variant, runtimes, batch_sizes, image_size, weights, workdir, calibration_dir, log):
    """Exports every file the measurements need; returns {runtime: path or None}."""
    import keras_evit as ke
    from keras_evit.demo import find_sample_dir

    from . import to_onnx, to_tflite
    from .images import load_folder
    from .tflite import CALIBRATED_MODES

    files = {}
    model = ke.build_model(variant, weights=weights, classifier_activation=None,
                           input_shape=(image_size, image_size, 3))
    fused = ke.fuse_batchnorm(model)
    if {"keras", "xla"} & set(runtimes):
        files["keras"] = os.path.join(workdir, f"{variant}.keras")
        fused.save(files["keras"])
    calibration = None
    if any(LITERT.get(r) in CALIBRATED_MODES for r in runtimes):
        folder = calibration_dir or find_sample_dir()
        if folder:
            calibration, _ = load_folder(folder, image_size, limit=64)
        else:
            log("no calibration images found: int8 calibrated on random inputs (speed is unaffected)")
            calibration = np.random.RandomState(0).randn(32, image_size, image_size, 3).astype("float32")
    for runtime, quantize in LITERT.items():
        if runtime in runtimes:
            for bs in batch_sizes:
                path = os.path.join(workdir, f"{variant}_{quantize}_b{bs}.tflite")
                log(f"exporting {os.path.basename(path)}")
                to_tflite(fused, path, quantize, calibration, bs, fuse=False)
                files[f"{runtime}@{bs}"] = path
    if "onnxruntime" in runtimes:
        files["onnxruntime"] = to_onnx(fused, os.path.join(workdir, f"{variant}.onnx"), fuse=False)
        log(f"exported {variant}.onnx")
    if REFERENCE in runtimes:
        files[REFERENCE] = export_reference_onnx(variant, image_size, os.path.join(workdir, f"{variant}_timm.onnx"))
        log(f"exported {variant}_timm.onnx (reference)")
    return files


def export_reference_onnx(variant, image_size, path):
    """timm's model through torch.onnx.export (eval mode: BN folded by constant folding)."""
    import torch

    from keras_evit import reference

    model = reference.create_timm_model(variant, img_size=image_size)
    x = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad():
        torch.onnx.export(model, (x,), path, opset_version=17, dynamo=False, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return path


def time_call(fn, min_time, warmup=3, min_iters=5):
    """Median seconds per call after warm-up."""
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _runner(runtime, files, variant, threads, batch_size, image_size):
    """A zero-argument callable running one batch, or None when the runtime has no file."""
    x = np.random.RandomState(0).randn(batch_size, image_size, image_size, 3).astype(np.float32)
    if runtime in ("keras", "xla"):
        import keras
        import tensorflow as tf

        import keras_evit  # noqa: F401  (registers the layers for loading)

        model = keras.models.load_model(files["keras"])
        fn = tf.function(lambda t: model(t, training=False), jit_compile=runtime == "xla")
        tx = tf.constant(x)
        return lambda: fn(tx).numpy()
    if runtime.startswith("litert"):
        from .runners import TFLiteRunner

        runner = TFLiteRunner(files[f"{runtime}@{batch_size}"], threads)
        return lambda: runner(x)
    if runtime in ("onnxruntime", REFERENCE):
        from .runners import ONNXRunner

        runner = ONNXRunner(files[runtime], threads, layout="NCHW" if runtime == REFERENCE else "NHWC")
        return lambda: runner(x)
    if runtime == "torch":
        import torch

        from keras_evit import reference

        model = reference.create_timm_model(variant, img_size=image_size)
        tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

        def run():
            with torch.no_grad():
                return model(tx)
        return run
    raise ValueError(runtime)


def measure_child(spec):
    """Runs in a fresh process: sizes the thread pools, then measures every (runtime, batch)."""
    threads = spec["threads"]
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    rows = []
    for runtime in spec["runtimes"]:
        for bs in spec["batch_sizes"]:
            row = {"model": spec["variant"], "runtime": runtime, "threads": threads, "batch_size": bs}
            try:
                fn = _runner(runtime, spec["files"], spec["variant"], threads, bs, spec["image_size"])
                sec = time_call(fn, spec["min_time"])
                row.update(ms_per_batch=sec * 1e3, img_per_s=bs / sec)
            except Exception as exc:  # a runtime that cannot run here is reported, not fatal
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def measure_large_batch(variant, batch_size, image_size, min_time):
    """GPU protocol (paper/timm style): BN-fused model, mixed precision, large batch, TF and XLA."""
    import keras
    import tensorflow as tf

    import keras_evit as ke

    policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = ke.build_model(variant, weights=None, fused=True, classifier_activation=None,
                               input_shape=(image_size, image_size, 3))
        x = tf.random.normal((batch_size, image_size, image_size, 3))
        rows = []
        for runtime, jit in (("keras-amp", False), ("xla-amp", True)):
            fn = tf.function(lambda t: model(t, training=False), jit_compile=jit)
            sec = time_call(lambda: fn(x).numpy(), min_time, warmup=2, min_iters=3)
            rows.append({"model": variant, "runtime": runtime, "threads": None, "batch_size": batch_size,
                         "ms_per_batch": sec * 1e3, "img_per_s": batch_size / sec, "policy": policy,
                         "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU"})
        return rows
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _cell(row):
    if row is None:
        return "-"
    if "error" in row:
        return "error"
    return f"{row['ms_per_batch']:.2f} ms" if row["batch_size"] == 1 else f"{row['img_per_s']:.0f} img/s"


def summarize(rows):
    """Adds ``vs_reference`` (speed-up over timm's ONNX on ORT, same model/threads/batch)."""
    ref = {(r["model"], r["threads"], r["batch_size"]): r for r in rows
           if r["runtime"] == REFERENCE and "error" not in r}
    for r in rows:
        base = ref.get((r["model"], r["threads"], r["batch_size"]))
        if base and "error" not in r:
            r["vs_reference"] = base["ms_per_batch"] / r["ms_per_batch"]
    return rows


def format_table(rows):
    keys = sorted({(r["model"], r["runtime"], r["threads"]) for r in rows},
                  key=lambda k: (k[0], str(k[2]), k[1]))
    batches = sorted({r["batch_size"] for r in rows})
    lookup = {(r["model"], r["runtime"], r["threads"], r["batch_size"]): r for r in rows}
    header = f"{'model':<6} {'runtime':<17} {'threads':>7} " + " ".join(
        f"{'batch ' + str(b):>14} {'x ref':>6}" for b in batches)
    lines = [header, "-" * len(header)]
    for model, runtime, threads in keys:
        cells = []
        for b in batches:
            row = lookup.get((model, runtime, threads, b))
            ratio = f"{row['vs_reference']:.2f}" if row and "vs_reference" in row else "-"
            cells.append(f"{_cell(row):>14} {ratio:>6}")
        lines.append(f"{model:<6} {runtime:<17} {str(threads):>7} " + " ".join(cells))
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_evit.utils import atomic_output

    ok = [r for r in rows if "error" not in r and r["threads"] is not None]
    batches = sorted({r["batch_size"] for r in ok})
    threads = sorted({r["threads"] for r in ok})
    fig, axes = plt.subplots(len(batches), len(threads), figsize=(6 * len(threads), 4 * len(batches)),
                             squeeze=False)
    for i, b in enumerate(batches):
        for j, t in enumerate(threads):
            ax = axes[i][j]
            sel = [r for r in ok if r["batch_size"] == b and r["threads"] == t]
            models = sorted({r["model"] for r in sel})
            runtimes = sorted({r["runtime"] for r in sel})
            width = 0.8 / max(len(runtimes), 1)
            for k, rt in enumerate(runtimes):
                vals = [next((r["img_per_s"] for r in sel if r["model"] == m and r["runtime"] == rt), 0)
                        for m in models]
                ax.bar(np.arange(len(models)) + k * width, vals, width, label=rt,
                       hatch="//" if rt == REFERENCE else None)
            ax.set_xticks(np.arange(len(models)) + 0.4 - width / 2, models)
            ax.set_title(f"batch {b}, {t} thread(s)")
            ax.set_ylabel("images / s (higher is better)")
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(args):
    runtimes = _expand([r.strip() for r in args.runtimes.split(",") if r.strip()])
    if ("torch" in runtimes or REFERENCE in runtimes) and not _torch_available():
        print("torch/timm not installed: skipping the PyTorch reference (pip install -e '.[reference]')")
        runtimes = [r for r in runtimes if r not in ("torch", REFERENCE)]
    variants = [v.strip() for v in args.model.split(",") if v.strip()]
    from keras_evit.configs import get_variant

    variants = [get_variant(v)[0] for v in variants]
    threads = [int(t) for t in args.threads.split(",")]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    weights = None if args.weights in ("none", "") else args.weights
    workdir = args.workdir or tempfile.mkdtemp(prefix="keras_evit_bench_")
    os.makedirs(workdir, exist_ok=True)
    log = lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True)  # noqa: E731

    rows = []
    for variant in variants:
        files = prepare(variant, runtimes, batch_sizes, args.image_size, weights, workdir,
                        args.calibration_dir, log)
        for t in threads:
            spec = {"variant": variant, "runtimes": runtimes, "files": files, "threads": t,
                    "batch_sizes": batch_sizes, "image_size": args.image_size, "min_time": args.min_time}
            log(f"measuring {variant} with {t} thread(s)")
            rows += _run_child(spec)
        large = args.large_batch
        if large is None:
            import tensorflow as tf

            large = 1024 if tf.config.list_physical_devices("GPU") else None
        if large:
            log(f"measuring {variant} at batch {large}, mixed precision")
            rows += measure_large_batch(variant, large, args.image_size, args.min_time)
    summarize(rows)
    print(format_table(rows))
    result = {"rows": rows, "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
              "reference": f"{REFERENCE}: timm efficientvit_* exported by torch.onnx, run by ONNX Runtime"}
    if args.json:
        from keras_evit.utils import atomic_output

        with atomic_output(args.json) as tmp:
            with open(tmp, "w") as f:
                json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    if args.plot:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _run_child(spec):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "keras_evit.export.bench", "--child"],
                          input=json.dumps(spec), capture_output=True, text=True, env=env)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 and not rows:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    return rows


if __name__ == "__main__" and "--child" in sys.argv:
    measure_child(json.loads(sys.stdin.read()))
