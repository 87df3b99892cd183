"""Learning curves of a run (loss and accuracy per epoch) as a PNG."""

import csv
import io
import math

from keras_evit.regular_file import FileTooLarge, NotRegularFile, read_regular

MAX_CSV_BYTES = 16 << 20  # one short row per epoch: a few KB for the paper's 300 epochs
LOSSES = ("loss", "val_loss")
ACCURACIES = ("accuracy", "val_accuracy", "val_top5")


def _number(text):
    """A cell as a float; NaN (a gap in the curve) for what is not a number: Keras' CSVLogger writes "NA" for
    a metric missing from an epoch, and a row cut short by a killed run lacks its last cells."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def read_curves(csv_path):
    """(epochs, {column: values}) from the run's CSVLogger file. An epoch logged twice (a run resumed after it
    was logged) keeps its last row; a row without a whole epoch number is skipped. ValueError when the file
    cannot be read as a CSV of at most ``MAX_CSV_BYTES``."""
    try:
        data = read_regular(csv_path, MAX_CSV_BYTES)
    except (NotRegularFile, FileTooLarge, FileNotFoundError):
        raise ValueError(f"{csv_path} is not a regular file of at most {MAX_CSV_BYTES:,} bytes") from None
    except OSError as exc:
        raise ValueError(f"cannot read {csv_path} ({exc})") from None
    try:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"cannot read {csv_path} ({type(exc).__name__}: {exc})") from None
    by_epoch = {}
    for row in rows:
        epoch = _number(row.get("epoch"))
        if math.isfinite(epoch) and 0 <= epoch == int(epoch):
            by_epoch[int(epoch)] = row
    epochs = sorted(by_epoch)
    columns = [key for key in (*LOSSES, *ACCURACIES) if any(key in row for row in by_epoch.values())]
    return [e + 1 for e in epochs], {key: [_number(by_epoch[e].get(key)) for e in epochs] for key in columns}


def plot_curves(csv_path, png_path, log=print):
    """Writes ``png_path`` from the run's metrics; a metrics file that cannot be read is reported through
    ``log`` and skipped: the run's model is saved already, and a plot is not worth failing it."""
    from keras_evit.utils import atomic_output, pyplot

    try:
        epochs, curves = read_curves(csv_path)
    except ValueError as exc:
        log(f"WARNING: no learning curves plotted: {exc}")
        return
    if not epochs:
        return
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, keys in ((ax1, LOSSES), (ax2, ACCURACIES)):
        for key in keys:
            if key in curves:
                ax.plot(epochs, curves[key], label=key)
        ax.set_xlabel("epoch")
        ax.legend()
    ax1.set_title("loss"), ax2.set_title("accuracy")
    fig.tight_layout()
    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
