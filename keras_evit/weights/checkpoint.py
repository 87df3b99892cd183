"""Read checkpoint files into {name: numpy array} without ever executing pickled code.

``.pth`` files use torch (``weights_only=True``) when it is installed; otherwise, or when torch's
safe loader refuses an unknown global (official checkpoints also pickle their training args), a
restricted reader of the torch zip format rebuilds tensors and turns every other object into an
inert placeholder.
"""

import collections
import os
import pickle
import zipfile

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupt, or does not match the model."""


_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_, "BFloat16Storage": "bfloat16",
}


class _Inert:
    """Stands in for any pickled object that is not a tensor; never runs its code."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _StorageType:
    def __init__(self, name):
        self.dtype = _STORAGE_DTYPES[name]


def _numpy_dtype(dtype):
    if dtype == "bfloat16":
        import ml_dtypes  # ships with keras

        return ml_dtypes.bfloat16
    return dtype


def _rebuild_tensor(storage, offset, size, stride, *args):
    if not size:
        return storage[offset:offset + 1].reshape(())
    itemsize = storage.dtype.itemsize
    return np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)).copy()


def _rebuild_parameter(data, *args):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }

    def __init__(self, file, archive, prefix):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        return _Inert

    def persistent_load(self, pid):
        _, storage_type, key, _location, _numel = pid
        dtype = _numpy_dtype(storage_type.dtype if isinstance(storage_type, _StorageType) else np.float32)
        raw = self._archive.read(f"{self._prefix}/data/{key}")
        return np.frombuffer(raw, dtype=dtype)


def _read_torch_zip(path):
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise CheckpointError(f"{path}: not a PyTorch zip checkpoint (no data.pkl inside)")
        prefix = pkl[0][: -len("/data.pkl")] if "/" in pkl[0] else ""
        with archive.open(pkl[0]) as f:
            return _RestrictedUnpickler(f, archive, prefix).load()


def _read_with_torch(path):
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
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


def read_checkpoint(path, prefer_torch=True):
    """{key: array} (possibly nested under 'model') from .safetensors, .pth/.pt/.bin or .npz."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    lower = path.lower()
    try:
        if lower.endswith(".safetensors"):
            from safetensors.numpy import load_file

            return load_file(path)
        if lower.endswith(".npz"):
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        if lower.endswith((".pth", ".pt", ".bin", ".ckpt")):
            if not zipfile.is_zipfile(path):
                raise CheckpointError(
                    f"{path} is not a readable PyTorch checkpoint (not a zip archive: truncated, corrupt, "
                    "or saved in the legacy non-zip format). Delete it and download it again.")
            obj = None
            if prefer_torch:
                try:
                    obj = _read_with_torch(path)
                except ImportError:
                    obj = None
                except pickle.UnpicklingError:
                    obj = None  # weights_only refused a non-tensor global: use the restricted reader
            if obj is None:
                obj = _read_torch_zip(path)
            return _flatten_arrays(obj)
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise
    except Exception as exc:  # corrupt zip, bad header, truncated member, ...
        raise CheckpointError(
            f"could not read checkpoint {path}: {type(exc).__name__}: {exc}. The file is corrupt or "
            "truncated; delete it and download it again.") from exc
    raise CheckpointError(
        f"unsupported weights file {path!r}: use .weights.h5 (Keras), .safetensors (timm), "
        ".pth/.pt (official or timm PyTorch) or .npz")
