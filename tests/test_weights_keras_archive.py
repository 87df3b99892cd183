"""A .keras archive is checked before Keras builds or reads it: crafted files are refused with the file named
and memory bounded (in a child process, so that a crash or an OOM fails the test instead of the suite); real
archives, ours and users' (their own head, a saved optimizer, mixed precision), still load (a keras-hub
classifier's: tests/test_hub.py)."""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from conftest import declare_empty_gzip_dataset

HERE = os.path.dirname(os.path.abspath(__file__))


def _rewrite(src, dst, config=None, weights=None, compression=zipfile.ZIP_STORED):
    """A copy of the archive ``src`` with its config (a function of the parsed JSON) or weights file (of a path
    to a writable copy of it) changed."""
    with zipfile.ZipFile(src) as z:
        members = {name: z.read(name) for name in z.namelist()}
    if config is not None:
        members["config.json"] = json.dumps(config(json.loads(members["config.json"]))).encode()
    if weights is not None:
        h5 = dst + ".h5"
        with open(h5, "wb") as f:
            f.write(members["model.weights.h5"])
        weights(h5)
        with open(h5, "rb") as f:
            members["model.weights.h5"] = f.read()
        os.remove(h5)
    with zipfile.ZipFile(dst, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return dst


def _head_units(units):
    def change(config):
        text = json.dumps(config)
        assert '"units": 10,' in text
        return json.loads(text.replace('"units": 10,', f'"units": {units},'))
    return change


def _gzip_bomb(h5):
    """The head's kernel replaced by a dataset declaring 3.8 GB of empty gzip chunks (a few KB on disk)."""
    declare_empty_gzip_dataset(h5, lambda names: next(n for n in names if n.endswith("linear/vars/0")),
                               (192, 5_000_000), chunks=(192, 10_000))


CASES = {  # name -> (how the archive is made from an honest M0 one, what the refusal says)
    "head of 500,000 classes": (lambda src, dst: _rewrite(src, dst, config=_head_units(500_000)),
                                "but the archive holds a weights file of 9,"),
    "head of 200 million classes": (lambda src, dst: _rewrite(src, dst, config=_head_units(200_000_000)),
                                    "more than 1,073,741,824"),
    "weights declaring 3.8 GB": (lambda src, dst: _rewrite(src, dst, weights=_gzip_bomb),
                                 "more than this model's weights could take"),
    "no weights file": (lambda src, dst: _strip(src, dst, "model.weights.h5"), "holds no weights file"),
    "no config": (lambda src, dst: _strip(src, dst, "config.json"), "has no config.json"),
    "config not JSON": (lambda src, dst: _replace(src, dst, "config.json", b"{\"class_name\": "), "not valid JSON"),
    "config nested 100,000 deep": (lambda src, dst: _replace(src, dst, "config.json", b"[" * 100_000 + b"]" * 100_000),
                                   "not valid JSON (RecursionError"),
    "config of 8 MB": (lambda src, dst: _replace(src, dst, "config.json", b" " * (8 << 20) + b"{}"),
                       "more than any EfficientViT model's"),
    "config naming an unknown layer": (lambda src, dst: _rewrite(src, dst, config=_unknown_class),
                                       "does not describe a model Keras can build"),
    "weights deflated 1000x": (lambda src, dst: _padded_deflate(src, dst), "(a zip bomb?)"),
    "not a zip": (lambda src, dst: _write(dst, b"PK\x03\x04 not really"), "not a readable .keras archive"),
}


def _write(dst, data):
    with open(dst, "wb") as f:
        f.write(data)
    return dst


def _strip(src, dst, member):
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        for name in z.namelist():
            if name != member:
                out.writestr(name, z.read(name))
    return dst


def _replace(src, dst, member, data, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w", compression) as out:
        for name in z.namelist():
            out.writestr(name, data if name == member else z.read(name))
    return dst


def _unknown_class(config):
    config["config"]["layers"][-1]["class_name"] = "NoSuchLayer"
    config["config"]["layers"][-1].pop("module", None)
    config["config"]["layers"][-1].pop("registered_name", None)
    return config


def _padded_deflate(src, dst):
    """The weights file's first 4 KB and 64 MB of zeros, deflated: a 64 KB member that inflates 1000x."""
    with zipfile.ZipFile(src) as z:
        weights = z.read("model.weights.h5")
    return _replace(src, dst, "model.weights.h5", weights[:4096] + bytes(64 << 20), zipfile.ZIP_DEFLATED)


@pytest.fixture(scope="module")
def crafted_outputs(tmp_path_factory):
    """What loading each crafted archive did, from one child process: LOADED or REFUSED with the error, and its
    peak memory growth (an honest archive first, for scale)."""
    folder = tmp_path_factory.mktemp("archives")
    code = f"""
        import os, sys
        sys.path.insert(0, {HERE!r})
        import peak_memory
        import keras_evit as ke
        from keras_evit.weights.artifacts import load_keras_file
        from test_weights_keras_archive import CASES
        honest = os.path.join({str(folder)!r}, "honest.keras")
        ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3), classes=10).save(honest)
        for name, (make, _) in [("honest", (lambda src, dst: src, None)), *CASES.items()]:
            path = make(honest, os.path.join({str(folder)!r}, name.replace(" ", "_") + ".keras"))
            before = peak_memory.start()
            try:
                load_keras_file(path)
                outcome = "LOADED"
            except ValueError as exc:
                outcome = "REFUSED " + str(exc).replace(chr(10), " ")
            grown, kb = peak_memory.grown_mb(before), os.path.getsize(path) / 1024
            print(f"CASE {{name}} | {{outcome}} | GROWN_MB {{grown:.0f}} | FILE_KB {{kb:.0f}}")
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=600, env=env, cwd=HERE)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {line.split(" | ")[0][5:]: line for line in result.stdout.splitlines() if line.startswith("CASE ")}


@pytest.mark.xdist_group("crafted_archives")  # one child process answers them all
@pytest.mark.parametrize("case", list(CASES))
def test_crafted_archives_are_refused_before_keras_allocates(crafted_outputs, case):
    line = crafted_outputs[case]
    assert " | REFUSED " in line and f"{case.replace(' ', '_')}.keras" in line, line
    assert CASES[case][1] in line, line
    # before these checks: 2.7 GB for the 500,000-class head, 16 GB for the 3.8 GB dataset, an OOM kill beyond
    assert float(line.split("GROWN_MB ")[1].split()[0]) < 150, line


@pytest.mark.xdist_group("crafted_archives")
def test_the_honest_archive_of_the_same_run_loads(crafted_outputs):
    assert " | LOADED | " in crafted_outputs["honest"], crafted_outputs["honest"]


def test_users_archives_load_as_saved(tmp_path):
    """A user's model around the backbone (own Dense softmax head, compiled, optimizer state saved) and our
    model under mixed precision pass the checks and load with their weights."""
    import keras

    import keras_evit as ke
    from keras_evit.weights.artifacts import load_keras_file
    from keras_evit.weights.keras_archive import check_archive, read_config

    backbone = ke.EfficientViTM0(weights=None, include_top=False, pooling="avg", input_shape=(64, 64, 3))
    inputs = keras.Input((64, 64, 3))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(backbone(inputs)))
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy")
    # one optimizer step, as `fit` would leave it (applied eagerly: tracing a train step takes ~30 s here)
    model.optimizer.apply([keras.ops.ones_like(v) for v in model.trainable_variables], model.trainable_variables)
    path = str(tmp_path / "user.keras")
    model.save(path)
    check_archive(path, read_config(path))
    loaded = load_keras_file(path)
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)

    keras.config.set_dtype_policy("mixed_float16")
    try:
        mixed = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3), classes=5)
    finally:
        keras.config.set_dtype_policy("float32")
    path = str(tmp_path / "mixed.keras")
    mixed.save(path)
    loaded = load_keras_file(path)
    assert [w.shape for w in loaded.weights] == [w.shape for w in mixed.weights]


def test_an_archive_carrying_python_code_is_refused_and_its_code_never_runs(tmp_path):
    """A Lambda layer's function is Python bytecode in config.json: the check builds the model in Keras' safe
    mode, as ``load_model`` does, so the code is refused by name and never called."""
    import keras

    from keras_evit.weights.artifacts import load_keras_file

    marker = tmp_path / "ran"
    inputs = keras.Input((4,))
    touch = eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]")  # noqa: S307
    model = keras.Model(inputs, keras.layers.Lambda(touch)(keras.layers.Dense(2)(inputs)))
    path = str(tmp_path / "code.keras")
    model.save(path)
    assert marker.exists()  # building the model called it
    marker.unlink()
    with pytest.raises(ValueError, match="code.keras: its config.json .* Python lambda"):
        load_keras_file(path)
    assert not marker.exists()
