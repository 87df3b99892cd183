"""The command line starts fast and quiet: ``--help`` without TensorFlow, no start-up notes on stderr."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from keras_evit.startup_logs import is_note

from conftest import missing

NOTES = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1796242900.586203    7119 port.cc:153] oneDNN custom operations are on.",
    b"I0000 00:00:1796242900.586619    7119 cudart_stub.cc:31] Could not find cuda drivers on your machine.",
    b"E0000 00:00:1796242905.888987    7119 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
    b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
    b"appropriate compiler flags.",
]
KEPT = [b"error: image not found: x.jpg", b"E0000 00:00:1.2    7 something.cc:1] out of memory",
        b"W0000 00:00:1.2    7 op.cc:1] a real warning", b"Images 1/3", b""]


@pytest.mark.parametrize("line", NOTES)
def test_start_up_notes_are_recognised(line):
    assert is_note(line)


@pytest.mark.parametrize("line", KEPT)
def test_everything_else_is_kept(line):
    assert not is_note(line)


def _child(code, env=None):
    """Runs ``code`` in a fresh interpreter; returns (stdout, stderr) as text, carriage returns kept."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300,
                            env=dict(os.environ, **(env or {})))
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode(), result.stderr.decode()


FILTER_SCRIPT = """
import os, sys
from keras_evit.startup_logs import startup_notes_filtered
with startup_notes_filtered():
    os.write(2, b"I0000 00:00:1796242900.586203    7119 port.cc:153] oneDNN custom operations are on.\\n")
    print("kept 1", file=sys.stderr)
    os.write(2, b"progress 50%\\r")
    os.system("echo 'E0000 00:00:1.5    7 cuda_platform.cc:52] failed call to cuInit: x' >&2; echo child >&2")
    print("kept 2", file=sys.stderr)
print("after", file=sys.stderr)
"""


def test_the_filter_passes_everything_else_in_order_children_included():
    _, err = _child(FILTER_SCRIPT)
    assert err[err.index("kept 1"):] == "kept 1\nprogress 50%\rchild\nkept 2\nafter\n"


def test_tf_cpp_min_log_level_0_shows_everything():
    _, err = _child(FILTER_SCRIPT, {"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert "failed call to cuInit" in err and "oneDNN custom operations" in err


def _console_script():
    script = shutil.which("keras-evit")
    if script is None:
        missing("the keras-evit console script is not installed (pip install -e .)")
    return script


def test_help_does_not_import_tensorflow_or_keras():
    """``PYTHONPROFILEIMPORTTIME`` lists every module the real console script imports for ``--help``."""
    result = subprocess.run([_console_script(), "export", "--help"], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPROFILEIMPORTTIME="1"))
    assert result.returncode == 0 and "--quantize" in result.stdout
    imported = set(re.findall(r"\|\s+([\w.]+)$", result.stderr, re.M))
    assert "keras_evit.cli" in imported  # the listing is real
    heavy = {m for m in imported if m.split(".")[0] in ("tensorflow", "keras", "torch", "jax")}
    assert not heavy, sorted(heavy)[:10]


@pytest.mark.slow  # a whole predict run in a fresh process
def test_a_command_prints_no_tensorflow_start_up_notes(sample_dir, tmp_path):
    """A whole command, as the console script runs it: its stderr holds only what keras-evit says."""
    weights = tmp_path / "m0.weights.h5"
    _child(f"import keras_evit as ke; ke.EfficientViTM0(weights=None).save_weights({str(weights)!r})")
    image = os.path.join(sample_dir, "n01440764_tench.JPEG")
    result = subprocess.run([_console_script(), "predict", image, "missing.jpg", "--model", "m0",
                             "--weights", str(weights)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "n01440764_tench.JPEG" in result.stdout
    assert result.stderr == "error: image not found: missing.jpg\n"


def test_library_import_registers_the_layers_at_once():
    """``import keras_evit`` (not the console script) still registers every layer for load_model."""
    out, _ = _child("import keras, keras_evit; "
                    "print(keras.saving.get_registered_object('keras_evit>CascadedGroupAttention') is not None)")
    assert out.strip() == "True"
