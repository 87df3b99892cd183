"""``keras-evit bench --train --memory``: peak memory of training, Keras ``fit`` (graph and XLA, and on Keras'
PyTorch backend) beside timm in PyTorch eager, same variant, batch, size, optimizer and loss (the setups of
``bench --train``).

Each (runtime, variant, batch) runs in a process of its own: it imports its framework, notes its resident
memory, builds the model and optimizer, runs a few steps on one random batch held in memory, and reports its
peak resident memory (``VmHWM``), the peak's rise over the imports (weights, optimizer state, activations
kept for the backward pass, workspace), and the framework's own allocator peak where it keeps one
(TensorFlow's CPU allocator does; PyTorch's CPU allocator keeps no statistics).
"""

import sys

from keras_evit.utils import peak_resident_mb, resident_mb

from .child import main as child_main
from .cpu import cpu_facts
from .child import run_child

RUNTIMES = ("keras", "keras-xla", "keras-remat", "keras-torch", "timm", "timm-remat")  # see benchmarks.training
DEFAULT_RUNTIMES = ("keras", "keras-xla", "keras-remat", "timm", "timm-remat")
REFERENCE = "timm"


def keras_saved_for_backward_mb(model, x, y):
    """MB of activations a Keras training step keeps for its backward pass: the forward tensors (model input
    included, weights not) that the gradient graph reads, from the traced TensorFlow graph."""
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    marks = {}

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        marks["forward"] = len(tf.compat.v1.get_default_graph().get_operations())
        return tape.gradient(loss, model.trainable_variables)

    ops = step.get_concrete_function(x, y).graph.get_operations()
    forward = {id(op) for op in ops[:marks["forward"]]}
    kept = {}
    for op in ops[marks["forward"]:]:
        for t in op.inputs:
            if (id(t.op) in forward and t.dtype.is_floating and t.shape.is_fully_defined()
                    and t.op.type not in ("ReadVariableOp", "Const")):
                kept[t.name] = t.shape.num_elements() * t.dtype.size
    return sum(kept.values()) / 2**20


def timm_saved_for_backward_mb(model, x, y):
    """The same for timm: tensors autograd saves during the forward pass (input included, parameters not)."""
    return torch_saved_for_backward_mb(model, model.parameters(), x, y)


