"""The checkpoint readers are safe by construction: crafted files are refused with the file named, in a
child process so that a crash would fail the test instead of killing the suite."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import require

HERE = os.path.dirname(os.path.abspath(__file__))


def run_child(code, timeout=300):
    """Runs ``code`` in a fresh Python with tests/ on the path; returns (returncode, output)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "numpy",  # the readers need no TensorFlow
           "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=timeout, env=env, cwd=HERE)
    return result.returncode, result.stdout + result.stderr


def _printed(out, key):
    """The number a child printed after ``key``."""
    return float(out.split(key)[1].split()[0])


MEASURED_LOAD = """
import peak_memory
before = peak_memory.start()
try:
    {load}
    print("LOADED")
except CheckpointError as exc:
    print("REFUSED", exc)
print("FILE_KB", os.path.getsize(path) / 1024)
print("GROWN_MB", peak_memory.grown_mb(before))
"""


def run_measured_load(setup, load, timeout=300):
    """In a fresh process: ``setup`` (which writes the file ``path`` and imports ``CheckpointError``), then
    ``load`` under a peak-memory measurement. Returns the output: LOADED or REFUSED (with the error),
    FILE_KB (the file's size) and GROWN_MB (peak RSS growth during the load)."""
    code = "import os\n" + textwrap.dedent(setup) + MEASURED_LOAD.format(load=load)
    rc, out = run_child(code, timeout=timeout)
    assert rc == 0, out[-3000:]
    return out


def test_property_based_fuzz_of_every_reader():
    """hypothesis over sizes, strides, offsets, member lengths, zip bombs, truncations, byte flips and
    pickle floods, in a child process whose peak memory is measured."""
    require("hypothesis")
    require("torch")
    result = subprocess.run([sys.executable, os.path.join(HERE, "fuzz_checkpoint.py"), "150"], capture_output=True,
                            text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "numpy"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]  # rc -11 would be a segfault
    for name in ("fuzz_torch_layouts", "fuzz_zip_bomb_and_truncation", "fuzz_byte_flips", "fuzz_pickle_floods"):
        assert name in result.stdout
    # memory: pickle floods of up to 3 M opcodes and far memo slots, through both readers, cost little
    assert _printed(result.stdout, "PEAK_GROWTH_MB") < 400, result.stdout[-2000:]


CRAFTED_LAYOUTS = [  # (size, stride, storage offset, storage elements, expected refusal)
    ([1000000], [1], 0, 4, "reads element"),              # far past the storage: once a segfault
    ([4], [1], 3, 4, "reads element"),                    # a small overrun: once process memory as weights
    ([4], [-1], 3, 4, "negative"),
    ([2, 2], [2 ** 62, 1], 0, 4, "reads element"),        # an overflowing stride
    ([10 ** 9], [0], 0, 4, "overlapping strides"),        # 4 bytes expanded to 4 GB
]


@pytest.fixture(scope="module")
def crafted_layout_outputs():
    """What both readers say of every crafted layout, from one child process (a crash fails them all)."""
    code = f"""
        import numpy as np
        from fuzz_checkpoint import _Tensor, torch_zip
        from keras_evit.weights.checkpoint import CheckpointError, read_checkpoint
        for case, (size, stride, offset, numel, _) in enumerate({CRAFTED_LAYOUTS!r}):
            path = torch_zip({{"w": _Tensor("0", numel, offset, size, stride)}},
                             {{"0": np.arange(numel, dtype=np.float32).tobytes()}}, args=True)
            for prefer_torch in (True, False):
                try:
                    read_checkpoint(path, prefer_torch=prefer_torch)
                    print(f"CASE {{case}} LOADED")
                except CheckpointError as exc:
                    assert path in str(exc), exc
                    print(f"CASE {{case}} REFUSED", prefer_torch, str(exc).replace(chr(10), " "))
    """
    code_rc, out = run_child(code)
    assert code_rc == 0, out[-3000:]
    return out


@pytest.mark.xdist_group("crafted_layouts")  # one child process answers them all
@pytest.mark.parametrize("case", range(len(CRAFTED_LAYOUTS)))
def test_crafted_tensor_layouts_are_refused(crafted_layout_outputs, case):
    lines = [line for line in crafted_layout_outputs.splitlines() if line.startswith(f"CASE {case} ")]
    assert len(lines) == 2 and all(" REFUSED " in line for line in lines), crafted_layout_outputs[-3000:]
    assert any(CRAFTED_LAYOUTS[case][-1] in line for line in lines), lines  # torch words its own refusals


