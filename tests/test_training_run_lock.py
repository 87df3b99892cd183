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
