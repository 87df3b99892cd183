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

from keras_evit.cli.args import MAX_EXPORT_BATCH, MAX_THREADS, bounded_int, image_size_arg, int_list
from keras_evit.utils import check_outputs

from keras_evit.export.shipped import LITERT, export_shipped, shipped_metadata

from .cpu import cpu_facts
from .inference_memory import compare_to_reference, format_memory_table, measure_memory, plot_memory
from .measure import measure_large_batch
from .report import format_table, format_twins, plot, summarize
from .runtimes import ALL_RUNTIMES, GPU_LARGE_BATCH, REFERENCE, TWIN_SUFFIX

def _seconds(value):
    import argparse

    number = float(value)
    if not 0 < number <= 3600:
        raise argparse.ArgumentTypeError(f"must be > 0 and at most 3600 seconds, got {value}")
    return number


def add_arguments(p):
    p.add_argument("--model", default="m0", help="variant(s), comma separated: m0,m2,m5")
    p.add_argument("--runtimes", default=",".join(ALL_RUNTIMES),
                   help="keras,xla,litert,onnxruntime,torch (litert = the files `keras-evit export` writes with "
                        "default flags: fp32, fp16, int8, int8 --int8-io, int8-mixed; torch = eager + its ONNX "
                        "on ONNX Runtime)")
    p.add_argument("--twins", action="store_true",
                   help="also measure each LiteRT and ONNX file's twin built with include_preprocessing=False "
                        "(fed normalized images): what the shipped raw-pixel input costs (time, or with --memory, "
                        "memory)")
    p.add_argument("--threads", type=int_list(1, MAX_THREADS), default=f"1,{os.cpu_count()}",
                   help="thread counts, comma separated")
    p.add_argument("--batch-sizes", type=int_list(1, MAX_EXPORT_BATCH), default="1,16", help="comma separated")
    p.add_argument("--image-size", type=image_size_arg, default=224)
    p.add_argument("--weights", default="none", help="none (seeded random weights, none of them zero, so "
                   "int8 files have a trained model's graph), imagenet, or a file")
    p.add_argument("--min-time", type=_seconds, default=1.0, help="seconds timed per measurement")
    p.add_argument("--calibration-dir", default=None, help="int8 calibration images (default: sample folder)")
    p.add_argument("--large-batch", type=bounded_int(1, 65536), default=None,
                   help="also measure TF/XLA mixed-precision throughput at this batch (default: 1024 when "
                        "a GPU is present, else off)")
    p.add_argument("--memory", action="store_true",
                   help="measure inference memory instead: peak resident memory of each runtime (the shipped "
                        "LiteRT files, ONNX Runtime, the timm reference) per batch, each in its own process "
                        "(first of --threads); with --train: training memory of Keras fit (graph, XLA) beside "
                        "timm eager at each of --batch-sizes")
    p.add_argument("--train", action="store_true",
                   help="measure training img/s instead: Keras fit (graph, XLA) beside timm eager (one thread count)")
    p.add_argument("--input-pipeline", action="store_true",
                   help="measure the tf.data training input instead: images/s per core against decode + resize "
                        "alone on the same files (--threads, --train-batch-size, --image-size, --min-time)")
    p.add_argument("--input-folder", default=None,
                   help="with --input-pipeline: class sub-folders of JPEGs (default: the shared hymenoptera set)")
    p.add_argument("--profile", action="store_true",
                   help="with --train: where one Keras fit step's time goes (TF profiler, by phase and op group)")
    p.add_argument("--profile-compare", default=None, help="with --profile: a saved profile JSON to draw beside")
    p.add_argument("--profile-label", default=None, help="with --profile: this profile's name in the plot")
    p.add_argument("--train-runtimes", default=None,
                   help="of keras, keras-xla, keras-remat, keras-mixed, keras-jax, keras-torch, timm, timm-compile, "
                        "timm-remat; default keras,keras-xla,timm. With --memory: not keras-mixed, keras-jax or "
                        "timm-compile; default keras,keras-xla,keras-remat,timm,timm-remat. With --profile: keras "
                        "or keras-mixed. -remat: each block (stage, in timm) recomputed in the backward pass; "
                        "keras-mixed: the policy of train --mixed-precision; keras-jax, keras-torch: Keras fit on "
                        "that backend")
    p.add_argument("--train-batch-size", type=bounded_int(1, MAX_EXPORT_BATCH), default=32)
    p.add_argument("--train-steps", type=bounded_int(1, 10_000), default=10, help="steps per timed window")
    p.add_argument("--train-warmup", type=bounded_int(0, 10_000), default=3)
    p.add_argument("--train-repeats", type=bounded_int(1, 1000), default=3, help="timed windows; the best counts")
    p.add_argument("--workdir", default=None, help="keep exported files here (default: a temp folder)")
    p.add_argument("--reuse", action="store_true",
                   help="with --workdir: measure the files an earlier run of the same command left there "
                        "instead of exporting them again (to re-time on a quiet machine)")
    p.add_argument("--no-amx", action="store_true",
                   help="deny this run Intel's AMX tiles, so int8 files run XNNPACK's next-best kernels (AVX-512 "
                        "VNNI), as on CPUs without AMX; the JSON's machine.int8_kernels says which ran")
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


