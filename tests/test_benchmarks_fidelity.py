"""python -m keras_evit.benchmarks.fidelity: each quantization's top-1 and agreement with Keras, as a user runs it."""

import json
import os
import subprocess
import sys

import pytest

import keras_evit as ke

from conftest import HYMENOPTERA, missing, randomize, run_python


@pytest.mark.slow  # two conversions and a run of the tool in a fresh process
def test_fidelity_reports_each_mode_on_a_folder(tmp_path):
    if not os.path.isdir(HYMENOPTERA):
        missing(f"{HYMENOPTERA} is missing (set KERAS_EVIT_DATA to the shared data folder)")
    model = randomize(ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3), classes=2))
    path = str(tmp_path / "model.keras")
    model.save(path)
    report, plot = str(tmp_path / "fidelity.json"), str(tmp_path / "fidelity.png")
    out = run_python(["-m", "keras_evit.benchmarks.fidelity", "--weights", path, "--data", f"folder:{HYMENOPTERA}",
                      "--limit", "12", "--calibration-limit", "8", "--modes", "none,int8-mixed", "--json", report,
                      "--plot", plot])
    rows = {row["mode"]: row for row in json.load(open(report))["rows"]}
    assert list(rows) == ["keras", "none", "int8-mixed"] and "int8-mixed" in out, out
    assert rows["none"]["agreement"] == 1.0 and rows["none"]["top1"] == rows["keras"]["top1"]
    assert 0 <= rows["int8-mixed"]["agreement"] <= 1 and rows["int8-mixed"]["bytes"] < rows["none"]["bytes"]
    assert open(plot, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # outputs are checked before any work: the report may not replace the model it reads
    proc = subprocess.run([sys.executable, "-m", "keras_evit.benchmarks.fidelity", "--weights", path, "--data",
                           "digits", "--json", path], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "--json" in proc.stderr, proc.stderr[-2000:]
    assert open(path, "rb").read(4) == b"PK\x03\x04"  # still the model (a zip)
