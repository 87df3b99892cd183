"""Where inference time goes, grouped as the paper's Fig. 2 groups it: memory-bound operations (reshape,
transpose, copy, concat, split, pad, slice; element-wise add/mul; normalization) against compute
(conv, matmul/dense, softmax).

ONNX Runtime's profiler gives per-node times for an exported ``.onnx`` (ours, and timm's own export of
the reference when torch + timm are installed). LiteRT's Python interpreter exposes no op profiler;
for ``.tflite`` files use TFLite's ``benchmark_model --enable_op_profiling=true`` on the device
(``export/phones/android_benchmark.sh``).
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
MEMORY_BOUND = ("reshape/copy", "element-wise", "normalization")
GROUP_ORDER = MEMORY_BOUND + ("conv", "matmul/dense", "softmax", "other")


def group_of(op_type):
    for group, types in GROUPS.items():
        if op_type in types:
            return group
    return "other"


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_evit.utils import atomic_output

    labels = list(results)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.55 * len(labels)))
    left = np.zeros(len(labels))
    for group in GROUP_ORDER:
        shares = np.array([100 * results[lb][group] / sum(results[lb].values()) for lb in labels])
        ax.barh(labels, shares, left=left, label=group, hatch="//" if group in MEMORY_BOUND else None)
        left += shares
    ax.set_xlabel("share of inference time (%); hatched: memory-bound (paper Fig. 2 groups)")
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
