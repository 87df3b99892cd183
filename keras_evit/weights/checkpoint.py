"""Read checkpoint files into {name: numpy array} without ever executing pickled code.

``.pth`` files use torch (``weights_only=True``) when it is installed; otherwise, or when torch's
safe loader refuses an unknown global (official checkpoints also pickle their training args), a
restricted reader of the torch zip format rebuilds tensors and turns every other object into an
inert placeholder.
"""

import collections
import io
import os
import pickle
import zipfile

import numpy as np

from .zip_directory import open_zip


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupt, or does not match the model."""


_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_, "BFloat16Storage": "bfloat16",
}


# what a checkpoint may hold at most: EfficientViT-M5 is 12.5 M parameters (50 MB in fp32); a file with
# optimizer state and EMA copies is a few times that. Anything bigger is refused before it is read.
MAX_CHECKPOINT_BYTES = 1 << 30
MAX_PICKLE_BYTES = 16 << 20
# An M5 checkpoint with optimizer state and an EMA copy pickles in ~70k opcodes with memo ids below 16k; a
# pickle that needs more opcodes than this is refused before any unpickler runs, which bounds the objects
# (and memo) it could build to a few tens of MB whatever it declares.
MAX_PICKLE_OPS = 500_000
_MEMO_OPS = {"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"}
MAX_INFLATION = 1024  # torch stores members uncompressed; a member inflating more than this is a bomb
# M5's safetensors header (827 tensors) is 92 KB; safetensors itself allows 100 MB, and a header listing a
# million empty tensors (67 MB) cost 934 MB and 5 s of numpy arrays
MAX_SAFETENSORS_HEADER = 4 << 20


class _Inert:
    """Stands in for any pickled object that is not a tensor; never runs its code."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _StorageType:
    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


def _numpy_dtype(dtype):
    if dtype == "bfloat16":
        import ml_dtypes  # ships with keras

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


def _int(value, what):
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"{what} is {value!r}, not an integer")
    return value