def _calibration(runtimes, calibration_dir, image_size, log):
    """Raw RGB calibration images (0..255) for the calibrated LiteRT modes, else None."""
    from keras_evit.demo import find_sample_dir

    from keras_evit.export.images import load_folder
    from keras_evit.export.tflite import CALIBRATED_MODES

    if not any(LITERT[r][0] in CALIBRATED_MODES for r in runtimes if r in LITERT):
        return None
    folder = calibration_dir or find_sample_dir()
    if folder:
        return load_folder(folder, image_size, limit=64)[0]
    log("no calibration images found: int8 calibrated on random inputs (speed is unaffected)")
    return np.random.RandomState(0).uniform(0, 255, (32, image_size, image_size, 3)).astype("float32")


def prepare(variant, runtimes, batch_sizes, image_size, weights, workdir, calibration_dir, log, twins=False,
            reuse=False):
    """Exports every file the measurements need; returns {runtime[@batch]: path}.

    LiteRT files are the ones ``keras-evit export`` writes with default flags (raw RGB in, probabilities
    out, normalization and BatchNorm folded, metadata when MediaPipe is set up), through the same code.
    """
    import keras_evit as ke
    from keras_evit.preprocessing import normalize_images

    from keras_evit.export import to_onnx

    files = {}
    model, class_names = ke.load_classifier(weights, variant, image_size)
    if weights is None:
        fill_zero_weights(model)
    fused = ke.fuse_batchnorm(model)
    if {"keras", "xla"} & set(runtimes):
        files["keras"] = os.path.join(workdir, f"{variant}.keras")
        fused.save(files["keras"])
    calibration = _calibration(runtimes, calibration_dir, image_size, log)
    metadata = shipped_metadata(model, class_names, log) if any(r in LITERT for r in runtimes) else None
    twin = None
    if twins:
        twin = ke.build_model(variant, weights=None, include_preprocessing=False,
                              input_shape=(image_size, image_size, 3))
        twin.set_weights(model.get_weights())  # the Rescaling layer has no weights: same list
        twin_calibration = None if calibration is None else normalize_images(calibration)
    for runtime in (r for r in LITERT if r in runtimes):
        for bs in batch_sizes:
            files[f"{runtime}@{bs}"] = export_shipped(model, runtime, bs, calibration, workdir, metadata, log,
                                                      reuse=reuse)
            if twin is not None and has_twin(runtime):
                files[f"{runtime}{TWIN_SUFFIX}@{bs}"] = export_shipped(twin, runtime, bs, twin_calibration, workdir,
                                                                       None, log, TWIN_SUFFIX, reuse)
    if "onnxruntime" in runtimes:
        for key, source, name in (("onnxruntime", model, f"{variant}.onnx"),
                                  (f"onnxruntime{TWIN_SUFFIX}", twin, f"{variant}{TWIN_SUFFIX}.onnx")):
            if source is None:
                continue
            files[key] = os.path.join(workdir, name)
            if not (reuse and os.path.isfile(files[key])):
                to_onnx(source, files[key])
                log(f"exported {name}")
    if REFERENCE in runtimes:
        files[REFERENCE] = os.path.join(workdir, f"{variant}_timm.onnx")
        if not (reuse and os.path.isfile(files[REFERENCE])):
            export_reference_onnx(variant, image_size, files[REFERENCE])
            log(f"exported {variant}_timm.onnx (reference)")
    return files


