"""``keras-evit bench --input-pipeline``: images/s of the tf.data training input, against the limit.

The training input (``make_dataset(..., training=True)`` with the paper's recipe: JPEG decode, random
resized crop, flip, RandAugment, random erasing, batching, Mixup/CutMix; normalization happens inside the
model) is timed beside the limit on the same files with the same threads: decode and resize alone. Each
thread count runs in its own child process (tf.data sizes its pools per process). Prints a table, saves
JSON and a PNG, and says how many cores feed one GPU at the paper's training throughput.
"""

import json
import os
import subprocess
import sys
import time

# the paper's README: M5 trains 300 epochs of ImageNet-1k (1,281,167 images) in ~30 h on 8 V100s
PAPER_M5_IMAGES_PER_GPU_S = 300 * 1_281_167 / (30 * 3600) / 8
PIPELINES = ("training input", "limit: decode + resize")


def _dataset(kind, folder, batch, size, threads):
    import tensorflow as tf

    from keras_evit.training.data import _decode, _records, folder_source, make_dataset
    from keras_evit.training.recipe import get_recipe

    source = folder_source(folder)
    recipe = get_recipe("imagenet", image_size=size, batch_size=batch)
    if kind == PIPELINES[0]:
        ds = make_dataset(source, "train", batch, recipe, training=True)
    else:
        records, _ = _records(source, "train")
        ds = records.repeat().map(_decode, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.map(lambda x, y: (tf.image.resize(x, (size, size)), y), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options), len(source.splits["train"][0])


def _rate(spec):
    """Images per second of one pipeline after a warm-up, over at least ``seconds``."""
    ds, files = _dataset(spec["pipeline"], spec["folder"], spec["batch_size"], spec["image_size"], spec["threads"])
    batches = iter(ds)
    for _ in range(spec["warmup"]):
        next(batches)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < spec["seconds"]:
        next(batches)
        count += spec["batch_size"]
    return {"images_per_s": count / (time.perf_counter() - started), "files": files}


def _child_main():
    spec = json.loads(sys.argv[1])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(spec["threads"])
    tf.config.threading.set_intra_op_parallelism_threads(1)
    print("RESULT " + json.dumps(_rate(spec)), flush=True)
    # With one inter-op thread, deleting the iterator at exit, while numpy_function calls are in flight, was
    # seen to hang for minutes (in the map iterator's destructor); the result is out, so the process ends
    # without tearing TensorFlow down.
    sys.stderr.flush()
    os._exit(0)


def measure(folder, threads_list, batch_size=64, image_size=224, seconds=10.0, warmup=3, log=print):
    """Rows of {pipeline, threads, images_per_s, per_core}, each in a fresh child process."""
    rows = []
    for threads in threads_list:
        for pipeline in PIPELINES:
            spec = {"pipeline": pipeline, "folder": folder, "threads": threads, "batch_size": batch_size,
                    "image_size": image_size, "seconds": seconds, "warmup": warmup}
            log(f"[input] {pipeline}, {threads} thread(s) ...")
            result = subprocess.run([sys.executable, "-m", "keras_evit.benchmarks.input_pipeline", json.dumps(spec)],
                                    capture_output=True, text=True, timeout=max(600, 20 * seconds))
            if result.returncode != 0 or "RESULT " not in result.stdout:
                raise RuntimeError(f"input benchmark child failed ({result.returncode}): {result.stderr[-2000:]}")
            out = json.loads(result.stdout.split("RESULT ", 1)[1])
            rows.append({"pipeline": pipeline, "threads": threads, "images_per_s": out["images_per_s"],
                         "per_core": out["images_per_s"] / threads, "files": out["files"]})
    for row in rows:
        limit = next(r for r in rows if r["threads"] == row["threads"] and r["pipeline"] == PIPELINES[1])
        row["of_limit"] = row["images_per_s"] / limit["images_per_s"]
    return rows


def format_table(rows):
    lines = [f"{'pipeline':<26}{'threads':>8}{'img/s':>10}{'img/s/core':>12}{'of limit':>10}", "-" * 66]
    lines += [f"{r['pipeline']:<26}{r['threads']:>8}{r['images_per_s']:>10.1f}{r['per_core']:>12.1f}"
              f"{100 * r['of_limit']:>9.0f}%" for r in rows]
    best = max((r for r in rows if r["pipeline"] == PIPELINES[0]), key=lambda r: r["per_core"])
    cores = PAPER_M5_IMAGES_PER_GPU_S / best["per_core"]
    lines.append(f"\nthe paper's M5 run trains {PAPER_M5_IMAGES_PER_GPU_S:.0f} img/s per V100 (300 epochs of "
                 f"ImageNet in ~30 h on 8 GPUs): at {best['per_core']:.1f} img/s per core, {cores:.1f} cores "
                 "of this machine feed one GPU")
    return "\n".join(lines)


def plot(rows, path):
    from keras_evit.utils import atomic_output, pyplot

    plt = pyplot()
    threads = sorted({r["threads"] for r in rows})
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.38
    for i, pipeline in enumerate(PIPELINES):
        values = [next(r["per_core"] for r in rows if r["threads"] == t and r["pipeline"] == pipeline)
                  for t in threads]
        ax.bar([j + (i - 0.5) * width for j in range(len(threads))], values, width, label=pipeline)
    ax.set_xticks(range(len(threads)), [f"{t} thread(s)" for t in threads])
    ax.set_ylabel("images/s per core")
    ax.set_title("tf.data training input vs decode + resize alone")
    ax.legend()
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main(args):
    """The ``bench --input-pipeline`` command."""
    from keras_evit.utils import check_outputs, write_reports

    folder = args.input_folder or _default_folder()
    check_outputs({"--json": args.json, "--plot": args.plot}, inputs=[folder])
    rows = measure(folder, args.threads, args.train_batch_size, args.image_size, args.min_time,
                   log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(f"tf.data training input on {folder}, {args.image_size} px, batch {args.train_batch_size}:")
    print(format_table(rows))
    from .cpu import cpu_facts

    write_reports(args, {"machine": cpu_facts(), "folder": folder, "image_size": args.image_size,
                         "batch_size": args.train_batch_size, "paper_m5_images_per_gpu_s": PAPER_M5_IMAGES_PER_GPU_S,
                         "rows": rows},
                  lambda path: plot(rows, path))
    return 0


def _default_folder():
    from keras_evit.demo import find_sample_dir

    sample = find_sample_dir()
    hymenoptera = os.path.join(os.path.dirname(sample), "hymenoptera") if sample else None
    if not (hymenoptera and os.path.isdir(hymenoptera)):
        raise ValueError("pass --input-folder: a folder of class sub-folders of JPEGs (or train/ + val/)")
    return hymenoptera


if __name__ == "__main__":
    _child_main()
