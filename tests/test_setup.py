"""The package as a wheel installs it: every module there, importable in a fresh process without the checkout."""

import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_imports_from_where_it_is_installed(tmp_path):
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    # built from a copy: a build writes build/ and *.egg-info beside setup.py, and a stale build/ would hide a
    # package setup.py leaves out
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__"))
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True, timeout=600, cwd=tmp_path)
    wheel, = glob.glob(str(tmp_path / "dist" / "keras_evit-*.whl"))
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    layout = {"keras_evit": "keras_evit", "keras_evit/export": "export", "keras_evit/training": "training"}
    in_checkout = {f"{installed}/{os.path.relpath(os.path.join(d, f), os.path.join(ROOT, folder))}".replace(os.sep, "/")
                   for installed, folder in layout.items()
                   for d, _, files in os.walk(os.path.join(ROOT, folder)) if "__pycache__" not in d
                   for f in files if f.endswith(".py")}
    assert shipped == in_checkout, (sorted(in_checkout - shipped), sorted(shipped - in_checkout))
    data = os.path.join(ROOT, "keras_evit", "data")  # class names, demo images, the digits data set
    data_in_checkout = {"keras_evit/data/" + os.path.relpath(os.path.join(d, f), data).replace(os.sep, "/")
                        for d, _, files in os.walk(data) for f in files}
    assert {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("keras_evit/data/")} == data_in_checkout
    target = tmp_path / "site"
    subprocess.run(pip + ["install", "--no-deps", "--target", str(target), wheel], check=True, capture_output=True,
                   timeout=600)
    # scikit-learn blocked: `--data digits` reads the copy the package ships
    probe = ("import sys; sys.modules['sklearn'] = None; "
             "import keras_evit, keras_evit.export, keras_evit.training.loop, keras_evit.benchmarks.inference, "
             "keras_evit.models.builders, keras_evit.cli.main; from keras_evit.training.data import load_source; "
             "print(keras_evit.__file__, load_source('digits').sizes)")
    env = {**os.environ, "PYTHONPATH": str(target), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().startswith(str(target)), out.stdout
    assert out.stdout.strip().endswith("{'train': 1438, 'validation': 359}"), out.stdout
