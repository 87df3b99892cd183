"""Property-based checks of the checkpoint readers, run as a child process by test_weights_checkpoint.py
(a crash there is a failed test, not a dead suite).

Invariant for every generated file: our reader returns exactly what the trusted reader (torch /
safetensors / numpy) returns, or raises a CheckpointError naming the file; it never crashes, never
returns out-of-bounds data, and never returns more bytes than the file holds.

    python tests/fuzz_checkpoint.py EXAMPLES
"""

import io
import os
import pickle
import struct
import sys
import tempfile
import types
import zipfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from keras_evit.weights.checkpoint import CheckpointError, read_checkpoint  # noqa: E402

TMP = tempfile.mkdtemp(prefix="fuzz-ckpt-")
EXAMPLES = int(sys.argv[1]) if len(sys.argv) > 1 and __name__ == "__main__" else 200

# --- a torch zip checkpoint written by hand, so that every field can be made hostile -----------------
_fake_utils = types.ModuleType("fakeutils")
_fake_torch = types.ModuleType("faketorch")
sys.modules["fakeutils"], sys.modules["faketorch"] = _fake_utils, _fake_torch


def _rebuild_tensor_v2(*args):
    raise AssertionError("never called: only pickled")


class FloatStorage:
    pass


class Namespace:  # training args pickled beside the weights, as official checkpoints do
    def __init__(self):
        self.lr = 1e-3


_rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "fakeutils", "_rebuild_tensor_v2"
FloatStorage.__module__ = "faketorch"
Namespace.__module__ = "fakeutils"
_fake_utils._rebuild_tensor_v2, _fake_utils.Namespace = _rebuild_tensor_v2, Namespace
_fake_torch.FloatStorage = FloatStorage


class _Tensor:
    def __init__(self, key, numel, offset, size, stride):
        self.args = (key, numel, offset, size, stride)


class _Pickler(pickle._Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, tuple) and obj and obj[0] == "STORAGE":
            _, key, numel = obj
            return ("storage", FloatStorage, key, "cpu", numel)
        return None

    def reducer_override(self, obj):
        if isinstance(obj, _Tensor):
            key, numel, offset, size, stride = obj.args
            return _rebuild_tensor_v2, (("STORAGE", key, numel), offset, tuple(size), tuple(stride), False, {})
        return NotImplemented


def torch_zip(tensors, storages, args=False, compress=False):
    """A torch-format zip: ``tensors`` {name: _Tensor}, ``storages`` {key: bytes}."""
    buffer = io.BytesIO()
    obj = {"model": tensors}
    if args:
        obj["args"] = Namespace()
    _Pickler(buffer, protocol=2).dump(obj)
    data = buffer.getvalue().replace(b"cfakeutils\n_rebuild", b"ctorch._utils\n_rebuild")
    data = data.replace(b"cfaketorch\nFloatStorage", b"ctorch\nFloatStorage")
    path = os.path.join(TMP, f"t{np.random.randint(1 << 30)}.pth")
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as z:
        z.writestr("archive/data.pkl", data)
        for key, raw in storages.items():
            z.writestr(f"archive/data/{key}", raw)
        z.writestr("archive/version", "3\n")
    return path