def test_storage_member_that_inflates_is_not_read_whole(tmp_path):
    """A small file whose storage inflates to GBs is refused from the zip directory, before reading."""
    setup = """
        import zipfile
        from fuzz_checkpoint import _Tensor, torch_zip
        from keras_evit.weights.checkpoint import CheckpointError, read_checkpoint
        path = torch_zip({"w": _Tensor("0", 4, 0, [4], [1])}, {"0": bytes(16)}, compress=True)
        with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as z:  # a 256 MB member beside it
            with z.open("archive/data/1", "w", force_zip64=True) as f:
                block = bytes(1 << 24)
                for _ in range(16):
                    f.write(block)
        assert os.path.getsize(path) < 1_000_000
    """
    out = run_measured_load(setup, "read_checkpoint(path, prefer_torch=False)", timeout=600)
    assert "REFUSED" in out and "(a zip bomb?)" in out
    assert _printed(out, "GROWN_MB") < 200


def test_safetensors_header_listing_far_more_tensors_than_a_state_dict_is_refused_before_reading(tmp_path):
    """200,000 empty tensors (a 13 MB header; safetensors itself takes headers up to 100 MB and numpy made an
    array of each: 170 MB) are refused from the header's length."""
    setup = f"""
        import json
        from keras_evit.weights.checkpoint import CheckpointError, read_checkpoint
        header = json.dumps({{f"t{{i}}": {{"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}
                             for i in range(200_000)}}).encode()
        header += b" " * (-len(header) % 8)
        path = {str(tmp_path / "many.safetensors")!r}
        with open(path, "wb") as f:
            f.write(len(header).to_bytes(8, "little") + header)
    """
    out = run_measured_load(setup, "read_checkpoint(path)")
    assert "REFUSED" in out and "many.safetensors: its safetensors header is" in out, out[-2000:]
    assert _printed(out, "GROWN_MB") < 30, out[-2000:]


def test_non_finite_weights_are_refused_with_the_tensor_named(tmp_path):
    import keras_evit as ke
    from keras_evit.weights import CheckpointError, state_dict_from_model

    model = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3))
    state = state_dict_from_model(model)
    state["stages.0.blocks.0.mixer.m.attn.attention_biases"][0, 0] = np.nan
    path = str(tmp_path / "nan.npz")
    np.savez(path, **state)
    with pytest.raises(CheckpointError, match="attention_biases has 1 non-finite"):
        ke.EfficientViTM0(weights=path, input_shape=(64, 64, 3))
    h5 = str(tmp_path / "inf.weights.h5")
    model.get_layer("head").linear.bias.assign(np.full(1000, np.inf, np.float32))
    model.save_weights(h5)
    with pytest.raises(CheckpointError, match="non-finite"):
        ke.EfficientViTM0(weights=h5, input_shape=(64, 64, 3))


@pytest.mark.parametrize("kind", ["memo_slot", "dict_flood"])
@pytest.mark.parametrize("prefer_torch", [True, False])
def test_pickle_floods_are_refused_before_any_unpickler_runs(kind, prefer_torch):
    """A few KB of pickle that would make an unpickler allocate GBs (a memo slot at 2**26, floods of dicts)
    is refused from its opcodes, with memory bounded, whichever reader would have run."""
    if prefer_torch:
        require("torch")
    setup = f"""
        import struct, tempfile, zipfile
        from keras_evit.weights.checkpoint import CheckpointError, read_checkpoint
        if {kind!r} == "memo_slot":  # an unknown global (torch refuses it), then a store to memo slot 2**26
            pickle = b"\\x80\\x02c__main__\\nUnknown\\nr" + struct.pack("<I", 1 << 26) + b"."
        else:
            pickle = b"\\x80\\x02" + b"}}" * 900_000 + b"."  # inflates ~900x: under the zip-bomb ratio
        path = os.path.join(tempfile.mkdtemp(), "bomb.pth")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("archive/data.pkl", pickle)
            z.writestr("archive/version", "3\\n")
    """
    out = run_measured_load(setup, f"read_checkpoint(path, prefer_torch={prefer_torch})")
    assert "REFUSED" in out and "bomb.pth" in out, out[-2000:]
    assert ("memo slot 67,108,864" if kind == "memo_slot" else "more than 500,000 opcodes") in out
    assert _printed(out, "FILE_KB") < 64
    assert _printed(out, "GROWN_MB") < 100, out[-500:]