def has_twin(runtime):
    """Whether ``--twins`` measures a normalized-input twin beside ``runtime``'s shipped file (not for uint8
    input, which is pixel bytes)."""
    return runtime == "onnxruntime" or (runtime in LITERT and not LITERT[runtime][1])


def fill_zero_weights(model, seed=0, std=0.2):
    """Gives a fresh model's all-zero weights seeded noise, in place.

    A fresh model starts with zero attention bias tables and zero BatchNorm gammas closing every residual
    branch, so whole branches output exactly zero. Float speed does not care, but int8 conversion gives
    those tensors degenerate scales and XNNPACK then declines ops on them: such a file would have a
    different graph, and a different speed, from any trained model's.
    """
    import keras

    rng = np.random.default_rng(seed)
    for weight in model.weights:
        value = keras.ops.convert_to_numpy(weight)
        if value.size and not np.any(value):
            weight.assign(rng.normal(0.0, std, value.shape).astype(value.dtype))


def export_reference_onnx(variant, image_size, path):
    """timm's model through torch.onnx.export (eval mode: BN folded by constant folding)."""
    import torch

    from keras_evit import reference

    from keras_evit.export.onnx import DEFAULT_OPSET

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
    threads, batch_sizes = args.threads, args.batch_sizes
    check_outputs({"--json": args.json, "--plot": args.plot}, inputs=[args.weights, args.calibration_dir])
    from keras_evit.weights.artifacts import weights_arg

    weights = weights_arg(args.weights)
    if args.reuse and not args.workdir:
        raise ValueError("--reuse measures the files in --workdir: pass the --workdir of the earlier run")
    log = lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        return _bench(args, variants, runtimes, threads, batch_sizes, weights, args.workdir, log)
    with tempfile.TemporaryDirectory(prefix="keras_evit_bench_") as workdir:  # removed on every exit path
        return _bench(args, variants, runtimes, threads, batch_sizes, weights, workdir, log)


def _bench(args, variants, runtimes, threads, batch_sizes, weights, workdir, log):
    rows = []
    for variant in variants:
        files = prepare(variant, runtimes, batch_sizes, args.image_size, weights, workdir,
                        args.calibration_dir, log, twins=args.twins, reuse=args.reuse and bool(args.workdir))
        measured = runtimes + [r + TWIN_SUFFIX for r in runtimes if args.twins and has_twin(r)]
        if args.memory:
            rows += measure_memory(variant, measured, files, batch_sizes, args.image_size, threads[0], log)
            continue
        for t in threads:
            spec = {"variant": variant, "runtimes": measured, "files": files, "threads": t,
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
    if args.memory:
        return _memory_report(args, rows)
    summarize(rows)
    print(format_table(rows))
    twins = format_twins(rows)
    if twins:
        print(twins)
    print("litert* rows: the files `keras-evit export --quantize Q [--int8-io]` writes with default flags "
          f"(raw RGB in, probabilities out); {TWIN_SUFFIX}: the same weights fed normalized images")
    result = {"rows": rows, "machine": cpu_facts(),
              "files": "litert*: what `keras-evit export` writes with default flags (raw RGB in, probabilities "
                       f"out, BatchNorm and normalization folded); {TWIN_SUFFIX}: include_preprocessing=False twins",
              "reference": f"{REFERENCE}: timm efficientvit_* exported by torch.onnx, run by ONNX Runtime"}
    from keras_evit.utils import write_reports

    write_reports(args, result, lambda path: plot(rows, path))
    return 0


def _memory_report(args, rows):
    from keras_evit.utils import write_reports

    compare_to_reference(rows)
    print(format_memory_table(rows))
    print(f"over imports: the peak's rise over the process after importing its runtime (model, arena, "
          f"activations); x ref: that rise over {REFERENCE}'s at the same batch. litert* rows: the files "
          "`keras-evit export` writes with default flags")
    result = {"rows": rows, "machine": cpu_facts(),
              "measure": "peak resident memory (VmHWM) of a process that imports its runtime, builds the runner "
                         "and runs 5 batches; model_mb = peak minus resident memory after the imports",
              "reference": f"{REFERENCE}: timm efficientvit_* exported by torch.onnx, run by ONNX Runtime"}
    write_reports(args, result, lambda path: plot_memory(rows, path))
    return 0


def _run_child(spec):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "keras_evit.benchmarks.measure", "--child"],
                          input=json.dumps(spec), capture_output=True, text=True, env=env)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 and not rows:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    return rows


