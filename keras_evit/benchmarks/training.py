"""``keras-evit bench --train``: training images/s for Keras ``fit`` (graph and XLA) beside timm in
PyTorch eager (and ``torch.compile`` on request), same variant, batch, size, optimizer and loss.

Each runtime runs in a fresh child process (TensorFlow's and PyTorch's thread pools slow each other
down in one process), on random data already in memory; the best of ``--repeats`` timed windows counts.
Prints a table, saves JSON and a PNG.
"""

import sys
import time

import numpy as np

from keras_evit.training.data import without_autotuning
from keras_evit.training.loop import build_state

from .child import main as child_main
from .cpu import cpu_facts
from .child import run_child

# "-remat": each block recomputed in the backward pass (keras_evit.remat_scope; timm's set_grad_checkpointing);
# "keras-mixed": the policy `keras-evit train --mixed-precision` trains under (float16 on a GPU, else bfloat16);
# "keras-jax", "keras-torch": the same Keras `fit` on Keras' JAX (compiled, as Keras does there) and PyTorch backends
RUNTIMES = ("keras", "keras-xla", "keras-remat", "keras-mixed", "keras-jax", "keras-torch", "timm", "timm-compile",
            "timm-remat")
BACKENDS = {"keras-jax": "jax", "keras-torch": "torch"}  # the others: TensorFlow
LR, WEIGHT_DECAY = 1e-3, 0.05  # AdamW, cross-entropy: the same for every runtime


def keras_training_setup(variant, batch, size, jit, remat=False, mixed=False):
    """(compiled model, endless dataset of one random batch): the Keras side of every training measurement.
    ``mixed``: built and compiled under `keras-evit train --mixed-precision`'s policy."""
    import contextlib

    import keras

    import keras_evit as ke
    from keras_evit.optimizers import AGCAdamW

    # on JAX and PyTorch nothing here imports TensorFlow (nor does keras_evit): its ~0.5 GB is no part of training
    tensorflow = keras.backend.backend() == "tensorflow"
    if mixed:
        from keras_evit.training.loop import precision_policy  # (TensorFlow's: it asks it for a GPU)
    with precision_policy(True) if mixed else contextlib.nullcontext(), \
            ke.remat_scope() if remat else contextlib.nullcontext():
        model = ke.build_model(variant, weights=None, input_shape=(size, size, 3), classifier_activation=None)
        # the AdamW `keras-evit train` compiles (unclipped here: Keras' AdamW updates, in far fewer graph ops)
        model.compile(AGCAdamW(learning_rate=LR, weight_decay=WEIGHT_DECAY),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit)
    if tensorflow:  # as training runs do (on JAX and PyTorch Keras builds them before its first step)
        build_state(model, np.zeros((1,), "int32"), np.zeros((1, 1000), "float32"))
    rng = np.random.RandomState(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = rng.randint(0, 1000, batch).astype("int32")
    if not tensorflow:  # Keras' own input
        return model, repeated_batch(x, y)
    import tensorflow as tf
    # one batch in memory: nothing for tf.data to tune, and with autotuning on, TensorFlow 2.21 waits at the
    # end of every `fit` call for the tuning thread to wake up (up to as long again as the steps took)
    data = tf.data.Dataset.from_tensors((tf.constant(x), tf.constant(y)))
    return model, data.repeat().with_options(without_autotuning())


def repeated_batch(x, y):
    """A ``keras.utils.PyDataset`` of the batch ``(x, y)`` again and again (``fit``'s ``steps_per_epoch`` ends it;
    the length covers the most steps a window may take, and is small: Keras' PyTorch input lists every index)."""
    import keras

    class Repeated(keras.utils.PyDataset):
        def __len__(self):
            return 2 * 10_000 + 10_000  # --train-steps and --train-warmup are at most 10,000 each

        def __getitem__(self, index):
            return x, y

    return Repeated()


def _keras_rate(spec, jit, remat, mixed):
    size, batch, steps = spec["image_size"], spec["batch_size"], spec["steps"]
    from keras_evit.training.release_memory import ReleaseFreedMemory

    model, data = keras_training_setup(spec["variant"], batch, size, jit, remat, mixed)
    callbacks = [ReleaseFreedMemory()]  # as `keras-evit train` runs: it acts while the first step is built
    model.fit(data, steps_per_epoch=spec["warmup"], epochs=1, verbose=0, callbacks=callbacks)  # trace, warm up
    rates = []
    for _ in range(spec["repeats"]):
        started = time.perf_counter()
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=callbacks)
        rates.append(steps * batch / (time.perf_counter() - started))
    import keras

    return {"rates": rates, "policy": model.dtype_policy.name, "backend": keras.backend.backend()}


