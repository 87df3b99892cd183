"""``keras-evit bench --train --profile``: where a Keras ``fit`` step's time goes, by phase (forward,
backward, optimizer) and op group (conv, depthwise conv, BatchNorm, attention, ...), from TensorFlow's
profiler trace of a few graph-mode steps on random data. Prints a table, saves JSON and a PNG.

The trace is read from the profiler's ``.xplane.pb`` with the XSpace protobuf TensorFlow ships
(``keras_evit.compat.profiler_xspace``; TensorBoard's profile plugin reads the same file). Times are
kernel thread-time per step (both compute threads summed), so they add up to more than the wall time.
"""

import collections
import glob
import json
import os
import re
import tempfile
import time


GROUPS = ("conv", "depthwise conv", "batchnorm", "attention", "slice/concat", "elementwise", "cast", "optimizer",
          "other")


def op_group(op_name, op_type, optimizer="adam_w"):
    """(phase, group) of one traced kernel, from its graph name and type (``optimizer``: the optimizer's name,
    which names the scope of its ops)."""
    phase = "optimizer" if f"/{optimizer}/" in op_name else ("backward" if "gradient_tape/" in op_name else "forward")
    if phase == "optimizer":
        return phase, "optimizer"
    if op_type == "Cast":  # dtype conversions, BatchNorm's under mixed precision included
        return phase, "cast"
    if "/bn/" in op_name or "/bn_1/" in op_name or "BatchNorm" in op_type:
        return phase, "batchnorm"
    if "Depthwise" in op_type:
        return phase, "depthwise conv"
    if "Conv2D" in op_type:
        return phase, "conv"
    if "BatchMatMul" in op_type or "Softmax" in op_type or "/take" in op_name.lower():
        return phase, "attention"
    if re.search(r"Slice|Split|Concat|Pad|Transpose|Reshape", op_type):
        return phase, "slice/concat"
    if re.fullmatch(r"(_Mkl)?(Mul|AddV2|AddN|Add|Sub|Relu|ReluGrad|Sum|Mean|Square|SquaredDifference|Sigmoid|"
                    r"SigmoidGrad|Tile|Maximum|RealDiv|Rsqrt|RsqrtGrad|BiasAdd|BiasAddGrad)", op_type):
        return phase, "elementwise"
    return phase, "other"


def read_trace(logdir, optimizer="adam_w"):
    """{(phase, group): picoseconds}, {phase: kernel count} from the newest trace under ``logdir``."""
    from keras_evit.compat import profiler_xspace

    paths = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)
    if not paths:
        raise RuntimeError(f"no profiler trace under {logdir}")
    space = profiler_xspace()
    with open(paths[-1], "rb") as f:
        space.ParseFromString(f.read())
    totals, counts = collections.Counter(), collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                op_name, sep, op_type = name.rpartition(":")
                if not sep or "::" in name:  # executor bookkeeping (ExecutorState::Process) wraps kernels
                    continue
                key = op_group(op_name, op_type, optimizer)
                totals[key] += event.duration_ps
                counts[key[0]] += 1
    return totals, counts


def profile(variant="m0", batch_size=32, image_size=224, steps=5, warmup=3, mixed=False):
    """Profiles ``steps`` graph-mode ``fit`` steps (AdamW + cross-entropy, random data) after ``warmup``;
    ``mixed``: under `keras-evit train --mixed-precision`'s policy."""
    import keras
    import tensorflow as tf

    from .training import keras_training_setup

    model, data = keras_training_setup(variant, batch_size, image_size, jit=False, mixed=mixed)
    model.fit(data, steps_per_epoch=warmup, epochs=1, verbose=0)
    with tempfile.TemporaryDirectory() as logdir:
        started = time.perf_counter()
        tf.profiler.experimental.start(logdir)
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
        tf.profiler.experimental.stop()
        wall = (time.perf_counter() - started) / steps
        totals, counts = read_trace(logdir, model.optimizer.name)
    rows = [{"phase": phase, "group": group, "ms_per_step": ps / 1e9 / steps}
            for (phase, group), ps in sorted(totals.items(), key=lambda kv: -kv[1])]
    return {"model": variant, "batch_size": batch_size, "image_size": image_size, "steps": steps,
            "policy": model.dtype_policy.name,
            "wall_ms_per_step_profiled": wall * 1e3, "kernels_per_step": {k: v / steps for k, v in counts.items()},
            "rows": rows, "tensorflow": tf.__version__, "keras": keras.__version__}


