"""``keras-evit export`` and ``keras-evit bench``."""

import json
import os
import re
import sys

from .args import (LABELS_HELP, MAX_EXPORT_BATCH, MAX_THREADS, WEIGHTS_HELP, add_model_argument,
                   bounded_int, image_size_arg, positive_int)


def _export_images(args, model):
    """(calibration images or None, verification images, where they came from), as the model takes them."""
    import numpy as np

    from keras_evit.weights.artifacts import model_image_size
    from keras_evit.demo import find_sample_dir
    from keras_evit.preprocessing import model_inputs

    from keras_evit.export.images import load_folder
    from keras_evit.export.tflite import CALIBRATED_MODES

    size = model_image_size(model)
    calibration = None
    if args.quantize in CALIBRATED_MODES:
        calibration, skipped = load_folder(args.calibration_dir, size, args.calibration_limit)
        for msg in skipped:
            print(f"skipped: {msg}", file=sys.stderr)
        calibration = model_inputs(model, calibration)
    verify_dir = args.verify_dir or args.calibration_dir or find_sample_dir()
    if verify_dir:
        verify_images, _ = load_folder(verify_dir, size, args.verify_limit)
        where = verify_dir
    else:
        verify_images = np.random.RandomState(0).uniform(0, 255, (8, size, size, 3)).astype("float32")
        where = "random inputs (no image folder found: pass --verify-dir)"
    return calibration, model_inputs(model, verify_images), where


def cmd_export(args):
    import keras_evit as ke
    from keras_evit.preprocessing import raw_input_model
    from keras_evit.utils import check_outputs

    from keras_evit.export import check_export_args, describe, export_model
    from keras_evit.export.metadata import model_info, require_mediapipe

    # everything that can be refused is refused before the model is built or any file is read
    check_export_args(args.format, args.quantize, args.output, args.calibration_dir, args.int8_io)
    check_outputs({"--output": args.output, "--report": args.report}, inputs=[args.weights, args.labels],
                  folders=("--output",) if args.format == "coreml" else ())
    if args.batch_size == 0 and args.format == "tflite":
        raise ValueError("TFLite export needs a fixed --batch-size >= 1 (XNNPACK rejects dynamic batch)")
    if args.format == "tflite" and args.metadata:
        require_mediapipe()
    model, class_names = ke.load_classifier(args.weights, args.model, args.image_size,
                                            classifier_activation=None if args.logits else "softmax",
                                            labels=args.labels)
    model = raw_input_model(model)  # every file takes RGB 0..255 (MediaPipe has one mean/std for all channels)
    calibration, verify_images, where = _export_images(args, model)
    info = model_info(model, class_names, probabilities=not args.logits) if args.metadata else None
    report = export_model(model, args.output, args.format, args.quantize, calibration, args.batch_size or None,
                          args.int8_io, verify_images, metadata=info)
    print(f"wrote {report['output']} ({report['bytes'] / 1e6:.2f} MB, {args.format}, {args.quantize}, "
          f"batch {args.batch_size}, {'logits' if args.logits else 'probabilities'}"
          f"{', ' + str(len(info['labels'])) + ' labels in metadata' if info else ', no metadata'})")
    if args.format == "coreml":
        print(f"Core ML ML Program (iOS 16+): inputs {report['inputs']}, outputs {report['outputs']}")
        print(report["note"])
        return 0
    if args.format == "tflite":
        ops = report["non_builtin_ops"]
        print(f"builtin ops only: {'yes' if not ops else 'NO ' + str(ops)}")
        print(f"GPU delegate (TFLite analyzer): "
              f"{'compatible' if report['gpu_delegate_compatible'] else 'NOT compatible'}")
    else:
        print(f"ONNX opset {report['opset']}, onnx.checker passed")
    print(f"verified on {where}: {describe(report['verification'])}")
    if args.report:
        from keras_evit.utils import atomic_output

        with atomic_output(args.report) as tmp, open(tmp, "w") as f:
            json.dump(report, f, indent=2)
    return 0


def cmd_setup_mediapipe(args):
    from keras_evit.export.metadata import setup_mediapipe

    setup_mediapipe()
    return 0


def cmd_bench(args):
    from keras_evit.benchmarks.cpu import cpu_facts, deny_amx

    if args.no_amx:
        deny_amx()  # before any runtime starts; the children measuring inherit it
    facts = cpu_facts()
    print(f"[bench] {facts['cpu']}: XNNPACK's int8 kernels here are {facts['int8_kernels']}", file=sys.stderr,
          flush=True)
    if args.input_pipeline:
        from keras_evit.benchmarks.input_pipeline import main as input_bench_main

        return input_bench_main(args)
    if args.train and args.memory:
        from keras_evit.benchmarks.training_memory import main as train_memory_main

        return train_memory_main(args)
    if args.train and args.profile:
        from keras_evit.benchmarks.step_profile import main as profile_main

        return profile_main(args)
    if args.profile:
        raise SystemExit("--profile goes with --train (it profiles a training step)")
    if args.train:
        from keras_evit.benchmarks.training import main as train_bench_main

        return train_bench_main(args)
    from keras_evit.benchmarks.inference import main as bench_main

    return bench_main(args)


