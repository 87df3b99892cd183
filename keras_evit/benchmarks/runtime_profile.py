"""Where inference time goes, grouped as the paper's Fig. 2 groups it: memory-bound operations (reshape,
transpose, copy, concat, split, pad, slice; element-wise add/mul; normalization) against compute
(conv, matmul/dense, softmax).

ONNX Runtime's profiler gives per-node times for an exported ``.onnx`` (ours, and timm's own export of
the reference when torch + timm are installed). LiteRT's Python interpreter exposes no op profiler, so
``.tflite`` files are profiled by LiteRT's own ``benchmark_model --enable_op_profiling=true
--op_profiling_output_mode=proto`` (on a phone: ``export/phones/android_benchmark.sh``; on a desktop:
``--benchmark-model PATH``), whose ``BenchmarkProfilingData`` file :func:`tflite_profile` reads.
"""

import glob
import json
import os
import tempfile

import numpy as np

# ONNX op type -> the paper's group
GROUPS = {
    "reshape/copy": ("Reshape", "Transpose", "Concat", "Split", "Pad", "Slice", "Gather", "Squeeze", "Unsqueeze",
                     "Identity", "Expand", "Tile", "Flatten", "Cast", "Shape"),
    "element-wise": ("Add", "Mul", "Sub", "Div", "Relu", "Sigmoid", "Clip", "Max", "Min", "Neg", "Sqrt", "Pow",
                     "HardSigmoid", "Sum"),
    "normalization": ("BatchNormalization", "LayerNormalization", "InstanceNormalization", "ReduceMean",
                      "GlobalAveragePool"),
    "conv": ("Conv", "FusedConv", "ConvTranspose", "NhwcConv", "QLinearConv"),
    "matmul/dense": ("MatMul", "Gemm", "FusedMatMul", "FusedGemm", "MatMulInteger", "QLinearMatMul"),
    "softmax": ("Softmax",),
}
# LiteRT: builtin op names, and XNNPACK's operator names inside its delegate (matched by words)
TFLITE_GROUPS = {
    "reshape/copy": ("RESHAPE", "TRANSPOSE", "CONCATENATION", "SPLIT", "SPLIT_V", "PAD", "PADV2", "SLICE",
                     "STRIDED_SLICE", "GATHER", "SQUEEZE", "EXPAND_DIMS", "QUANTIZE", "DEQUANTIZE", "CAST",
                     "BROADCAST_TO", "TILE", "PACK", "UNPACK"),
    "element-wise": ("ADD", "MUL", "SUB", "DIV", "RELU", "RELU6", "LOGISTIC", "HARD_SWISH", "MAXIMUM", "MINIMUM",
                     "SQRT", "RSQRT", "POW", "SQUARED_DIFFERENCE", "NEG", "ADD_N"),
    "normalization": ("MEAN", "AVERAGE_POOL_2D", "SUM"),
    "conv": ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"),
    "matmul/dense": ("FULLY_CONNECTED", "BATCH_MATMUL"),
    "softmax": ("SOFTMAX",),
}
XNNPACK_WORDS = (  # first match wins: "Convolution" before "Constant Pad", "Batch Matrix" before "Add"
    ("conv", ("convolution", "dwconv")),
    ("matmul/dense", ("fully connected", "matrix multiply", "gemm")),
    ("softmax", ("softmax",)),
    ("normalization", ("mean", "average pooling", "sum (", "normalization")),
    ("reshape/copy", ("copy", "transpose", "pad", "slice", "split", "concatenate", "reshape", "convert",
                      "quantize", "broadcast", "depth to space", "space to depth")),
    ("element-wise", ("add", "multiply", "subtract", "divide", "clamp", "sigmoid", "relu", "maximum", "minimum",
                      "square", "hardswish", "negate")),
)
MEMORY_BOUND = ("reshape/copy", "element-wise", "normalization")
GROUP_ORDER = MEMORY_BOUND + ("conv", "matmul/dense", "softmax", "other")


def group_of(op_type):
    """The paper's group of an ONNX op type, a LiteRT builtin op or an XNNPACK operator name."""
    for table_ in (GROUPS, TFLITE_GROUPS):
        for group, types in table_.items():
            if op_type in types:
                return group
    lowered = op_type.lower()
    for group, words in XNNPACK_WORDS:
        if any(word in lowered for word in words):
            return group
    return "other"


MAX_PROFILE_BYTES = 64 << 20