def _rebuild_tensor(storage, offset, size, stride, *args):
    """A tensor from its storage, every index checked against the storage's real length first."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise CheckpointError("a tensor refers to something that is not a storage")
    offset = _int(offset, "tensor offset")
    size = tuple(_int(n, "tensor size") for n in size)
    stride = tuple(_int(n, "tensor stride") for n in stride)
    if len(size) != len(stride):
        raise CheckpointError(f"tensor size {size} and stride {stride} differ in rank")
    if offset < 0 or any(n < 0 for n in size) or any(st < 0 for st in stride):
        raise CheckpointError(f"negative tensor offset/size/stride ({offset}, {size}, {stride})")
    numel = int(np.prod(size, dtype=object)) if size else 1
    if numel == 0:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * st for n, st in zip(size, stride))  # exact: Python ints do not overflow
    if last >= len(storage):
        raise CheckpointError(f"tensor (offset {offset}, size {size}, stride {stride}) reads element {last} of a "
                              f"storage of {len(storage)}: the file is corrupt or crafted")
    if numel > len(storage):
        raise CheckpointError(f"tensor of {numel} elements from a storage of {len(storage)} (overlapping strides): "
                              "refused, it would multiply memory beyond the file's size")
    if not size:
        return storage[offset:offset + 1].reshape(()).copy()
    itemsize = storage.dtype.itemsize
    return np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(st * itemsize for st in stride), writeable=False).copy()


def _rebuild_parameter(data, *args):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }

    def __init__(self, file, archive, prefix, budget, byteorder="little"):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._budget = budget
        self._byteorder = ">" if byteorder == "big" else "<"
        self._storages = {}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        return _Inert

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"unknown persistent id {str(pid)[:80]}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"storage {key!r} has an unknown type")
        if not isinstance(key, str) or not key.isalnum():
            raise CheckpointError(f"storage key {str(key)[:40]!r} is not a plain name")
        if key in self._storages:
            return self._storages[key]
        dtype = _numpy_dtype(storage_type.dtype)
        nbytes = _int(numel, "storage size") * dtype.itemsize
        raw = self._read_member(f"{self._prefix}/data/{key}", nbytes)
        stored = dtype.newbyteorder(self._byteorder) if dtype.itemsize > 1 and dtype.kind != "V" else dtype
        self._storages[key] = np.frombuffer(raw, dtype=stored).astype(dtype, copy=False)
        return self._storages[key]

    def _read_member(self, name, nbytes):
        """Exactly ``nbytes`` (declared element count x item size) of member ``name``, or an error."""
        try:
            info = self._archive.getinfo(name)
        except KeyError:
            raise CheckpointError(f"storage {name} is missing from the archive") from None
        if nbytes < 0 or info.file_size != nbytes:
            raise CheckpointError(f"storage {name} holds {info.file_size} bytes but declares {nbytes}")
        self._budget[0] -= nbytes
        if self._budget[0] < 0:
            raise CheckpointError(f"storages exceed {MAX_CHECKPOINT_BYTES >> 20} MiB: not an EfficientViT checkpoint")
        with self._archive.open(info) as f:
            data = f.read(nbytes + 1)  # never more than declared, whatever the stream inflates to
        if len(data) != nbytes:
            raise CheckpointError(f"storage {name} is truncated: {len(data)} of {nbytes} bytes")
        return data


def _check_archive(archive, path):
    """Refuses archives whose members could not fit an EfficientViT checkpoint, before any is read."""
    total = 0
    for info in archive.infolist():
        if info.flag_bits & ~0x080E:  # only compression options, data descriptor, UTF-8 names: as torch's reader
            raise CheckpointError(f"{path}: member {info.filename} has zip flags {info.flag_bits:#x} (encryption, "
                                  "patch data, ...): not a PyTorch checkpoint")
        if info.volume:
            raise CheckpointError(f"{path}: member {info.filename} is on another disk of a multi-disk archive")
        with archive.open(info):  # reads and checks the member's local header against the directory
            pass
        total += info.file_size
        if info.file_size > MAX_CHECKPOINT_BYTES or total > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(f"{path}: archive members declare {total:,}+ bytes, more than any EfficientViT "
                                  f"checkpoint ({MAX_CHECKPOINT_BYTES >> 20} MiB): refused")
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_INFLATION * max(info.compress_size, 1):
            raise CheckpointError(f"{path}: member {info.filename} inflates {info.compress_size} -> "
                                  f"{info.file_size} bytes (a zip bomb?): refused")


def _check_safetensors_header(source, path):
    """Refuses a header (the JSON list of tensors) longer than any EfficientViT state dict's, before it is read."""
    with open(source, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
    if length > MAX_SAFETENSORS_HEADER:
        raise CheckpointError(f"{path}: its safetensors header is {length:,} bytes, more than any EfficientViT "
                              f"state dict's ({MAX_SAFETENSORS_HEADER:,}; crafted or corrupt?): refused")


def _check_pickle(data, path):
    """Walks the pickle's opcodes without building anything: bounded count, memo ids a pickler could write."""
    import pickletools

    count = 0
    try:
        for count, (op, arg, _) in enumerate(pickletools.genops(data), 1):
            if count > MAX_PICKLE_OPS:
                raise CheckpointError(f"{path}: its pickle runs to more than {MAX_PICKLE_OPS:,} opcodes, far more "
                                      "than any EfficientViT state dict: refused")
            if op.name in _MEMO_OPS and not 0 <= int(arg) <= count:  # a pickler numbers its memo 0, 1, 2, ...
                raise CheckpointError(f"{path}: its pickle uses memo slot {int(arg):,} after {count:,} opcodes "
                                      "(crafted to exhaust memory?): refused")
    except CheckpointError:
        raise
    except Exception as exc:  # pickletools' own errors: truncated, unknown opcode, ...
        raise CheckpointError(f"{path}: its pickle is corrupt ({exc})") from exc


def _read_pickle(archive, path):
    """(the data.pkl bytes, checked, and the archive's prefix)."""
    pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if not pkl:
        raise CheckpointError(f"{path}: not a PyTorch zip checkpoint (no data.pkl inside)")
    prefix = pkl[0][: -len("/data.pkl")] if "/" in pkl[0] else ""
    info = archive.getinfo(pkl[0])
    if info.file_size > MAX_PICKLE_BYTES:
        raise CheckpointError(f"{path}: its pickle is {info.file_size:,} bytes, too large for a state dict")
    with archive.open(info) as f:
        data = f.read(MAX_PICKLE_BYTES + 1)
    _check_pickle(data, path)
    return data, prefix


def _check_npy_headers(archive, path):
    """Each ``.npy`` member's declared shape and dtype against the bytes it holds, before numpy allocates."""
    from numpy.lib import format as npy

    for info in archive.infolist():
        with archive.open(info) as f:
            version = npy.read_magic(f)
            read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, _, dtype = read_header(f, max_header_size=10_000)
            header = f.tell() if f.seekable() else 0
        if dtype.hasobject:
            raise CheckpointError(f"{path}: member {info.filename} holds Python objects, not numbers: refused")
        declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
        if declared > info.file_size - header:
            raise CheckpointError(f"{path}: member {info.filename} declares {shape} {dtype} ({declared:,} bytes) "
                                  f"but holds {info.file_size - header:,}: refused")


def _read_torch_zip(source, path=None):
    path = path or source
    with open_zip(source, CheckpointError, name=path) as archive:
        _check_archive(archive, path)
        data, prefix = _read_pickle(archive, path)
        payload = io.BytesIO(data)
        byteorder = "little"
        if f"{prefix}/byteorder" in archive.namelist():
            with archive.open(f"{prefix}/byteorder") as f:
                byteorder = f.read(16).decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise CheckpointError(f"{path}: unknown byte order {byteorder[:16]!r} in the archive")
        return _RestrictedUnpickler(payload, archive, prefix, [MAX_CHECKPOINT_BYTES], byteorder).load()


def _read_with_torch(source, path=None):
    path = path or source
    with open_zip(source, CheckpointError, name=path) as archive:  # our own reader's limits, before torch is imported
        _check_archive(archive, path)
        _read_pickle(archive, path)
    import torch

    obj = torch.load(source, map_location="cpu", weights_only=True)
    return _tensors_to_numpy(obj)


def _tensors_to_numpy(obj):
    if isinstance(obj, dict):
        return {k: _tensors_to_numpy(v) for k, v in obj.items()}
    if hasattr(obj, "detach") and hasattr(obj, "numpy"):
        t = obj.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.numpy()
    return obj


def _flatten_arrays(obj):
    """Keep the dict structure (wrappers like 'model' are unwrapped later), drop non-arrays."""
    if isinstance(obj, dict):
        return {k: (_flatten_arrays(v) if isinstance(v, dict) else v) for k, v in obj.items()
                if isinstance(v, (dict, np.ndarray))}
    raise CheckpointError("checkpoint does not hold a dict of tensors")


def read_checkpoint(path, prefer_torch=True, max_bytes=MAX_CHECKPOINT_BYTES, sha256=None,
                    limit_name="any EfficientViT checkpoint"):
    """{key: array} (possibly nested under 'model') from .safetensors, .pth/.pt/.bin or .npz, of at most
    ``max_bytes`` (named ``limit_name`` in the refusal) and, given ``sha256``, of that SHA-256. The file is
    opened once: its checks and its reader see the same file, whatever happens to ``path`` meanwhile
    (``regular_file.pinned``)."""
    from ..regular_file import NotRegularFile, pinned

    path = os.fspath(path)
    try:
        with pinned(path) as source:
            size = os.path.getsize(source)
            if size > max_bytes:
                raise CheckpointError(f"{path} is {size:,} bytes, more than {limit_name} ({max_bytes:,} bytes): "
                                      "refused")
            if sha256 is not None and sha256_of(source) != sha256:
                raise CheckpointError(f"{path} does not match its SHA-256 {sha256} (it changed while it was "
                                      "loaded?): refused. Load it again.")
            return _read_checkpoint(source, path, prefer_torch)
    except NotRegularFile:  # a folder, or a FIFO or device a read would block on
        raise CheckpointError(f"{path} is not a regular file (a folder, pipe, device or socket): refused") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"weights file not found: {path}") from None


