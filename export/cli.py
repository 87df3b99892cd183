"""``keras-evit export`` and ``keras-evit bench``."""

import json
import sys

from keras_evit.cli_args import (LABELS_HELP, MAX_EXPORT_BATCH, WEIGHTS_HELP, add_model_argument, bounded_int,
                                 image_size_arg, positive_int)


def _export_images(args, model):
    """(calibration images or None, verification images, where they came from), as the model takes them."""
    import numpy as np

    from keras_evit.artifacts import model_image_size
    from keras_evit.demo import find_sample_dir
    from keras_evit.preprocessing import model_inputs

    from .images import load_folder
    from .tflite import CALIBRATED_MODES

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
    from keras_evit.utils import check_outputs

    from . import check_export_args, describe, export_model
    from .metadata import model_info, require_mediapipe

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
    from .metadata import setup_mediapipe

    setup_mediapipe()
    return 0


def cmd_bench(args):
    if args.train and args.profile:
        from keras_evit.training.step_profile import main as profile_main

        return profile_main(args)
    if args.profile:
        raise SystemExit("--profile goes with --train (it profiles a training step)")
    if args.train:
        from keras_evit.training.benchmark import main as train_bench_main

        return train_bench_main(args)
    from .bench import main as bench_main

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
    p.set_defaults(func=cmd_setup_mediapipe)

    from .bench import add_arguments

    p = sub.add_parser("bench", help="latency/throughput across runtimes, against the PyTorch reference")
    add_arguments(p)
    p.set_defaults(func=cmd_bench)