def tflite_profile(path):
    """{op type: microseconds per inference} from a LiteRT ``benchmark_model`` op-profiling proto
    (``--op_profiling_output_mode=proto``). Ops a delegate ran are counted from the delegate's own
    per-operator profile when it wrote one (XNNPACK does), instead of as one opaque delegate node."""
    from google.protobuf.message import DecodeError

    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such profile file (benchmark_model's --op_profiling_output_file)")
    size = os.path.getsize(path)
    if not 0 < size <= MAX_PROFILE_BYTES:
        raise ValueError(f"{path}: {size} bytes is not a benchmark_model op profile (expected 1 B .. "
                         f"{MAX_PROFILE_BYTES >> 20} MiB); pass the file --op_profiling_output_file wrote")
    data = benchmark_profiling_data()
    try:
        with open(path, "rb") as f:
            data.ParseFromString(f.read())
    except DecodeError as e:
        raise ValueError(f"{path} is not a BenchmarkProfilingData proto ({e}): run benchmark_model with "
                         "--enable_op_profiling=true --op_profiling_output_mode=proto") from None
    runtime = data.runtime_profile
    delegated = [op for d in runtime.delegate_profiles for op in d.per_op_profiles]
    totals = {}

    def add(op):
        us = float(op.inference_microseconds.avg)
        if not np.isfinite(us) or us < 0:
            raise ValueError(f"{path}: op {op.name!r} has an invalid time {us}")
        totals[op.node_type] = totals.get(op.node_type, 0.0) + us

    for subgraph in runtime.subgraph_profiles:
        for op in subgraph.per_op_profiles:
            if delegated and "delegate" in op.node_type.lower():
                continue  # its time is the sum of the delegate's own ops, counted below
            add(op)
    for op in delegated:
        add(op)
    if not totals:
        raise ValueError(f"{path}: the profile has no per-op times (was --enable_op_profiling=true set?)")
    if sum(totals.values()) <= 0:
        raise ValueError(f"{path}: every op time in the profile is zero: not a measured run (run benchmark_model "
                         "with --enable_op_profiling=true and at least one timed run)")
    return totals


def benchmark_profiling_data():
    """An empty ``tflite.profiling.BenchmarkProfilingData`` message. TensorFlow and ai_edge_litert ship the
    same proto; whichever registered it first owns the name, so look it up before importing LiteRT's."""
    from google.protobuf import descriptor_pool, message_factory

    name = "tflite.profiling.BenchmarkProfilingData"
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        from ai_edge_litert import profiling_info_pb2

        descriptor = profiling_info_pb2.BenchmarkProfilingData.DESCRIPTOR
    return message_factory.GetMessageClass(descriptor)()


def run_benchmark_model(binary, tflite_path, threads=1, runs=50, xnnpack=True):
    """Runs a desktop ``benchmark_model`` with op profiling on ``tflite_path``; returns the proto path."""
    import subprocess

    out = os.path.splitext(tflite_path)[0] + f".t{threads}.profile.pb"
    cmd = [binary, f"--graph={tflite_path}", f"--num_threads={threads}", f"--num_runs={runs}", "--warmup_runs=5",
           f"--use_xnnpack={'true' if xnnpack else 'false'}", "--enable_op_profiling=true",
           "--op_profiling_output_mode=proto", f"--op_profiling_output_file={out}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0 or not os.path.isfile(out):
        raise RuntimeError(f"benchmark_model failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    return out


def onnx_profile(path, input_shape, threads=1, runs=20, layout="NHWC"):
    """{op type: microseconds per inference} from ONNX Runtime's profiler (warm-up runs excluded)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    shape = input_shape if layout == "NHWC" else (input_shape[0], input_shape[3], input_shape[1], input_shape[2])
    x = np.random.RandomState(0).uniform(0, 255, shape).astype(np.float32)
    for _ in range(5):
        session.run(None, {name: x})
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort")
        profiled = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        for _ in range(runs + 3):
            profiled.run(None, {name: x})
        trace = profiled.end_profiling()
        with open(trace) as f:
            events = json.load(f)
        for leftover in glob.glob(os.path.join(tmp, "*")):
            os.remove(leftover)
    per_run = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    totals = {}
    for event in per_run:
        op = event.get("args", {}).get("op_name", "?")
        totals[op] = totals.get(op, 0.0) + float(event["dur"])
    calls = runs + 3
    return {op: us / calls for op, us in totals.items()}


def grouped(per_op):
    """{group: microseconds} in GROUP_ORDER, plus the total."""
    groups = {g: 0.0 for g in GROUP_ORDER}
    for op, us in per_op.items():
        groups[group_of(op)] += us
    return groups


def table(results):
    """results: {label: {group: us}} -> a text table of ms and shares."""
    header = f"{'model':<22} " + " ".join(f"{g:>14}" for g in GROUP_ORDER) + f" {'total ms':>9} {'memory-bound':>13}"
    lines = [header, "-" * len(header)]
    for label, groups in results.items():
        total = sum(groups.values())
        memory = sum(groups[g] for g in MEMORY_BOUND)
        cells = " ".join(f"{groups[g] / 1e3:7.2f} ({100 * groups[g] / total:3.0f}%)" for g in GROUP_ORDER)
        lines.append(f"{label:<22} {cells} {total / 1e3:9.2f} {100 * memory / total:12.0f}%")
    return "\n".join(lines)


def plot(results, path):
    from keras_evit.utils import atomic_output, pyplot

    plt = pyplot()

    labels = list(results)
    fig, ax = plt.subplots(figsize=(9.5, 1.2 + 0.45 * len(labels)))
    left = np.zeros(len(labels))
    for group in GROUP_ORDER:
        shares = np.array([100 * results[lb][group] / sum(results[lb].values()) for lb in labels])
        ax.barh(labels, shares, left=left, label=group, hatch="//" if group in MEMORY_BOUND else None)
        left += shares
    ax.set_xlabel("share of inference time (%); hatched: memory-bound (paper Fig. 2 groups)")
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