def register(sub):
    p = sub.add_parser("export", help="export to TFLite (fp32/fp16/int8) or ONNX, verified")
    add_model_argument(p)
    p.add_argument("--weights", default="imagenet", help=WEIGHTS_HELP)
    p.add_argument("--format", default="tflite", help="tflite, onnx, or coreml (.mlpackage for iOS)")
    p.add_argument("--quantize", default="none", help="none, fp16, dynamic, int8 (full integer), "
                   "int8-mixed (int8 convs/dense, float attention: fastest on CPU/XNNPACK)")
    p.add_argument("--calibration-dir", default=None, help="images for int8 calibration")
    p.add_argument("--calibration-limit", type=positive_int, default=200)
    p.add_argument("--verify-dir", default=None, help="images for verification (default: calibration "
                   "dir, else the ImageNet sample folder)")
    p.add_argument("--verify-limit", type=positive_int, default=100)
    p.add_argument("--image-size", type=image_size_arg, default=None, help="default 224 (a .keras model: its own)")
    p.add_argument("--batch-size", type=bounded_int(0, MAX_EXPORT_BATCH), default=1,
                   help="fixed batch (0: dynamic, ONNX only)")
    p.add_argument("--int8-io", action="store_true",
                   help="uint8 image in, uint8 scores out (full int8 only; what MediaPipe takes from integer models)")
    p.add_argument("--no-metadata", dest="metadata", action="store_false",
                   help="skip the metadata (TFLite: MediaPipe/LiteRT image-classifier metadata with labels)")
    p.add_argument("--logits", action="store_true", help="output logits instead of probabilities")
    p.add_argument("--labels", default=None, help=LABELS_HELP)
    p.add_argument("--output", required=True)
    p.add_argument("--report", default=None, help="write the export report as JSON")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("setup-mediapipe", help="make MediaPipe's own environment (TFLite metadata writer)")
    p.set_defaults(func=cmd_setup_mediapipe, needs_keras=False)  # a venv and pip: answers without TensorFlow

    from keras_evit.benchmarks.inference import add_arguments

    p = sub.add_parser("bench", help="latency/throughput across runtimes, against the PyTorch reference")
    add_arguments(p)
    p.set_defaults(func=cmd_bench)


def cmd_runtime(args):
    """``keras-evit analyze runtime``: per-op-type time grouped as the paper's Fig. 2."""
    import tempfile

    from keras_evit.utils import check_outputs, write_reports

    from keras_evit.benchmarks.runtime_profile import grouped, plot, table

    if args.format not in ("onnx", "tflite"):
        raise ValueError(f"--format {args.format!r}: choose onnx (ONNX Runtime's profiler) or tflite (LiteRT's "
                         "benchmark_model op profiling)")
    check_outputs({"--json": args.json, "--plot": args.plot}, inputs=[args.weights, *(args.profile_file or [])])
    if args.benchmark_model and not (os.path.isfile(args.benchmark_model) and os.access(args.benchmark_model, os.X_OK)):
        raise ValueError(f"--benchmark-model {args.benchmark_model!r} is not an executable file (LiteRT's "
                         "benchmark_model binary for this machine)")
    if args.format == "tflite" and not (args.profile_file or args.benchmark_model or args.workdir):
        raise ValueError("LiteRT's Python interpreter has no op profiler: pass --profile-file FILE.profile.pb "
                         "(benchmark_model --enable_op_profiling=true --op_profiling_output_mode=proto), "
                         "--benchmark-model PATH to run one here, or --workdir DIR to keep the files to profile")
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        raw = _profiles(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="keras_evit_analyze_") as workdir:  # removed on every exit path
            raw = _profiles(args, workdir)
    results = {label: grouped(per_op) for label, per_op in raw.items()}
    runtime = "LiteRT benchmark_model" if args.format == "tflite" else "ONNX Runtime"
    if args.format == "tflite" and args.profile_file:
        print(f"{runtime} profiles (threads and input as they were run): ms per inference by group")
    else:
        print(f"{runtime}, {args.threads} thread(s), batch 1, {args.image_size} px: ms per inference by group")
    print(table(results))
    write_reports(args, {"runtime": runtime, "threads": args.threads, "image_size": args.image_size,
                         "groups_us": results, "per_op_us": raw}, lambda path: plot(results, path))
    return 0


