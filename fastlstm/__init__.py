"""fastlstm: fast, dependable LSTM kernels for PyTorch.

>>> import fastlstm
>>> lstm = fastlstm.LSTM(32, 128, num_layers=2, bidirectional=True)  # drop-in for torch.nn.LSTM
"""

import sys as _sys

from fastlstm import _ext  # noqa: F401  (loads _C, warns once if it cannot; torch-free)

__version__ = "0.1.0"

# Names that need torch. They load eagerly when torch is already imported
# (the usual `import torch; import fastlstm`) and on first access otherwise,
# so that `import fastlstm.runtime` (numpy + _C only) never imports torch.
_TORCH_API = {
    "LSTM": "fastlstm.nn",
    "LSTMCell": "fastlstm.nn",
    "QuantizedLSTM": "fastlstm.nn",
    "SparseAttention": "fastlstm.nn",
    "available_backends": "fastlstm._backends",
    "get_backend": "fastlstm._backends",
    "set_backend": "fastlstm._backends",
    "quantize_dynamic": "fastlstm.quantization",
    "export": "fastlstm.exporter",
    "ops": None,
    "reference": None,
}


def _load(name: str):
    # One name at a time: submodules import `from fastlstm import reference` while
    # fastlstm.nn is still initialising, so loading everything here would be circular.
    import importlib

    module = _TORCH_API[name]
    try:
        value = importlib.import_module(f"fastlstm.{name}") if module is None else getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        raise ImportError(f"fastlstm.{name} needs torch, which is not installed (pip install torch, or "
                          "fastlstm[torch]); the desktop runtime fastlstm.runtime runs without it") from exc
    globals()[name] = value
    return value


def _load_torch_api() -> None:
    for name in _TORCH_API:
        _load(name)


def __getattr__(name):
    if name in _TORCH_API:
        return _load(name)
    raise AttributeError(f"module 'fastlstm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_TORCH_API))


if _sys.modules.get("torch") is not None:  # None: torch was blocked (a torch-free process)
    _load_torch_api()

__all__ = [
    "LSTM",
    "LSTMCell",
    "QuantizedLSTM",
    "SparseAttention",
    "available_backends",
    "export",
    "get_backend",
    "ops",
    "quantize_dynamic",
    "reference",
    "set_backend",
]