@pytest.mark.parametrize("bad", ["declared_gb", "int_weights", "many_groups", "external_file", "external_link"])
def test_weights_h5_declarations_are_checked_before_reading(bad):
    """A small .weights.h5 whose dataset declares 1.6 GB of unallocated gzip chunks (or holds int64 weights,
    or tens of thousands of empty groups) is refused from its metadata, quickly and with memory bounded."""
    setup = f"""
        import tempfile
        import h5py, numpy as np
        import keras_evit as ke
        from keras_evit.weights import CheckpointError
        path = os.path.join(tempfile.mkdtemp(), "m0.weights.h5")
        ke.EfficientViTM0(weights=None).save_weights(path)
        with h5py.File(path, "a") as f:
            names = []
            f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
            name = names[-1]
            del f[name]
            if {bad!r} == "declared_gb":
                f.create_dataset(name, shape=(400_000_000,), dtype="float32", chunks=(1 << 20,), compression="gzip")
            elif {bad!r} == "external_file":  # its values read from another file (any file, a FIFO or a device)
                np.zeros(1000, np.float32).tofile(path + ".raw")
                f.create_dataset(name, shape=(1000,), dtype="float32", external=[(path + ".raw", 0, 4000)])
            elif {bad!r} == "external_link":
                with h5py.File(path + ".other.h5", "w") as other:
                    other.create_dataset("x", data=np.zeros(1000, np.float32))
                f[name] = h5py.ExternalLink(path + ".other.h5", "/x")
            elif {bad!r} == "many_groups":
                f.create_dataset(name, data=np.zeros(1, np.float32))
                for i in range(25_000):
                    f["layers"].create_group(f"g{{i}}")
            else:
                f.create_dataset(name, data=np.zeros(1000, np.int64))
    """
    out = run_measured_load(setup, "ke.EfficientViTM0(weights=path)")
    assert "REFUSED" in out and "m0.weights.h5" in out, out[-2000:]
    assert {"declared_gb": "more than this model's weights could take", "int_weights": "holds int64 values",
            "many_groups": "more than 20,000 groups and datasets", "external_file": "from outside the file",
            "external_link": "is an HDF5 ExternalLink"}[bad] in out
    assert _printed(out, "FILE_KB") < (40 if bad == "many_groups" else 20) * 1024  # 25,000 empty groups: ~20 MB
    assert _printed(out, "GROWN_MB") < 300, out[-500:]


def test_integer_weights_are_refused_with_the_tensor_named(tmp_path):
    import keras_evit as ke
    from keras_evit.weights import CheckpointError, state_dict_from_model

    model = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3))
    state = state_dict_from_model(model)
    key = "stages.0.blocks.0.mixer.m.attn.attention_biases"
    state[key] = state[key].astype(np.int8)
    path = str(tmp_path / "int8.npz")
    np.savez(path, **state)
    with pytest.raises(CheckpointError, match=f"tensor {key} holds int8 values"):
        ke.EfficientViTM0(weights=path, input_shape=(64, 64, 3))


def test_bfloat16_pth_loads_without_torch(tmp_path):
    """A bf16 checkpoint (saved by torch here) loads in a process where torch cannot be imported."""
    torch = require("torch")
    import keras_evit as ke
    from keras_evit.weights import state_dict_from_model

    state = state_dict_from_model(ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3)), with_bn_counters=False)
    path = str(tmp_path / "bf16.pth")
    torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)).to(torch.bfloat16) for k, v in state.items()}},
               path)
    expected = {k: torch.from_numpy(np.ascontiguousarray(v)).to(torch.bfloat16).float().numpy()
                for k, v in state.items()}
    np.savez(str(tmp_path / "expected.npz"), **expected)
    rc, out = run_child(f"""
        import sys

        class NoTorch:  # no torch in this process
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is not installed here")

        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        import keras_evit as ke
        from keras_evit.weights import state_dict_from_model
        model = ke.EfficientViTM0(weights={path!r}, input_shape=(64, 64, 3))
        got = state_dict_from_model(model, with_bn_counters=False)
        expected = np.load({str(tmp_path / "expected.npz")!r})
        assert "torch" not in sys.modules
        print("MAXDIFF", max(float(np.abs(got[k] - expected[k]).max()) for k in expected.files))
    """)
    assert rc == 0, out[-3000:]
    assert _printed(out, "MAXDIFF") == 0.0


