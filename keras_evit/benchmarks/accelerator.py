"""The paper's GPU protocol on an accelerator without TensorFlow: Keras on its JAX backend beside timm.

``python -m keras_evit.benchmarks.accelerator``: for each variant, inference at a large batch (1024) and one
training step at a smaller one (AdamW + cross-entropy, the setups of ``bench --train``), both under mixed
precision: Keras with the ``mixed_bfloat16`` (or ``mixed_float16``) policy, timm in PyTorch eager with
``torch.autocast`` to the same half type (and ``GradScaler`` for float16, as timm's ``--amp`` trains).
Keras runs the calls its users make: ``predict_on_batch`` and ``train_on_batch`` (the jitted step ``fit``
runs); timm runs its model the way timm's own training and benchmark scripts do. Both bring inference's
logits back to the host. Inputs are random and already on the device, so the numbers are the models' and
not the host's. Each (framework, variant, task) runs in a process of its own (JAX and PyTorch each keep
their own device memory pool); each row gives images/s (median of timed calls after warm-up) and the
framework's peak device memory.

Needs only Keras, JAX, PyTorch and timm: it runs where TensorFlow is not installed. Without an accelerator
it runs on the CPU (small batches: a check of the script, not the protocol's numbers).
"""

import argparse
import sys
import time

from .child import main as child_main
from .child import run_child

FRAMEWORKS = ("keras-jax", "timm")
REFERENCE = "timm"
TASKS = ("inference", "training")
DTYPES = ("bfloat16", "float16")


def _timed(fn, min_time, warmup):
    """Median seconds per call of ``fn`` (which returns only once the device is done) after ``warmup`` calls."""
    import numpy as np

    for _ in range(warmup):
        fn()
    times, started = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - started < min_time:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), len(times)


def _keras_child(spec):
    """One row for Keras on JAX: ``predict_on_batch`` or ``train_on_batch`` at the spec's batch, in half
    precision, on device-resident random inputs."""
    import jax
    import keras
    import numpy as np

    import keras_evit as ke
    from keras_evit.optimizers import AGCAdamW

    from .training import LR, WEIGHT_DECAY

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"Keras runs on {keras.backend.backend()!r} here: set KERAS_BACKEND=jax")
    keras.mixed_precision.set_global_policy(f"mixed_{spec['dtype']}")
    batch, size = spec["batch_size"], spec["image_size"]
    rng = np.random.RandomState(0)
    x = jax.device_put(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"))
    training = spec["task"] == "training"
    # inference runs the deploy form (BatchNorm folded), as ``bench --large-batch`` does on TensorFlow
    model = ke.build_model(spec["variant"], weights=None, input_shape=(size, size, 3), classifier_activation=None,
                           fused=not training)
    if training:
        y = jax.device_put(rng.randint(0, 1000, batch).astype("int32"))
        # Keras wraps the optimizer in a LossScaleOptimizer itself under mixed_float16
        model.compile(AGCAdamW(learning_rate=LR, weight_decay=WEIGHT_DECAY),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))

        def step():
            return model.train_on_batch(x, y)  # returns the loss as a host value: the step is done
    else:
        def step():
            return model.predict_on_batch(x)  # returns numpy: the batch is done
    seconds, calls = _timed(step, spec["min_time"], spec["warmup"])
    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    peak = (stats or {}).get("peak_bytes_in_use")
    return {"device": f"{device.platform}: {getattr(device, 'device_kind', device.platform)}",
            "ms_per_batch": seconds * 1e3, "images_per_s": batch / seconds, "calls": calls,
            "peak_device_mb": None if peak is None else peak / 2**20,
            "policy": keras.mixed_precision.global_policy().name}


def _timm_child(spec):
    """One row for timm in PyTorch eager with autocast to the same half type."""
    import torch

    from keras_evit import reference

    from .training import LR, WEIGHT_DECAY

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = getattr(torch, spec["dtype"])
    batch, size = spec["batch_size"], spec["image_size"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen).to(device)
    model = reference.create_timm_model(spec["variant"], img_size=size, randomize=False).to(device)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    if spec["task"] == "training":
        model.train()
        y = torch.randint(0, 1000, (batch,), generator=gen).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype):
                loss = loss_fn(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            sync()
    else:
        model.eval()

        def step():  # the logits come back to the host, as predict_on_batch returns them
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype):
                return model(x).float().cpu()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds, calls = _timed(step, spec["min_time"], spec["warmup"])
    return {"device": f"{device.type}: {torch.cuda.get_device_name() if cuda else 'cpu'}",
            "ms_per_batch": seconds * 1e3, "images_per_s": batch / seconds, "calls": calls,
            "peak_device_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
            "autocast": spec["dtype"]}


def measure_child(spec):
    row = {k: spec[k] for k in ("framework", "variant", "task", "batch_size", "image_size", "dtype")}
    row.update((_keras_child if spec["framework"] == "keras-jax" else _timm_child)(spec))
    return row