def trusted(path):
    """torch's own reading, or the exception it raises."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
        return {k: v.numpy() for k, v in obj["model"].items()}
    except Exception as exc:  # noqa: BLE001 - any refusal by the trusted reader
        return exc


def check(path, reference, file_bytes, original=None):
    """The invariant (see the module docstring). ``original``: for a damaged copy of a good file, what
    the file held before; when torch refuses the damaged zip (its miniz reader is stricter about zip
    metadata) we may still read it, but only if every tensor is exactly the original (CRC-checked)."""
    try:
        ours = read_checkpoint(path, prefer_torch=False)["model"]
    except CheckpointError as exc:
        assert path in str(exc), f"error does not name the file: {exc}"
        return "refused"
    if isinstance(reference, Exception) and original is not None:
        reference = original
    assert not isinstance(reference, Exception), f"we read what torch refuses ({reference!r})"
    assert set(ours) == set(reference)
    for key in ours:
        np.testing.assert_array_equal(ours[key], reference[key])
        assert ours[key].nbytes <= file_bytes, "returned more bytes than the file holds"
    return "equal"


dims = st.integers(0, 6)


@st.composite
def tensor_layouts(draw):
    rank = draw(st.integers(0, 3))
    size = [draw(dims) for _ in range(rank)]
    stride = [draw(st.integers(-3, 12)) for _ in range(rank)]
    offset = draw(st.integers(-2, 40))
    numel = draw(st.integers(0, 40))
    stored = draw(st.one_of(st.just(numel), st.integers(0, 44)))  # member length vs declared size
    return size, stride, offset, numel, stored


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(tensor_layouts(), st.booleans())
def fuzz_torch_layouts(layout, with_args):
    size, stride, offset, numel, stored = layout
    raw = np.arange(stored, dtype=np.float32).tobytes()
    path = torch_zip({"w": _Tensor("0", numel, offset, size, stride)}, {"0": raw}, args=with_args)
    outcome = check(path, trusted(path), len(raw))
    os.remove(path)
    COUNTS[outcome] = COUNTS.get(outcome, 0) + 1


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.integers(1, 200), st.integers(0, 10 ** 6))
def fuzz_zip_bomb_and_truncation(cut, seed):
    """Deflated members that inflate past their declared storage, and truncated files."""
    rng = np.random.RandomState(seed % (1 << 31))
    numel = int(rng.randint(1, 50))
    raw = np.zeros(numel + int(rng.randint(0, 3)) * 1000, np.float32).tobytes()  # maybe far more than declared
    path = torch_zip({"w": _Tensor("0", numel, 0, [numel], [1])}, {"0": raw}, compress=True)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(max(1, size - cut * int(rng.randint(0, 2))))
    outcome = check(path, trusted(path), os.path.getsize(path) + len(raw))
    os.remove(path)
    COUNTS[outcome] = COUNTS.get(outcome, 0) + 1


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.sampled_from(["pth", "safetensors", "npz"]), st.lists(st.tuples(st.integers(0, 10 ** 9), st.integers(0, 255)),
                                                               min_size=1, max_size=4))
def fuzz_byte_flips(fmt, flips):
    """Byte flips in real files of every format: equal to the trusted reader of the same bytes, or refused."""
    import torch
    from safetensors.numpy import load_file, save_file

    state = {"a.weight": np.arange(12, dtype=np.float32).reshape(3, 4), "b.bias": np.ones(5, np.float32)}
    path = os.path.join(TMP, f"flip{np.random.randint(1 << 30)}.{fmt}")
    if fmt == "pth":
        torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()}}, path)
    elif fmt == "safetensors":
        save_file(state, path)
    else:
        np.savez(path, **state)
    blob = bytearray(open(path, "rb").read())
    for position, value in flips:
        blob[position % len(blob)] = value
    open(path, "wb").write(bytes(blob))
    if fmt == "pth":
        outcome = check(path, trusted(path), len(blob), original=state)
    else:
        try:
            reference = load_file(path) if fmt == "safetensors" else dict(np.load(path, allow_pickle=False))
        except Exception as exc:  # noqa: BLE001
            reference = exc
        try:
            ours = read_checkpoint(path)
            assert not isinstance(reference, Exception), f"we read what the trusted reader refuses: {reference!r}"
            assert set(ours) == set(reference) and all(np.array_equal(ours[k], reference[k]) for k in ours)
            outcome = "equal"
        except CheckpointError as exc:
            assert path in str(exc)
            outcome = "refused"
    os.remove(path)
    COUNTS[outcome] = COUNTS.get(outcome, 0) + 1


FLOOD_OPS = {"dict": b"}", "list": b"]", "mark": b"(", "int": b"K\x07", "none": b"N", "memoize": b"N\x94"}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.sampled_from(sorted(FLOOD_OPS)), st.integers(1, 3_000_000), st.integers(-1, 1 << 31),
       st.booleans(), st.booleans())
def fuzz_pickle_floods(op, count, memo_slot, unknown_global, compress):
    """Pickles built to make an unpickler allocate: floods of one opcode, a store to a far memo slot, for
    both readers (torch's weights_only one and ours). Memory is checked by the parent from the peak RSS."""
    body = b"\x80\x04"
    if unknown_global:  # torch refuses it, so our reader runs
        body += b"c__main__\nUnknown\n"
    body += FLOOD_OPS[op] * count
    if memo_slot >= 0:
        body += b"r" + struct.pack("<I", memo_slot)
    body += b"."
    path = os.path.join(TMP, f"flood{np.random.randint(1 << 30)}.pth")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", body)
    for prefer_torch in (True, False):
        try:
            read_checkpoint(path, prefer_torch=prefer_torch)
            outcome = "read"
        except CheckpointError as exc:
            assert path in str(exc), f"error does not name the file: {exc}"
            outcome = "refused"
        COUNTS[outcome] = COUNTS.get(outcome, 0) + 1
    os.remove(path)


COUNTS = {}


def main():
    import peak_memory

    start = peak_memory.start()
    for fuzz in (fuzz_torch_layouts, fuzz_zip_bomb_and_truncation, fuzz_byte_flips, fuzz_pickle_floods):
        COUNTS.clear()
        fuzz()
        print(f"{fuzz.__name__}: up to {EXAMPLES} examples, outcomes {COUNTS}")
    grown = peak_memory.grown_mb(start)
    print(f"PEAK_GROWTH_MB {grown:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