def _profiles(args, workdir):
    return _tflite_profiles(args, workdir) if args.format == "tflite" else _onnx_profiles(args, workdir)


def profile_labels(paths):
    """A label per profile file: its name without ``.profile.pb``, or its full path where two names match."""
    short = [re.sub(r"(\.profile)?\.pb$", "", os.path.basename(p)) for p in paths]
    if len(set(os.path.realpath(p) for p in paths)) < len(paths):
        raise ValueError("the same --profile-file is given twice")
    return {(s if short.count(s) == 1 else p): p for s, p in zip(short, paths)}


def _onnx_profiles(args, workdir):
    import keras_evit as ke
    from keras_evit.export import to_onnx
    from keras_evit.benchmarks.runtime_profile import onnx_profile

    from keras_evit.weights.artifacts import weights_arg

    raw = {}
    for variant in _variants(args):
        model = ke.build_model(variant, weights=weights_arg(args.weights), input_shape=(args.image_size,) * 2 + (3,))
        path = to_onnx(model, os.path.join(workdir, f"{variant}.onnx"), batch_size=1)
        shape = (1, args.image_size, args.image_size, 3)
        raw[f"{variant} keras-evit"] = onnx_profile(path, shape, args.threads, args.runs)
        if _reference_available():
            from keras_evit.benchmarks.inference import export_reference_onnx

            ref_path = export_reference_onnx(variant, args.image_size, os.path.join(workdir, f"{variant}_timm.onnx"))
            raw[f"{variant} timm (reference)"] = onnx_profile(ref_path, shape, args.threads, args.runs, layout="NCHW")
    return raw


def _tflite_profiles(args, workdir):
    """Profiles written by benchmark_model (``--profile-file``), or made here by ``--benchmark-model``."""
    from keras_evit.benchmarks.runtime_profile import run_benchmark_model, tflite_profile

    if args.profile_file:
        return {label: tflite_profile(p) for label, p in profile_labels(args.profile_file).items()}
    import keras_evit as ke
    from keras_evit.export import to_tflite

    from keras_evit.weights.artifacts import weights_arg

    paths = {}
    for variant in _variants(args):
        model = ke.build_model(variant, weights=weights_arg(args.weights), input_shape=(args.image_size,) * 2 + (3,))
        paths[variant] = to_tflite(model, os.path.join(workdir, f"{variant}.tflite"))
    if not args.benchmark_model:
        files = " ".join(paths.values())
        raise ValueError(
            f"wrote {files}\nLiteRT's Python interpreter has no op profiler. Profile each file with LiteRT's "
            f"benchmark_model, then read the result here:\n  benchmark_model --graph=FILE --num_threads="
            f"{args.threads} --enable_op_profiling=true --op_profiling_output_mode=proto "
            "--op_profiling_output_file=FILE.profile.pb\n  keras-evit analyze runtime --format tflite "
            "--profile-file FILE.profile.pb [...]\n(on a phone: export/phones/android_benchmark.sh pulls the "
            "profile back; on this machine: --benchmark-model PATH runs it for you)")
    return {f"{variant} keras-evit (LiteRT)": tflite_profile(run_benchmark_model(
        args.benchmark_model, path, args.threads, args.runs)) for variant, path in paths.items()}


def _variants(args):
    return [v.strip() for v in args.model.split(",") if v.strip()]


def _reference_available():
    try:
        from keras_evit import reference

        reference.import_timm()
        return True
    except ImportError:
        return False


def register_runtime(kinds):
    """``analyze runtime``, under the ``analyze`` command's sub-parsers."""
    p = kinds.add_parser("runtime", help="per-op-type runtime breakdown grouped as the paper's Fig. 2")
    p.add_argument("--model", default="m4", help="variant(s), comma separated")
    p.add_argument("--weights", default="none", help="none (timing does not depend on values) or " + WEIGHTS_HELP)
    p.add_argument("--format", default="onnx", choices=("onnx", "tflite"),
                   help="onnx (ONNX Runtime's profiler) or tflite (LiteRT benchmark_model's op profiling)")
    p.add_argument("--profile-file", action="append", default=None,
                   help="tflite: a benchmark_model --op_profiling_output_mode=proto file (repeatable)")
    p.add_argument("--benchmark-model", default=None, help="tflite: a desktop benchmark_model binary to run here")
    p.add_argument("--threads", type=bounded_int(1, MAX_THREADS), default=1)
    p.add_argument("--image-size", type=image_size_arg, default=224)
    p.add_argument("--runs", type=positive_int, default=20)
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None, help="stacked bars per model (PNG)")
    p.set_defaults(func=cmd_runtime)