def sha256_of(path):
    """The hex SHA-256 of the file at ``path``, read in 1 MB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_checkpoint(source, path, prefer_torch):
    """``read_checkpoint`` of the file at ``source`` (the pinned one), named ``path`` in every message."""
    lower = path.lower()
    try:
        if lower.endswith(".safetensors"):
            _check_safetensors_header(source, path)
            from safetensors.numpy import load_file

            return load_file(source)  # safetensors checks every offset against the file itself
        if lower.endswith(".npz"):
            with open_zip(source, CheckpointError, name=path) as archive:
                _check_archive(archive, path)
                _check_npy_headers(archive, path)
            with np.load(source, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        if lower.endswith((".pth", ".pt", ".bin", ".ckpt")):
            if not zipfile.is_zipfile(source):
                raise CheckpointError(
                    f"{path} is not a readable PyTorch checkpoint (not a zip archive: truncated, corrupt, "
                    "or saved in the legacy non-zip format). Delete it and download it again.")
            obj = None
            if prefer_torch:
                try:
                    obj = _read_with_torch(source, path)
                except ImportError:
                    obj = None
                except pickle.UnpicklingError:
                    obj = None  # weights_only refused a non-tensor global: use the restricted reader
            if obj is None:
                obj = _read_torch_zip(source, path)
            return _flatten_arrays(obj)
    except CheckpointError as exc:
        if path in str(exc):
            raise
        raise CheckpointError(f"{path}: {exc}") from exc
    except FileNotFoundError:
        raise
    except Exception as exc:  # corrupt zip, bad header, truncated member, ...
        raise CheckpointError(
            f"could not read checkpoint {path}: {type(exc).__name__}: {exc}. The file is corrupt or "
            "truncated; delete it and download it again.") from exc
    raise CheckpointError(
        f"unsupported weights file {path!r}: use .weights.h5 (Keras), .safetensors (timm), "
        ".pth/.pt (official or timm PyTorch) or .npz")