def torch_saved_for_backward_mb(forward, parameters, x, y):
    """MB of the tensors autograd saves while ``forward(x)`` and its cross-entropy run on PyTorch (input included,
    ``parameters`` not): timm's model, or a Keras model on Keras' PyTorch backend."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in parameters}
    kept = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.nn.functional.cross_entropy(forward(x), y)
    return sum(kept.values()) / 2**20


def measure_child(spec):
    """In a fresh process: one row with peak resident memory, its rise over the imports and the allocator peak."""
    from .training import keras_training_setup, timm_training_setup

    runtime, variant, batch, size = spec["runtime"], spec["variant"], spec["batch_size"], spec["image_size"]
    row = {"model": variant, "runtime": runtime, "batch_size": batch, "image_size": size, "steps": spec["steps"]}
    if runtime.startswith("keras"):
        on_torch = runtime == "keras-torch"
        if on_torch:
            import torch
        else:
            import tensorflow as tf

        import keras_evit  # noqa: F401
        from keras_evit.training.release_memory import ReleaseFreedMemory

        baseline = resident_mb()
        model, data = keras_training_setup(variant, batch, size, jit=runtime == "keras-xla",
                                           remat=runtime == "keras-remat")
        # as `keras-evit train` runs: memory freed while the step is built goes back to the system
        model.fit(data, steps_per_epoch=spec["steps"], epochs=1, verbose=0, callbacks=[ReleaseFreedMemory()])
        row["allocator_peak_mb"] = (None if on_torch  # PyTorch's CPU allocator keeps no statistics
                                    else round(tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**20, 1))
        peak = peak_resident_mb()  # before the analysis below, which runs a step of its own
        if on_torch:
            x, y = (torch.from_numpy(t) for t in data[0])
            kept = torch_saved_for_backward_mb(lambda t: model(t, training=True), [w.value for w in model.weights],
                                               x, y.long())
        else:
            kept = keras_saved_for_backward_mb(model, *next(iter(data)))
    else:
        from keras_evit import reference

        reference.import_timm()
        baseline = resident_mb()
        step = timm_training_setup(variant, batch, size, compiled=False, remat=runtime == "timm-remat")
        for _ in range(spec["steps"]):
            step()
        row["allocator_peak_mb"] = None
        peak = peak_resident_mb()
        kept = timm_saved_for_backward_mb(step.model, *step.batch)
    row.update(peak_rss_mb=round(peak, 1), imports_mb=round(baseline, 1), train_mb=round(peak - baseline, 1),
               kept_for_backward_mb=round(kept, 1))
    return row


def _child(spec):
    from .training import BACKENDS

    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": BACKENDS.get(spec["runtime"], "tensorflow")}
    if spec["threads"]:
        env.update(OMP_NUM_THREADS=str(spec["threads"]), TF_NUM_INTRAOP_THREADS=str(spec["threads"]))
    row = run_child("keras_evit.benchmarks.training_memory", spec, env)
    if "error" in row:
        return {"model": spec["variant"], "runtime": spec["runtime"], "batch_size": spec["batch_size"], **row}
    return row


def run(variants, runtimes, batch_sizes, image_size, steps, threads, log=print):
    rows = []
    for variant in variants:
        for batch in batch_sizes:
            for runtime in runtimes:
                log(f"[bench --train --memory] {variant} {runtime} batch {batch} ...")
                rows.append(_child({"variant": variant, "runtime": runtime, "batch_size": batch,
                                    "image_size": image_size, "steps": steps, "threads": threads}))

    def rises(runtime):
        return {(r["model"], r["batch_size"]): r["train_mb"] for r in rows
                if r["runtime"] == runtime and "error" not in r}

    base, base_remat = rises(REFERENCE), rises(REFERENCE + "-remat")
    for r in rows:
        if "error" in r:
            continue
        key = (r["model"], r["batch_size"])
        if base.get(key):
            r["vs_timm"] = round(r["train_mb"] / base[key], 3)
        if r["runtime"] == "keras-remat" and base_remat.get(key):
            r["vs_timm_remat"] = round(r["train_mb"] / base_remat[key], 3)
    return rows


def format_table(rows):
    lines = [f"{'model':<6} {'runtime':<12} {'batch':>5} {'peak RSS MB':>12} {'over imports MB':>16} "
             f"{'allocator peak MB':>18} {'kept for backward MB':>21} {'x timm':>7} {'x timm-remat':>13}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['model']:<6} {r['runtime']:<12} {r['batch_size']:>5}  error: {r['error']}")
            continue
        alloc = f"{r['allocator_peak_mb']:.1f}" if r.get("allocator_peak_mb") is not None else "-"
        ratio = f"{r['vs_timm']:.2f}" if "vs_timm" in r else "-"
        ratio_remat = f"{r['vs_timm_remat']:.2f}" if "vs_timm_remat" in r else "-"
        lines.append(f"{r['model']:<6} {r['runtime']:<12} {r['batch_size']:>5} {r['peak_rss_mb']:>12.1f} "
                     f"{r['train_mb']:>16.1f} {alloc:>18} {r.get('kept_for_backward_mb', 0):>21.1f} {ratio:>7} "
                     f"{ratio_remat:>13}")
    return "\n".join(lines)


def plot(rows, path):
    from keras_evit.utils import save_grouped_bars

    ok = [r for r in rows if "error" not in r]
    size = ok[0]["image_size"] if ok else "?"
    save_grouped_bars(path, ok, lambda r: f"{r['model']} b{r['batch_size']}", lambda r: r["runtime"],
                      lambda r: r["train_mb"], "training peak resident memory over imports (MB)",
                      f"Training memory, {size} px, AdamW + CE (each in its own process; lower is better)",
                      hatched={REFERENCE, REFERENCE + "-remat"})


def main(args):
    from keras_evit.configs import get_variant
    from keras_evit.utils import check_outputs, write_reports

    check_outputs({"--json": args.json, "--plot": args.plot})
    variants = [get_variant(v.strip())[0] for v in args.model.split(",") if v.strip()]
    runtimes = [r.strip() for r in (args.train_runtimes or ",".join(DEFAULT_RUNTIMES)).split(",") if r.strip()]
    unknown = set(runtimes) - set(RUNTIMES)
    if unknown:
        raise ValueError(f"unknown training runtime(s) {sorted(unknown)} for --memory: choose from "
                         f"{', '.join(RUNTIMES)}")
    threads = args.threads[-1] if args.threads else None
    rows = run(variants, runtimes, args.batch_sizes, args.image_size, args.train_steps, threads,
               log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_table(rows))
    print("over imports: the peak's rise over the process after importing its framework (weights, optimizer "
          "state, activations kept for backward, workspace); kept for backward: the activations the backward pass "
          "reads; x timm: the rise over timm eager's at the same batch; -remat: each block recomputed in the backward "
          "pass (keras_evit.remat_scope; timm's set_grad_checkpointing), x timm-remat: keras-remat's rise over "
          "timm-remat's")
    write_reports(args, {"rows": rows, "machine": cpu_facts(),
                         "measure": "peak resident memory (VmHWM) of a process that imports its framework, builds "
                                    "model and AdamW, and runs `steps` training steps on one random batch; "
                                    "train_mb = peak minus resident memory after the imports; allocator_peak_mb: "
                                    "TensorFlow's CPU allocator peak (PyTorch's CPU allocator keeps none); "
                                    "kept_for_backward_mb: activations (input included, weights not) the "
                                    "backward pass reads, from the traced graph (Keras) or autograd's saved "
                                    "tensors (timm)"},
                  lambda path: plot(rows, path))
    return 0


if __name__ == "__main__":
    child_main(measure_child)
