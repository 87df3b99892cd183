"""One run per run folder: a second process cannot train into a folder a live run holds."""

import os
import subprocess
import sys
import time

import pytest

from keras_evit.training.run_lock import run_dir_lock

HOLD = """
import sys, time
from keras_evit.training.run_lock import run_dir_lock
with run_dir_lock(sys.argv[1]):
    print("HELD", flush=True)
    time.sleep(60)
"""


def test_a_second_run_into_a_live_folder_is_refused_and_the_lock_dies_with_its_process(tmp_path, capsys):
    pytest.importorskip("fcntl")
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "HELD"
        with pytest.raises(ValueError, match=f"{run} is in use by a running training run \\(pid {holder.pid}\\)"):
            with run_dir_lock(str(run)):
                pass
        from keras_evit.cli import main  # the command says so, before any work

        assert main(["train", "--data", "digits", "--model", "m0", "--output", str(run), "--epochs", "1"]) == 2
        assert "is in use by a running training run" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    deadline = time.time() + 10
    with run_dir_lock(str(run)):  # killed: the kernel released its lock
        assert time.time() < deadline
    assert sorted(os.listdir(run)) == [".lock"]


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo", "folder"])
@pytest.mark.parametrize("name", [".lock", "metrics.csv"])
def test_a_run_folder_file_that_is_not_its_own_is_left_alone(tmp_path, capsys, name, kind):
    """The lock truncates its file and the metrics logger appends to its own: through a link either would
    write into another file (here a user's notes), a pipe would block. `train` refuses before any work."""
    pytest.importorskip("fcntl")
    run = tmp_path / "run"
    run.mkdir()
    notes = tmp_path / "notes.txt"
    notes.write_text("the user's")
    make = {"symlink": lambda p: p.symlink_to(notes), "hardlink": lambda p: os.link(notes, p),
            "fifo": os.mkfifo, "folder": os.mkdir}[kind]
    make(run / name)
    from keras_evit.cli import main

    started = time.time()
    assert main(["train", "--data", "digits", "--model", "m0", "--output", str(run), "--epochs", "1"]) == 2
    assert f"{run / name} is not a file of its own" in capsys.readouterr().err
    assert time.time() - started < 60  # refused before the data or the model are touched
    assert notes.read_text() == "the user's"
