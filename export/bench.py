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

import numpy as np

from .bench_measure import measure_large_batch
from .bench_report import format_table, plot, summarize
from .bench_runtimes import ALL_RUNTIMES, GPU_LARGE_BATCH, LITERT, REFERENCE

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
    p.add_argument("--train", action="store_true",
                   help="measure training img/s instead: Keras fit (graph, XLA) beside timm eager (one thread count)")
    p.add_argument("--depthwise-probe", action="store_true",
                   help="with --train: time one depthwise conv (forward and gradients) in TF graph vs XLA")
    p.add_argument("--profile", action="store_true",
                   help="with --train: where one Keras fit step's time goes (TF profiler, by phase and op group)")
    p.add_argument("--profile-compare", default=None, help="with --profile: a saved profile JSON to draw beside")
    p.add_argument("--profile-label", default=None, help="with --profile: this profile's name in the plot")
    p.add_argument("--train-runtimes", default=None, help="keras,keras-xla,timm[,timm-compile]")
    p.add_argument("--train-batch-size", type=int, default=32)
    p.add_argument("--train-steps", type=int, default=10, help="steps per timed window")
    p.add_argument("--train-warmup", type=int, default=3)
    p.add_argument("--train-repeats", type=int, default=3, help="timed windows; the best counts")
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
            calibration = np.random.RandomState(0).uniform(0, 255, (32, image_size, image_size, 3)).astype("float32")
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

    from .onnx import DEFAULT_OPSET

    model = reference.create_timm_model(variant, img_size=image_size)
    x = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad():
        torch.onnx.export(model, (x,), path, opset_version=DEFAULT_OPSET, dynamo=False, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return path


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
    from keras_evit.artifacts import weights_arg

    weights = weights_arg(args.weights)
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

            large = GPU_LARGE_BATCH if tf.config.list_physical_devices("GPU") else None
        if large:
            log(f"measuring {variant} at batch {large}, mixed precision")
            rows += measure_large_batch(variant, large, args.image_size, args.min_time)
    summarize(rows)
    print(format_table(rows))
    result = {"rows": rows, "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
              "reference": f"{REFERENCE}: timm efficientvit_* exported by torch.onnx, run by ONNX Runtime"}
    from keras_evit.utils import write_reports

    write_reports(args, result, lambda path: plot(rows, path))
    return 0


def _run_child(spec):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "keras_evit.export.bench_measure", "--child"],
                          input=json.dumps(spec), capture_output=True, text=True, env=env)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 and not rows:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    return rows


