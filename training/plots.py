"""Learning curves of a run (loss and accuracy per epoch) as a PNG."""


def plot_curves(csv_path, png_path):
    import csv

    from keras_evit.utils import atomic_output, pyplot

    plt = pyplot()

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "val_loss"):
        if key in rows[0]:
            ax1.plot(epochs, [float(r[key]) for r in rows], label=key)
    for key in ("accuracy", "val_accuracy", "val_top5"):
        if key in rows[0]:
            ax2.plot(epochs, [float(r[key]) for r in rows], label=key)
    ax1.set_xlabel("epoch"), ax2.set_xlabel("epoch"), ax1.legend(), ax2.legend()
    ax1.set_title("loss"), ax2.set_title("accuracy")
    fig.tight_layout()
    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
