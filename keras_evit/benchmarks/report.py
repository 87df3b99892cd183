"""Bench results: ratios to the reference, the table, the plot."""

import numpy as np

from .runtimes import REFERENCE


def _cell(row):
    if row is None:
        return "-"
    if "error" in row:
        return "error"
    return f"{row['ms_per_batch']:.2f} ms" if row["batch_size"] == 1 else f"{row['img_per_s']:.0f} img/s"


def summarize(rows):
    """Adds ``vs_reference`` (speed-up over timm's ONNX on ORT, same model/threads/batch)."""
    ref = {(r["model"], r["threads"], r["batch_size"]): r for r in rows
           if r["runtime"] == REFERENCE and "error" not in r}
    for r in rows:
        base = ref.get((r["model"], r["threads"], r["batch_size"]))
        if base and "error" not in r:
            r["vs_reference"] = base["ms_per_batch"] / r["ms_per_batch"]
    return rows


def format_twins(rows):
    """Time of each shipped file over its normalized-input twin's, from alternating calls (1.00 = the
    raw-pixel input is free)."""
    ratios = [r for r in rows if "vs_normalized_twin" in r]
    if not ratios:
        return ""
    lines = ["shipped file (raw RGB in) time / normalized-input twin time (median over alternating calls):"]
    lines += [f"  {r['model']:<4} {r['runtime']:<18} threads {r['threads']} batch {r['batch_size']:>3}: "
              f"{r['vs_normalized_twin']:.3f}" for r in ratios]
    return "\n".join(lines)


def format_table(rows):
    keys = sorted({(r["model"], r["runtime"], r["threads"]) for r in rows},
                  key=lambda k: (k[0], str(k[2]), k[1]))
    batches = sorted({r["batch_size"] for r in rows})
    lookup = {(r["model"], r["runtime"], r["threads"], r["batch_size"]): r for r in rows}
    header = f"{'model':<6} {'runtime':<26} {'threads':>7} " + " ".join(
        f"{'batch ' + str(b):>14} {'x ref':>6}" for b in batches)
    lines = [header, "-" * len(header)]
    for model, runtime, threads in keys:
        cells = []
        for b in batches:
            row = lookup.get((model, runtime, threads, b))
            ratio = f"{row['vs_reference']:.2f}" if row and "vs_reference" in row else "-"
            cells.append(f"{_cell(row):>14} {ratio:>6}")
        lines.append(f"{model:<6} {runtime:<26} {str(threads):>7} " + " ".join(cells))
    return "\n".join(lines)


def plot(rows, path):
    from keras_evit.utils import atomic_output, pyplot

    plt = pyplot()

    ok = [r for r in rows if "error" not in r and r["threads"] is not None]
    batches = sorted({r["batch_size"] for r in ok})
    threads = sorted({r["threads"] for r in ok})
    fig, axes = plt.subplots(len(batches), len(threads), figsize=(6 * len(threads), 4 * len(batches)),
                             squeeze=False)
    for i, b in enumerate(batches):
        for j, t in enumerate(threads):
            ax = axes[i][j]
            sel = [r for r in ok if r["batch_size"] == b and r["threads"] == t]
            models = sorted({r["model"] for r in sel})
            runtimes = sorted({r["runtime"] for r in sel})
            width = 0.8 / max(len(runtimes), 1)
            for k, rt in enumerate(runtimes):
                vals = [next((r["img_per_s"] for r in sel if r["model"] == m and r["runtime"] == rt), 0)
                        for m in models]
                ax.bar(np.arange(len(models)) + k * width, vals, width, label=rt,
                       hatch="//" if rt == REFERENCE else None)
            ax.set_xticks(np.arange(len(models)) + 0.4 - width / 2, models)
            ax.set_title(f"batch {b}, {t} thread(s)")
            ax.set_ylabel("images / s (higher is better)")
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


