"""int8 attention matmuls on XNNPACK, measured against the shipped ``int8-mixed`` file.

XNNPACK runs an int8 ``BATCH_MATMUL`` (its QS8 batch matmul) only when the right operand has zero point
0; TFLite's calibration gives K and V asymmetric ranges, so their matmuls stay on TFLite's own kernels
in a full-int8 file. This builds the form XNNPACK does take: ``int8-mixed`` calibration with only
``SOFTMAX`` and ``RELU`` kept in float, then a requantize of each matmul's right operand to a symmetric
scale (the same range, zero point 0). It checks both files are one XNNPACK partition, times them against
each other (alternating calls, batch 1) and compares both with Keras on sample images.

    python -m keras_evit.benchmarks.int8_attention --model m0,m2,m5 [--json F] [--plot F]

``int8-mixed`` keeps its float matmuls: measured this way the int8 ones gain a few percent at best
(docs/benchmarks.md, "int8 attention, measured").
"""

import argparse
import copy
import os
import sys

import numpy as np

INT8_MATMUL_FLOAT_OPS = ("SOFTMAX", "RELU")


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _builtin(code):
    """An operator code's builtin number (small ones are stored in the deprecated field)."""
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _quantize_opcode(schema, model):
    number = schema.BuiltinOperator.QUANTIZE
    for i, code in enumerate(model.operatorCodes):
        if _builtin(code) == number:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = number
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def symmetric_right_operands(data):
    """Flatbuffer bytes where every int8 ``BATCH_MATMUL``'s right operand goes through a requantize to the
    same range with zero point 0 (a ``QUANTIZE`` int8 -> int8 op, which XNNPACK runs)."""
    import flatbuffers

    schema = _schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytearray(data), 0))
    requantize = _quantize_opcode(schema, model)
    changed = 0
    for graph in model.subgraphs:
        operators = []
        for op in graph.operators:
            is_matmul = _builtin(model.operatorCodes[op.opcodeIndex]) == schema.BuiltinOperator.BATCH_MATMUL
            source = graph.tensors[op.inputs[1]] if is_matmul else None
            params = None if source is None else source.quantization
            if (source is not None and source.type == schema.TensorType.INT8 and params is not None
                    and params.scale is not None and len(params.scale) == 1 and params.zeroPoint[0] != 0):
                low = (-128 - params.zeroPoint[0]) * params.scale[0]
                high = (127 - params.zeroPoint[0]) * params.scale[0]
                target = copy.deepcopy(source)
                target.name = source.name + b"/symmetric"
                target.quantization.scale = [max(-low, high) / 127.0]
                target.quantization.zeroPoint = [0]
                model.buffers.append(schema.BufferT())
                target.buffer = len(model.buffers) - 1
                graph.tensors.append(target)
                step = schema.OperatorT()
                step.opcodeIndex = requantize
                step.inputs, step.outputs = [op.inputs[1]], [len(graph.tensors) - 1]
                operators.append(step)
                op.inputs = [op.inputs[0], len(graph.tensors) - 1, *list(op.inputs[2:])]
                changed += 1
            operators.append(op)
        graph.operators = operators
    if not changed:
        raise ValueError("no int8 BATCH_MATMUL with a non-zero zero point on its right operand: nothing to do")
    builder = flatbuffers.Builder(len(data) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def export_pair(model, calibration, folder):
    """(shipped int8-mixed path, int8-matmul path) for one Keras model."""
    from keras_evit.export.deploy import deploy_model
    from keras_evit.export.tflite import convert_tflite

    deployed = deploy_model(model, True)
    paths = {}
    for name, float_ops in (("int8-mixed", None), ("int8-matmul", INT8_MATMUL_FLOAT_OPS)):
        kwargs = {} if float_ops is None else {"float_ops": float_ops}
        data = convert_tflite(deployed, "int8-mixed", calibration, 1, False, **kwargs)
        if float_ops is not None:
            data = symmetric_right_operands(data)
        paths[name] = os.path.join(folder, f"{model.name}_{name}.tflite")
        with open(paths[name], "wb") as f:
            f.write(data)
    return paths["int8-mixed"], paths["int8-matmul"]


def measure(variant, image_size, calibration, images, folder, min_time):
    import keras_evit as ke

    from keras_evit.export.runners import TFLiteRunner
    from keras_evit.export.tflite import xnnpack_partitions

    from .inference import fill_zero_weights
    from .measure import ROUNDS, paired_ratio, time_call

    model = ke.build_model(variant, weights=None, input_shape=(image_size, image_size, 3))
    fill_zero_weights(model)
    keras_out = model.predict(images, verbose=0)
    shipped, probe = export_pair(model, calibration, folder)
    row = {"model": variant}
    runners = {}
    for name, path in (("int8-mixed", shipped), ("int8-matmul", probe)):
        partitions, left_out = xnnpack_partitions(path)
        runner = TFLiteRunner(path, threads=1)
        out = runner(images)
        row[name] = {"xnnpack_partitions": partitions, "left_out": sorted(set(left_out)),
                     "max_abs_vs_keras": float(np.abs(out - keras_out).max()),
                     "top1_vs_keras": float(np.mean(out.argmax(-1) == keras_out.argmax(-1)))}
        runners[name] = runner
    x = images[:1]
    for name in runners:  # median over interleaved rounds, as keras-evit bench times
        row[name]["ms"] = []
    for _ in range(ROUNDS):
        for name, runner in runners.items():
            row[name]["ms"].append(1e3 * time_call(lambda r=runner: r(x), min_time / ROUNDS))
    for name in runners:
        row[name]["ms"] = float(np.median(row[name]["ms"]))
    row["time_ratio"] = paired_ratio(lambda: runners["int8-matmul"](x), lambda: runners["int8-mixed"](x), min_time)
    return row


def plot_ratios(path, rows):
    """One bar per model: int8-matmul time / int8-mixed time (alternating calls; a ratio holds on a busy
    machine where the absolute times do not)."""
    from keras_evit.utils import save_grouped_bars

    save_grouped_bars(path, rows, group=lambda r: r["model"], series=lambda r: "int8-matmul / int8-mixed",
                      value=lambda r: r["time_ratio"], ylabel="time ratio (< 1: int8 matmuls faster)",
                      title="attention matmuls in int8 vs float, batch 1, 1 thread")


def main(argv=None):
    import tempfile

    from keras_evit.cli.args import image_size_arg
    from keras_evit.demo import bundled_sample_dir, find_sample_dir
    from keras_evit.utils import check_outputs, write_reports

    from keras_evit.export.images import load_folder

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="m0,m2,m5")
    p.add_argument("--image-size", type=image_size_arg, default=224)
    p.add_argument("--images", default=None, help="calibration and comparison images (default: the ImageNet "
                   "sample folder when found, else the package's four sample photos)")
    p.add_argument("--min-time", type=float, default=3.0, help="seconds per timing (default 3)")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    args = p.parse_args(argv)
    check_outputs({"--json": args.json, "--plot": args.plot}, inputs=[args.images])
    folder = args.images or find_sample_dir() or bundled_sample_dir()
    images = load_folder(folder, args.image_size, limit=64)[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="keras_evit_int8_attention_") as tmp:
        for variant in [m.strip() for m in args.model.split(",") if m.strip()]:
            print(f"[int8_attention] {variant}: exporting and timing", flush=True)
            rows.append(measure(variant, args.image_size, images, images[:16], tmp, args.min_time))
    print(f"{'model':<6} {'int8-mixed ms':>14} {'int8-matmul ms':>15} {'ratio':>7} {'partitions':>11} "
          f"{'max |p - keras|':>22}")
    for r in rows:
        a, b = r["int8-mixed"], r["int8-matmul"]
        print(f"{r['model']:<6} {a['ms']:14.3f} {b['ms']:15.3f} {r['time_ratio']:7.3f} "
              f"{a['xnnpack_partitions']:>5}/{b['xnnpack_partitions']:<5} "
              f"{a['max_abs_vs_keras']:10.2e}/{b['max_abs_vs_keras']:.2e}")
    print("ratio: int8-matmul time / int8-mixed time, median over alternating batch-1 calls (< 1: int8 faster)")
    write_reports(args, {"image_size": args.image_size, "rows": rows}, lambda path: plot_ratios(path, rows))


if __name__ == "__main__":
    sys.exit(main())