def timm_training_setup(variant, batch, size, compiled, remat=False):
    """A function running one AdamW + cross-entropy step of timm's model on one random batch: the timm side
    of every training measurement."""
    import torch

    from keras_evit import reference

    model = reference.create_timm_model(variant, img_size=size, randomize=False).train()
    model.set_grad_checkpointing(remat)  # timm recomputes each stage in the backward pass
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    loss_fn = torch.nn.CrossEntropyLoss()
    step_model = torch.compile(model) if compiled else model
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen)
    y = torch.randint(0, 1000, (batch,), generator=gen)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(step_model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    step.model, step.batch = model, (x, y)
    return step


def _timm_rate(spec, compiled, remat):
    steps, batch = spec["steps"], spec["batch_size"]
    step = timm_training_setup(spec["variant"], batch, spec["image_size"], compiled, remat)
    for _ in range(spec["warmup"]):
        step()
    rates = []
    for _ in range(spec["repeats"]):
        started = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * batch / (time.perf_counter() - started))
    return {"rates": rates, "policy": "float32", "backend": "pytorch (timm)"}


def measure(spec):
    """Runs in the child: images/s of each timed window, the precision policy and the backend trained on."""
    runtime = spec["runtime"]
    remat = runtime.endswith("-remat")
    if runtime.startswith("keras"):
        return _keras_rate(spec, jit=runtime in ("keras-xla", "keras-jax"), remat=remat,
                           mixed=runtime == "keras-mixed")
    return _timm_rate(spec, compiled=runtime == "timm-compile", remat=remat)


def _child(spec):
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": BACKENDS.get(spec["runtime"], "tensorflow")}
    if spec["threads"]:
        env.update(OMP_NUM_THREADS=str(spec["threads"]), TF_NUM_INTRAOP_THREADS=str(spec["threads"]))
    row = run_child("keras_evit.benchmarks.training", spec, env, timeout=3600, args=["--child"])
    if "error" in row:
        return row
    return {"img_per_s": max(row["rates"]), "repeats": row["rates"], "policy": row["policy"],
            "backend": row["backend"]}


def run(variants, runtimes, batch_size, image_size, steps, warmup, repeats, threads, log=print):
    rows = []
    for variant in variants:
        for runtime in runtimes:
            log(f"[bench --train] {variant} {runtime} ...")
            spec = {"variant": variant, "runtime": runtime, "batch_size": batch_size, "image_size": image_size,
                    "steps": steps, "warmup": warmup, "repeats": repeats, "threads": threads}
            rows.append({"model": variant, "runtime": runtime, "batch_size": batch_size, "image_size": image_size,
                         **_child(spec)})
    base = {r["model"]: r["img_per_s"] for r in rows if r["runtime"] == "timm" and "img_per_s" in r}
    for r in rows:
        if "img_per_s" in r and r["model"] in base:
            r["vs_timm"] = r["img_per_s"] / base[r["model"]]
    return rows


def format_table(rows):
    lines = [f"{'model':<6} {'runtime':<13} {'backend':<15} {'policy':<15} {'train img/s':>12} {'x timm':>7}",
             "-" * 73]
    for r in rows:
        rate = f"{r['img_per_s']:.1f}" if "img_per_s" in r else "error"
        ratio = f"{r['vs_timm']:.2f}" if "vs_timm" in r else "-"
        lines.append(f"{r['model']:<6} {r['runtime']:<13} {r.get('backend', '-'):<15} {r.get('policy', '-'):<15} "
                     f"{rate:>12} {ratio:>7}")
        if "error" in r:
            lines.append(f"    {r['error']}")
    return "\n".join(lines)


def plot(rows, path):
    from keras_evit.utils import save_grouped_bars

    ok = sorted((r for r in rows if "img_per_s" in r), key=lambda r: (r["model"], RUNTIMES.index(r["runtime"])))
    b = ok[0] if ok else {"batch_size": "?", "image_size": "?"}
    save_grouped_bars(path, ok, lambda r: r["model"], lambda r: r["runtime"], lambda r: r["img_per_s"],
                      "training images / s (higher is better)",
                      f"training throughput, batch {b['batch_size']}, {b['image_size']} px, AdamW + CE",
                      hatched={rt for rt in RUNTIMES if rt.startswith("timm")})


def main(args):
    from keras_evit.configs import get_variant

    variants = [get_variant(v.strip())[0] for v in args.model.split(",") if v.strip()]
    runtimes = [r.strip() for r in (args.train_runtimes or "keras,keras-xla,timm").split(",") if r.strip()]
    unknown = set(runtimes) - set(RUNTIMES)
    if unknown:
        raise ValueError(f"unknown training runtime(s) {sorted(unknown)}: choose from {', '.join(RUNTIMES)}")
    threads = args.threads[-1] if args.threads else None
    rows = run(variants, runtimes, args.train_batch_size, args.image_size, args.train_steps, args.train_warmup,
               args.train_repeats, threads, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_table(rows))
    from keras_evit.utils import write_reports

    write_reports(args, {"rows": rows, "machine": cpu_facts(), "optimizer": "AdamW", "lr": LR,
                         "weight_decay": WEIGHT_DECAY}, lambda path: plot(rows, path))
    return 0


if __name__ == "__main__" and "--child" in sys.argv:
    child_main(measure)
