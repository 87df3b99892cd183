"""run_child: one measurement in a fresh process, its JSON row or the reason it has none."""

import os

from keras_evit.benchmarks import child
from keras_evit.benchmarks.child import run_child

# the child loads child.py by its path: importing the keras_evit package would import TensorFlow, seconds
# per child that this test does not need
CHILD = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("child", CHILD_PY)
child = importlib.util.module_from_spec(spec)
spec.loader.exec_module(child)
main = child.main

def measure(spec):
    if spec["do"] == "fail":
        raise ValueError("no such runtime: tensorrt")
    if spec["do"] == "silent":
        sys.exit(0)
    if spec["do"] == "hang":
        import time
        time.sleep(60)
    return {"echo": spec["value"], "argv": sys.argv[1:]}

main(measure)
"""


def _env(tmp_path):
    (tmp_path / "fake_child.py").write_text(f"CHILD_PY = {child.__file__!r}\n" + CHILD)
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])}


def test_the_row_comes_back_with_the_arguments(tmp_path):
    row = run_child("fake_child", {"do": "measure", "value": 3.5}, _env(tmp_path), args=["--child"])
    assert row == {"echo": 3.5, "argv": ["--child"]}


def test_a_failure_says_why(tmp_path):
    env = _env(tmp_path)
    assert run_child("fake_child", {"do": "fail"}, env) == {"error": "ValueError: no such runtime: tensorrt"}
    assert run_child("fake_child", {"do": "silent"}, env) == {"error": "the measurement printed no result"}
    assert run_child("fake_child", {"do": "hang"}, env, timeout=2) == {"error": "timed out after 2 s"}
