"""ONNX export of models that use fastlstm modules.

ONNX has a standard ``LSTM`` operator; ``torch.onnx``'s TorchScript-based
exporter lowers ``torch.nn.LSTM`` to it (gate order and weight layout
converted). :func:`export` therefore exports a copy of the model in which
every ``fastlstm.LSTM`` / ``fastlstm.LSTMCell`` is replaced by the equivalent
torch module with the same weights; the caller's model is not modified.
"""

from __future__ import annotations

import copy
import os
import warnings

import torch
from torch import nn

from fastlstm.nn.lstm import LSTM, LSTMCell

__all__ = ["export", "to_torch_modules"]


def to_torch_modules(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with fastlstm modules swapped for their torch twins.

    >>> plain = to_torch_modules(nn.Sequential(fastlstm.LSTMCell(4, 8)))
    >>> type(plain[0]).__name__
    'LSTMCell'
    """
    if isinstance(model, (LSTM, LSTMCell)):
        return model.to_torch()
    model = copy.deepcopy(model)
    for name, child in list(model.named_children()):
        setattr(model, name, to_torch_modules(child))
    return model


def _check_exportable(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if isinstance(module, LSTM) and module.proj_size > 0:
            raise ValueError(
                f"fastlstm.onnx.export: module {name or '<root>'!r} has proj_size={module.proj_size}; "
                "the ONNX LSTM operator has no projection, so it cannot be exported"
            )


def export(model: nn.Module, args: tuple, path: str | os.PathLike, **kwargs) -> None:
    """Export ``model`` (which may contain fastlstm modules) to an ONNX file.

    fastlstm.LSTM layers become standard ONNX ``LSTM`` nodes. ``args`` are the
    example inputs; ``kwargs`` go to ``torch.onnx.export`` (``input_names``,
    ``output_names``, ``dynamic_axes``, ``opset_version``...). Uses the
    TorchScript-based exporter (``dynamo=False``), which needs no onnxscript.

    >>> model = fastlstm.LSTM(16, 32, batch_first=True)
    >>> fastlstm.onnx.export(model, (torch.randn(1, 10, 16),), "lstm.onnx", input_names=["x"])
    """
    if kwargs.get("dynamo"):
        raise ValueError("fastlstm.onnx.export uses the TorchScript exporter; do not pass dynamo=True")
    kwargs["dynamo"] = False
    _check_exportable(model)
    plain = to_torch_modules(model)
    plain.eval()
    with warnings.catch_warnings():
        # The exporter's generic advice about batch sizes and tracing does not
        # apply: the LSTM node reads the batch from the input's shape.
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(plain, args, os.fspath(path), **kwargs)
