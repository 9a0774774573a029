"""``quantize_dynamic``: swap float LSTM (and optionally Linear) modules for int8 ones."""

from __future__ import annotations

import copy

import torch
from torch import nn

from fastlstm.nn.lstm import LSTM as _FastLSTM
from fastlstm.nn.quantized import QuantizedLinear, QuantizedLSTM


def _is_lstm(m: nn.Module) -> bool:
    return isinstance(m, (nn.LSTM, _FastLSTM))


def quantize_dynamic(model: nn.Module, dtype: torch.dtype = torch.qint8, modules=(nn.LSTM,), inplace: bool = False):
    """A copy of ``model`` with its LSTMs (``fastlstm.LSTM`` and ``torch.nn.LSTM``) and,
    when ``nn.Linear`` is in ``modules``, its Linear layers replaced by int8 versions
    (:class:`~fastlstm.QuantizedLSTM`, :class:`~fastlstm.nn.quantized.QuantizedLinear`).

    Weights: symmetric int8, one scale per output row; activations quantised per row
    at run time; int32 accumulation; gates and cell state in fp32. Inference only.
    ``model`` itself may be an LSTM, in which case the quantised module is returned.

    >>> qmodel = fastlstm.quantize_dynamic(model)                           # LSTMs only
    >>> qmodel = fastlstm.quantize_dynamic(model, modules={nn.LSTM, nn.Linear})
    """
    if dtype != torch.qint8:
        raise ValueError(f"quantize_dynamic: only dtype=torch.qint8 is supported, got {dtype}")
    if isinstance(modules, type):
        modules = (modules,)
    modules = set(modules)
    unknown = modules - {nn.LSTM, _FastLSTM, nn.Linear}
    if unknown:
        raise ValueError(f"quantize_dynamic: cannot quantise {sorted(m.__name__ for m in unknown)}; "
                         "supported: torch.nn.LSTM, fastlstm.LSTM, torch.nn.Linear")
    do_lstm = bool(modules & {nn.LSTM, _FastLSTM})
    do_linear = nn.Linear in modules

    def convert(m: nn.Module):
        if do_lstm and _is_lstm(m):
            return QuantizedLSTM.from_float(m)
        if do_linear and type(m) is nn.Linear:
            return QuantizedLinear.from_float(m)
        return None

    top = convert(model)
    if top is not None:
        return top
    if not inplace:
        model = copy.deepcopy(model)

    def walk(parent: nn.Module):
        for name, child in list(parent.named_children()):
            new = convert(child)
            if new is not None:
                new.train(child.training)
                setattr(parent, name, new)
            else:
                walk(child)

    walk(model)
    return model
