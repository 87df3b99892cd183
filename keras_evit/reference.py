"""The PyTorch reference (timm ``efficientvit_m*``), for parity tests and benchmarks.

Needs the ``reference`` extra (torch CPU build + timm). Nothing in the Keras model imports this.
"""

import importlib.abc
import importlib.machinery
import sys
import types

import numpy as np

from .layers.attention import attention_bias_index
from .weights.keymap import timm_to_official


class _Meta(type):
    def __getattr__(cls, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return f"{cls.__name__}.{attr}"


class _Placeholder(metaclass=_Meta):
    def __init__(self, *args, **kwargs):
        raise RuntimeError("torchvision is stubbed out here; this timm feature needs a real torchvision")


class _TorchvisionStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Satisfies timm's module-level torchvision imports; any real use raises."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def __getattr__(attr, _mod=spec.name):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return type(attr, (_Placeholder,), {"__module__": _mod})

        module.__getattr__ = __getattr__
        return module

    def exec_module(self, module):
        pass


def import_timm():
    """Imports timm, registering a torchvision stub first when the real one cannot load."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        if not any(isinstance(f, _TorchvisionStub) for f in sys.meta_path):
            sys.meta_path.insert(0, _TorchvisionStub())
    import timm

    return timm


def create_timm_model(variant, img_size=224, seed=0, randomize=True, num_classes=1000):
    """timm ``efficientvit_<variant>`` in eval mode; ``randomize`` gives non-trivial BN statistics,
    BN affine parameters and attention biases so that parity tests exercise every tensor."""
    import torch

    timm = import_timm()
    torch.manual_seed(seed)
    model = timm.create_model(f"efficientvit_{variant}", pretrained=False, img_size=img_size,
                              num_classes=num_classes)
    if randomize:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if name.endswith("bn.weight"):
                    tensor.copy_(torch.rand(tensor.shape, generator=gen) * 0.5 + 0.75)
                elif name.endswith(("bn.bias", "bn.running_mean")):
                    tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)
                elif name.endswith("bn.running_var"):
                    tensor.copy_(torch.rand(tensor.shape, generator=gen) * 0.5 + 0.75)
                elif name.endswith("attention_biases"):
                    tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.5)
    return model.eval()


def timm_state_dict(model):
    """timm model -> {key: numpy array} (persistent tensors only, as timm saves them)."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def official_state_dict(state):
    """A timm state dict in the official (Cream) checkpoint layout, ``attention_bias_idxs`` included."""
    out = {}
    for key, value in state.items():
        out[timm_to_official(key)] = value
        if key.endswith("attention_biases"):
            size = int(round(np.sqrt(value.shape[1])))
            idx_key = timm_to_official(key).replace("attention_biases", "attention_bias_idxs")
            out[idx_key] = attention_bias_index(size).astype(np.int64)
    return out


def timm_logits(model, images_nhwc):
    """Runs the reference on NHWC float images; returns numpy logits."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(images_nhwc, np.float32).transpose(0, 3, 1, 2)))
        return model(x).numpy()
