"""Bench measurements, run in a fresh child process per thread count (TensorFlow sizes its thread
pools once, at start): one runner per runtime, timed by median; the GPU large-batch protocol."""

import json
import sys
import time

import numpy as np

from .runtimes import REFERENCE, TWIN_SUFFIX


def time_call(fn, min_time, warmup=3, min_iters=5):
    """Median seconds per call after warm-up."""
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _runner(runtime, files, variant, threads, batch_size, image_size):
    """A zero-argument callable running one batch, or None when the runtime has no file."""
    x = np.random.RandomState(0).uniform(0, 255, (batch_size, image_size, image_size, 3)).astype(np.float32)
    if runtime.endswith(TWIN_SUFFIX) or runtime in (REFERENCE, "torch"):  # these take normalized images
        from keras_evit.preprocessing import normalize_images

        x = normalize_images(x)
    if runtime in ("keras", "xla"):
        import keras
        import tensorflow as tf

        import keras_evit  # noqa: F401  (registers the layers for loading)

        model = keras.models.load_model(files["keras"])
        fn = tf.function(lambda t: model(t, training=False), jit_compile=runtime == "xla")
        tx = tf.constant(x)
        return lambda: fn(tx).numpy()
    if runtime.startswith("litert"):
        from keras_evit.export.runners import TFLiteRunner

        runner = TFLiteRunner(files[f"{runtime}@{batch_size}"], threads)
        return lambda: runner(x)
    if runtime.startswith("onnxruntime") or runtime == REFERENCE:
        from keras_evit.export.runners import ONNXRunner

        runner = ONNXRunner(files[runtime], threads, layout="NCHW" if runtime == REFERENCE else "NHWC")
        return lambda: runner(x)
    if runtime == "torch":
        import torch

        from keras_evit import reference

        model = reference.create_timm_model(variant, img_size=image_size)
        tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

        def run():
            with torch.no_grad():
                return model(tx)
        return run
    raise ValueError(runtime)


def paired_ratio(fn, twin, min_time, warmup=3, min_pairs=20):
    """Median over alternating calls of time(fn) / time(twin): the two share every moment of the machine's
    drift, so their ratio holds to a few percent where separate medians do not on a shared CPU."""
    for _ in range(warmup):
        fn()
        twin()
    ratios, start = [], time.perf_counter()
    while len(ratios) < min_pairs or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        twin()
        t2 = time.perf_counter()
        ratios.append((t1 - t0) / (t2 - t1))
    return float(np.median(ratios))


ROUNDS = 5  # measurements interleave: each runtime is timed in every round, so drift hits all alike


def measure_child(spec):
    """Runs in a fresh process: sizes the thread pools, builds every (runtime, batch) runner, then times
    them in interleaved rounds (median of the rounds' medians)."""
    threads = spec["threads"]
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    rows, runners = [], []
    for runtime in spec["runtimes"]:
        for bs in spec["batch_sizes"]:
            row = {"model": spec["variant"], "runtime": runtime, "threads": threads, "batch_size": bs}
            try:
                runners.append((row, _runner(runtime, spec["files"], spec["variant"], threads, bs,
                                             spec["image_size"])))
            except Exception as exc:  # a runtime that cannot run here is reported, not fatal
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            rows.append(row)
    times = {id(row): [] for row, _ in runners}
    for round_ in range(ROUNDS):
        for row, fn in runners:
            if "error" in row:
                continue
            try:
                times[id(row)].append(time_call(fn, spec["min_time"] / ROUNDS, warmup=3 if round_ == 0 else 1))
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
    for row, _ in runners:
        if "error" not in row:
            sec = float(np.median(times[id(row)]))
            row.update(ms_per_batch=sec * 1e3, img_per_s=row["batch_size"] / sec)
    by_key = {(row["runtime"], row["batch_size"]): (row, fn) for row, fn in runners if "error" not in row}
    for (runtime, bs), (row, fn) in by_key.items():
        twin = by_key.get((runtime + TWIN_SUFFIX, bs))
        if twin is not None:
            row["vs_normalized_twin"] = paired_ratio(fn, twin[1], spec["min_time"])
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def measure_large_batch(variant, batch_size, image_size, min_time):
    """GPU protocol (paper/timm style): BN-fused model, mixed precision, large batch, TF and XLA."""
    import keras
    import tensorflow as tf

    import keras_evit as ke

    policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = ke.build_model(variant, weights=None, fused=True, classifier_activation=None,
                               input_shape=(image_size, image_size, 3))
        x = tf.random.normal((batch_size, image_size, image_size, 3))
        rows = []
        for runtime, jit in (("keras-amp", False), ("xla-amp", True)):
            fn = tf.function(lambda t: model(t, training=False), jit_compile=jit)
            sec = time_call(lambda: fn(x).numpy(), min_time, warmup=2, min_iters=3)
            rows.append({"model": variant, "runtime": runtime, "threads": None, "batch_size": batch_size,
                         "ms_per_batch": sec * 1e3, "img_per_s": batch_size / sec, "policy": policy,
                         "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU"})
        return rows
    finally:
        keras.mixed_precision.set_global_policy(previous)



if __name__ == "__main__" and "--child" in sys.argv:
    measure_child(json.loads(sys.stdin.read()))
