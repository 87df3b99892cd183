"""``keras-evit export`` and ``keras-evit bench``."""

import json
import os
import sys


def cmd_export(args):
    import numpy as np

    import keras_evit as ke
    from keras_evit.demo import find_sample_dir

    from . import check_export_args, describe, export_model
    from .tflite import CALIBRATED_MODES
    from .images import load_folder

    check_export_args(args.format, args.quantize, args.output, args.calibration_dir, args.int8_io)
    calibration = None
    if args.quantize in CALIBRATED_MODES:
        calibration, skipped = load_folder(args.calibration_dir, args.image_size, args.calibration_limit)
        for msg in skipped:
            print(f"skipped: {msg}", file=sys.stderr)
    verify_dir = args.verify_dir or args.calibration_dir or find_sample_dir()
    if verify_dir:
        verify_images, _ = load_folder(verify_dir, args.image_size, args.verify_limit)
        where = verify_dir
    else:
        verify_images = np.random.RandomState(0).randn(8, args.image_size, args.image_size, 3).astype("float32")
        where = "random inputs (no image folder found: pass --verify-dir)"
    weights = None if args.weights in ("none", "") else args.weights
    model = ke.build_model(args.model, weights=weights, classifier_activation=None,
                           input_shape=(args.image_size, args.image_size, 3))
    if args.batch_size == 0 and args.format == "tflite":
        raise ValueError("TFLite export needs a fixed --batch-size >= 1 (XNNPACK rejects dynamic batch)")
    report = export_model(model, args.output, args.format, args.quantize, calibration, args.batch_size or None,
                          args.int8_io, verify_images)
    print(f"wrote {report['output']} ({report['bytes'] / 1e6:.2f} MB, {args.format}, {args.quantize}, "
          f"batch {args.batch_size})")
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
        with open(args.report, "w") as f:
            json.dump(report, f, indent=2)
    return 0


def cmd_bench(args):
    from .bench import main as bench_main

    return bench_main(args)


def register(sub):
    p = sub.add_parser("export", help="export to TFLite (fp32/fp16/int8) or ONNX, verified")
    p.add_argument("--model", default="m0")
    p.add_argument("--weights", default="imagenet", help="imagenet, none, or a weights file")
    p.add_argument("--format", default="tflite", help="tflite, onnx, or coreml (.mlpackage for iOS)")
    p.add_argument("--quantize", default="none", help="none, fp16, dynamic, int8 (full integer), "
                   "int8-mixed (int8 convs/dense, float attention: fastest on CPU/XNNPACK)")
    p.add_argument("--calibration-dir", default=None, help="images for int8 calibration")
    p.add_argument("--calibration-limit", type=int, default=200)
    p.add_argument("--verify-dir", default=None, help="images for verification (default: calibration "
                   "dir, else the ImageNet sample folder)")
    p.add_argument("--verify-limit", type=int, default=100)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=1, help="fixed batch (0: dynamic, ONNX only)")
    p.add_argument("--int8-io", action="store_true", help="int8 input/output tensors (full int8 only)")
    p.add_argument("--output", required=True)
    p.add_argument("--report", default=None, help="write the export report as JSON")
    p.set_defaults(func=cmd_export)

    from .bench import add_arguments

    p = sub.add_parser("bench", help="latency/throughput across runtimes, against the PyTorch reference")
    add_arguments(p)
    p.set_defaults(func=cmd_bench)