@pytest.mark.parametrize("extra,match", [({5: np.zeros(3, np.float32)}, "has a key 5 of type int"),
                                         ({"blocks2": np.zeros(3, np.float32)}, "unexpected tensors: blocks2"),
                                         ({"blocks2.x.y": np.zeros(3, np.float32)}, "unexpected tensors: blocks2.x.y")])
def test_stray_keys_are_named_not_a_traceback(tmp_path, extra, match):
    torch = require("torch")
    import keras_evit as ke
    from keras_evit import reference
    from keras_evit.weights import CheckpointError

    state = reference.official_state_dict(reference.timm_state_dict(reference.create_timm_model("m0", img_size=64)))
    state.update(extra)
    path = str(tmp_path / "odd.pth")
    torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}}, path)
    with pytest.raises(CheckpointError, match=match):
        ke.EfficientViTM0(weights=path, input_shape=(64, 64, 3))


def test_npz_member_declaring_more_than_it_holds_is_refused(tmp_path):
    """An .npy header declaring 10**10 floats over a few bytes is refused before numpy allocates."""
    import io
    import zipfile

    from keras_evit.weights import CheckpointError
    from keras_evit.weights.checkpoint import read_checkpoint

    good = io.BytesIO()
    np.save(good, np.zeros(4, np.float32))
    # the same header length: the padding absorbs the longer shape
    header = good.getvalue().replace(b"'shape': (4,), }     ", b"'shape': (10000000000,), }")
    assert header != good.getvalue()
    path = str(tmp_path / "lies.npz")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("w.npy", header)
    with pytest.raises(CheckpointError, match="declares \\(10000000000,\\) float32 .* but holds"):
        read_checkpoint(path)


def test_checkpoint_larger_than_the_variant_could_need_is_refused_before_reading(tmp_path):
    import keras_evit as ke
    from keras_evit.weights import CheckpointError

    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as f:
        f.truncate(200 << 20)  # 200 MB (sparse): M0 with optimizer state and EMA is far smaller
    with pytest.raises(CheckpointError, match="more than an efficientvit_m0 checkpoint can be"):
        ke.EfficientViTM0(weights=str(path), input_shape=(64, 64, 3))


_CHECKS = {".npz": "_check_npy_headers", ".safetensors": "_check_safetensors_header", ".pth": "_check_archive"}


@pytest.mark.parametrize("suffix", list(_CHECKS))
def test_a_checkpoint_put_in_place_after_its_checks_is_never_read(tmp_path, monkeypatch, suffix):
    """The checks and the reader see the same file: one moved into its path between them is not what loads."""
    from keras_evit.weights import checkpoint

    def save(path, value):
        weights = np.full(4, value, np.float32)
        if suffix == ".npz":
            np.savez(path, w=weights)
        elif suffix == ".safetensors":
            from safetensors.numpy import save_file

            save_file({"w": weights}, str(path))
        else:
            require("torch")
            import torch

            torch.save({"w": torch.from_numpy(weights)}, str(path))

    path, other = tmp_path / f"w{suffix}", tmp_path / f"other{suffix}"
    save(path, 1.0)
    save(other, 2.0)
    check = getattr(checkpoint, _CHECKS[suffix])

    def check_then_swap(*args):
        result = check(*args)
        if other.exists():
            os.replace(other, path)
        return result

    monkeypatch.setattr(checkpoint, _CHECKS[suffix], check_then_swap)
    assert np.all(checkpoint.read_checkpoint(str(path))["w"] == 1.0)  # what was checked
    assert not other.exists() and np.all(checkpoint.read_checkpoint(str(path))["w"] == 2.0)  # the swap happened