def _child(spec, timeout):
    # JAX takes 75% of the device's memory up front unless told not to: its peak would say nothing
    row = run_child("keras_evit.benchmarks.accelerator", spec,
                    {"KERAS_BACKEND": "jax", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}, timeout, ["--child"])
    return {**spec, **row} if "error" in row else row


def run(variants, tasks, frameworks, batch_sizes, image_size, dtype, min_time, warmup, timeout, log=print):
    rows = []
    for variant in variants:
        for task in tasks:
            for framework in frameworks:
                spec = {"framework": framework, "variant": variant, "task": task, "batch_size": batch_sizes[task],
                        "image_size": image_size, "dtype": dtype, "min_time": min_time, "warmup": warmup}
                log(f"[accelerator] {variant} {task} {framework} batch {spec['batch_size']} ...")
                rows.append(_child(spec, timeout))
    base = {(r["variant"], r["task"]): r["images_per_s"] for r in rows
            if r["framework"] == REFERENCE and "error" not in r}
    for r in rows:
        ref = base.get((r["variant"], r["task"]))
        if "error" not in r and ref:
            r["vs_timm"] = r["images_per_s"] / ref
    return rows


def format_table(rows):
    lines = [f"{'model':<6} {'task':<10} {'framework':<10} {'batch':>5} {'ms/batch':>10} {'img/s':>10} "
             f"{'x timm':>7} {'peak device MB':>15}  device"]
    for r in rows:
        head = f"{r['variant']:<6} {r['task']:<10} {r['framework']:<10} {r['batch_size']:>5}"
        if "error" in r:
            lines.append(f"{head}  error: {r['error']}")
            continue
        ratio = f"{r['vs_timm']:.2f}" if "vs_timm" in r else "-"
        peak = f"{r['peak_device_mb']:.0f}" if r.get("peak_device_mb") is not None else "-"
        lines.append(f"{head} {r['ms_per_batch']:>10.2f} {r['images_per_s']:>10.1f} {ratio:>7} {peak:>15}  "
                     f"{r['device']}")
    return "\n".join(lines)


def plot(rows, path):
    from keras_evit.utils import save_grouped_bars

    ok = [r for r in rows if "error" not in r]
    dtype = ok[0]["dtype"] if ok else "?"
    save_grouped_bars(path, ok, lambda r: f"{r['variant']} {r['task']} b{r['batch_size']}",
                      lambda r: r["framework"], lambda r: r["images_per_s"], "images/s",
                      f"Keras (JAX) beside timm (PyTorch eager), {dtype} mixed precision (higher is better)",
                      hatched={REFERENCE})


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m keras_evit.benchmarks.accelerator", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="m0,m5", help="variants, comma separated (default: m0,m5)")
    p.add_argument("--tasks", default="inference,training", help="inference, training or both (default: both)")
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="keras-jax, timm or both (default: both)")
    p.add_argument("--batch-size", type=int, default=1024, help="inference batch (default: 1024)")
    p.add_argument("--train-batch-size", type=int, default=256, help="training batch (default: 256)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--dtype", default="bfloat16", choices=DTYPES, help="half type of both (default: bfloat16)")
    p.add_argument("--min-time", type=float, default=3.0, help="seconds timed per row (default: 3)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first, compilation included (default: 3)")
    p.add_argument("--timeout", type=int, default=600, help="seconds one row may take (default: 600)")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    args = p.parse_args(argv)
    for flag, value, allowed in (("--tasks", args.tasks, TASKS), ("--frameworks", args.frameworks, FRAMEWORKS)):
        unknown = {v.strip() for v in value.split(",") if v.strip()} - set(allowed)
        if unknown:
            p.error(f"{flag}: unknown {sorted(unknown)}; choose from {', '.join(allowed)}")
    for flag, value in (("--batch-size", args.batch_size), ("--train-batch-size", args.train_batch_size),
                        ("--image-size", args.image_size), ("--warmup", args.warmup), ("--timeout", args.timeout)):
        if value < 1:
            p.error(f"{flag} must be at least 1")
    return args


def main(argv=None):
    from keras_evit.configs import get_variant
    from keras_evit.utils import check_outputs, write_reports

    args = parse_args(argv)
    check_outputs({"--json": args.json, "--plot": args.plot})
    variants = [get_variant(v.strip())[0] for v in args.model.split(",") if v.strip()]
    tasks = [t for t in TASKS if t in args.tasks.split(",")]
    frameworks = [f for f in FRAMEWORKS if f in args.frameworks.split(",")]
    rows = run(variants, tasks, frameworks, {"inference": args.batch_size, "training": args.train_batch_size},
               args.image_size, args.dtype, args.min_time, args.warmup, args.timeout,
               log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_table(rows))
    print("x timm: images/s over timm's at the same task and batch; peak device MB: JAX's / PyTorch's own "
          "allocator peak on the accelerator (none on a CPU)")
    write_reports(args, {"rows": rows, "measure": "median seconds per call after warm-up, random inputs already "
                                                  "on the device; Keras: predict_on_batch / train_on_batch on "
                                                  "JAX; timm: eager PyTorch with torch.autocast"},
                  lambda path: plot(rows, path))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        child_main(measure_child)
    else:
        sys.exit(main())
