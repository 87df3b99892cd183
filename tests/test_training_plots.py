"""The learning-curve plot at the end of a run reads the run's CSVLogger file as runs leave it: a metric
logged as "NA", an epoch logged again after a resume, a row cut short by a killed run. None of these may fail
a run whose model is already saved."""

import math
import os

from keras_evit.training.plots import plot_curves, read_curves

HEADER = "epoch,accuracy,loss,val_accuracy,val_loss\n"


def test_curves_as_runs_leave_them(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(HEADER + "0,0.5,1.2,0.4,1.3\n"
                    "1,0.6,1.0,NA,NA\n"        # validation skipped that epoch
                    "1,0.65,0.9,0.5,1.1\n"     # the epoch again, after a resume
                    "2,0.7,0.8\n"              # cut short by a kill
                    "x,1,1,1,1\n")             # not an epoch
    epochs, curves = read_curves(str(path))
    assert epochs == [1, 2, 3]
    assert curves["accuracy"] == [0.5, 0.65, 0.7] and curves["val_loss"][:2] == [1.3, 1.1]
    assert math.isnan(curves["val_loss"][2]) and "val_top5" not in curves
    lines = []
    plot_curves(str(path), str(tmp_path / "curves.png"), log=lines.append)
    assert lines == [] and (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_file_that_is_not_a_csv_is_reported_not_raised(tmp_path):
    cases = {"binary.csv": lambda p: p.write_bytes(b"\xff\xfe\x00" * 100),
             "huge_field.csv": lambda p: p.write_text(HEADER + "0," + "9" * 200_000 + "\n"),
             "pipe.csv": lambda p: os.mkfifo(p)}
    for name, make in cases.items():
        make(tmp_path / name)
        lines = []
        plot_curves(str(tmp_path / name), str(tmp_path / "curves.png"), log=lines.append)
        assert len(lines) == 1 and lines[0].startswith("WARNING: no learning curves plotted"), lines
        assert name in lines[0], lines
        assert not (tmp_path / "curves.png").exists()
