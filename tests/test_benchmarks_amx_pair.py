import json

import numpy as np
import pytest

from keras_evit.benchmarks import amx_pair
from keras_evit.benchmarks.cpu import amx_granted


def _int8_file(path):
    """A small full-integer .tflite (two convolutions and a dense layer): what XNNPACK runs with int8 kernels."""
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((32, 32, 8)), keras.layers.Conv2D(64, 3, activation="relu"),
                              keras.layers.Conv2D(64, 1), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(10)])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.RandomState(0)
    converter.representative_dataset = lambda: ([rng.rand(1, 32, 32, 8).astype("float32")] for _ in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path.write_bytes(converter.convert())
    return str(path)


def test_amx_and_vnni_processes_take_turns_on_the_same_file(tmp_path, capsys):
    path = _int8_file(tmp_path / "int8.tflite")
    out = tmp_path / "pair.json"
    for bad in (["--rounds", "0"], ["--threads", "0"]):  # refused before any process starts
        with pytest.raises(SystemExit):
            amx_pair.main([path, *bad, "--json", str(out)])
    assert "--rounds must be 1..1000" in capsys.readouterr().err and not out.exists()
    code = amx_pair.main([path, "--rounds", "3", "--json", str(out), "--plot", str(tmp_path / "pair.png")])
    if not amx_granted():  # nothing to compare on a CPU without AMX: said so, nothing written
        assert code == 2 and "no AMX tiles" in capsys.readouterr().err and not out.exists()
        return
    assert code == 0
    row, = json.loads(out.read_text())["rows"]
    assert row["amx_kernels"] == "AMX tiles" and row["vnni_kernels"] == "AVX-512 VNNI (AMX denied)"
    assert row["rounds"] == 3 and row["amx_ms"] > 0 and row["vnni_ms"] > 0 and row["amx_over_vnni"] > 0
    assert "AMX / VNNI" in capsys.readouterr().out and (tmp_path / "pair.png").stat().st_size > 0
