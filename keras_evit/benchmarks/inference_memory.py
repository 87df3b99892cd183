"""``keras-evit bench --memory``: inference memory of each runtime, each (runtime, batch) in a process of its own.

A child imports its runtime's libraries, notes its resident memory, builds the runner (model file loaded, arena
allocated), runs a few batches, and reports its peak resident memory (``VmHWM``) and the peak's rise over
the imports: what the model, its arena and its activations cost in that runtime.
"""

from .child import main as child_main
from .child import run_child

RUNS = 5  # batches run after the runner is built: arenas and caches reach their size on the first one


def _import_runtime(runtime):
    """The runtime's libraries, so the baseline holds them and the rise is the model's alone."""
    import numpy  # noqa: F401

    from .runtimes import REFERENCE

    if runtime.startswith("litert"):
        import ai_edge_litert.interpreter  # noqa: F401
    elif runtime.startswith("onnxruntime") or runtime == REFERENCE:
        import onnxruntime  # noqa: F401
    elif runtime == "torch":
        from keras_evit import reference

        reference.import_timm()
    import keras_evit.preprocessing  # noqa: F401


def measure_child(spec):
    """In a fresh process: one (runtime, batch) row with peak resident memory and its rise over the imports."""
    from keras_evit.utils import peak_resident_mb, resident_mb

    from .measure import _runner

    row = {"model": spec["variant"], "runtime": spec["runtime"], "threads": spec["threads"],
           "batch_size": spec["batch_size"]}
    _import_runtime(spec["runtime"])
    baseline = resident_mb()
    fn = _runner(spec["runtime"], spec["files"], spec["variant"], spec["threads"], spec["batch_size"],
                 spec["image_size"])
    for _ in range(RUNS):
        fn()
    peak = peak_resident_mb()
    row.update(peak_rss_mb=round(peak, 1), imports_mb=round(baseline, 1), model_mb=round(peak - baseline, 1))
    return row


def measure_memory(variant, runtimes, files, batch_sizes, image_size, threads, log):
    """Rows for every (runtime, batch), each measured in a child process of its own."""
    rows = []
    for runtime in runtimes:
        for bs in batch_sizes:
            spec = {"variant": variant, "runtime": runtime, "files": files, "batch_size": bs,
                    "image_size": image_size, "threads": threads}
            log(f"memory: {variant} {runtime} batch {bs}")
            row = run_child("keras_evit.benchmarks.inference_memory", spec, {"TF_CPP_MIN_LOG_LEVEL": "3"})
            if "error" in row:
                row = {"model": variant, "runtime": runtime, "threads": threads, "batch_size": bs, **row}
            rows.append(row)
    return rows


def compare_to_reference(rows):
    """Each row's rise over imports divided by the reference's at the same model and batch."""
    from .runtimes import REFERENCE

    ref = {(r["model"], r["batch_size"]): r["model_mb"] for r in rows if r["runtime"] == REFERENCE and "error" not in r}
    for r in rows:
        base = ref.get((r["model"], r["batch_size"]))
        if "error" not in r and base:
            r["vs_reference"] = round(r["model_mb"] / base, 3)


def format_memory_table(rows):
    lines = [f"{'model':<6} {'runtime':<20} {'batch':>5} {'peak RSS MB':>12} {'over imports MB':>16} {'x ref':>7}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['model']:<6} {r['runtime']:<20} {r['batch_size']:>5}  error: {r['error']}")
            continue
        ratio = f"{r['vs_reference']:.2f}" if "vs_reference" in r else "-"
        lines.append(f"{r['model']:<6} {r['runtime']:<20} {r['batch_size']:>5} {r['peak_rss_mb']:>12.1f} "
                     f"{r['model_mb']:>16.1f} {ratio:>7}")
    return "\n".join(lines)


def plot_memory(rows, path):
    from keras_evit.utils import save_grouped_bars

    ok = sorted((r for r in rows if "error" not in r), key=lambda r: r["batch_size"])
    ok.sort(key=lambda r: [f"{x['model']} {x['runtime']}" for x in rows].index(f"{r['model']} {r['runtime']}"))
    save_grouped_bars(path, ok, lambda r: f"{r['model']} {r['runtime']}", lambda r: f"batch {r['batch_size']}",
                      lambda r: r["model_mb"], "peak resident memory over imports (MB)",
                      "Inference memory per runtime (each in its own process)", rotation=30)


if __name__ == "__main__":
    child_main(measure_child)