def read_profile(path):
    """A profile JSON saved by ``--profile --json``, checked before it is drawn."""
    try:
        with open(path) as f:
            saved = json.load(f)
        rows = saved["rows"]
        ok = isinstance(rows, list) and all(
            r["phase"] in ("forward", "backward", "optimizer") and r["group"] in GROUPS
            and float(r["ms_per_step"]) >= 0 for r in rows)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a saved step profile ({type(e).__name__}: {e}); pass a file written by "
                         "keras-evit bench --train --profile --json") from None
    if not ok:
        raise ValueError(f"{path}: not a saved step profile (unknown phase/group or a negative time)")
    return saved


def format_table(result):
    lines = [f"{result['model']} batch {result['batch_size']} at {result['image_size']} px, TF graph, "
             f"{result.get('policy', 'float32')}: kernel ms per step (thread-time)",
             f"{'phase':<10} {'group':<16} {'ms/step':>8} {'share':>6}", "-" * 43]
    total = sum(r["ms_per_step"] for r in result["rows"])
    for r in result["rows"]:
        lines.append(f"{r['phase']:<10} {r['group']:<16} {r['ms_per_step']:8.1f} {r['ms_per_step'] / total:6.1%}")
    lines.append(f"{'total':<27} {total:8.1f}   (wall {result['wall_ms_per_step_profiled']:.0f} ms/step "
                 "while tracing)")
    return "\n".join(lines)


def plot(results, path):
    """One stacked bar per profile (e.g. before / after), segments = op groups, hatched by phase."""
    from keras_evit.utils import atomic_output, pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(3 + 1.8 * len(results), 4.5))
    colors = dict(zip(GROUPS, plt.get_cmap("tab10").colors))
    hatches = {"forward": None, "backward": "//", "optimizer": ".."}
    labels = [r.get("label", r["model"]) for r in results]
    for k, result in enumerate(results):
        bottom = 0.0
        for group in GROUPS:
            for phase in ("forward", "backward", "optimizer"):
                ms = sum(r["ms_per_step"] for r in result["rows"] if r["group"] == group and r["phase"] == phase)
                if ms <= 0:
                    continue
                ax.bar(k, ms, 0.6, bottom=bottom, color=colors[group], hatch=hatches[phase], edgecolor="white",
                       label=group if k == 0 and phase == "forward" else None)
                bottom += ms
    ax.set_xticks(range(len(results)), labels)
    ax.set_ylabel("kernel ms per training step (both threads)")
    ax.set_title("Keras fit step, TF graph (hatched: backward; dotted: optimizer)", fontsize=9)
    handles, names = ax.get_legend_handles_labels()
    ax.legend(handles, names, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def main(args):
    """``--profile``; ``--profile-compare OLD.json`` draws that saved profile beside this one."""
    variant = args.model.split(",")[0].strip()
    runtime = (args.train_runtimes or "keras").strip()
    if runtime not in ("keras", "keras-mixed"):
        raise ValueError(f"--profile takes --train-runtimes keras (float32) or keras-mixed, not {runtime!r}")
    result = profile(variant, args.train_batch_size, args.image_size, steps=args.train_steps,
                     warmup=args.train_warmup, mixed=runtime == "keras-mixed")
    result["label"] = args.profile_label or variant
    from .cpu import cpu_facts

    result["machine"] = cpu_facts()  # which CPU: its instructions decide e.g. what bfloat16 costs
    print(format_table(result))
    results = [read_profile(args.profile_compare), result] if args.profile_compare else [result]
    from keras_evit.utils import write_reports

    write_reports(args, result, lambda path: plot(results, path))
    return 0

