"""``fastlstm.export``: write a model to the torch-free runtime's one-file format.

Each supported module becomes one runtime layer (``fastlstm/runtime/layers.py``);
other model families add themselves with :func:`register_exporter`.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from torch import nn

from fastlstm.nn.lstm import LSTM as _FastLSTM
from fastlstm.nn.quantized import QuantizedLinear, QuantizedLSTM, _np
from fastlstm.runtime import save
from fastlstm.runtime.events import FeatureEncoder
from fastlstm.runtime.layers import lstm_tensors_from_flat
from fastlstm.runtime.quant import quantize_rows

_EXPORTERS: dict[type, object] = {}


def register_exporter(module_type: type):
    """Decorator: ``fn(module, dtype) -> list[(config, tensors)]`` turns ``module_type`` into runtime layers."""
    def deco(fn):
        _EXPORTERS[module_type] = fn
        return fn
    return deco


def _lstm_config(m, dtype: str) -> dict:
    return dict(type="lstm", input_size=m.input_size, hidden_size=m.hidden_size, num_layers=m.num_layers,
                bidirectional=bool(m.bidirectional), proj_size=m.proj_size, bias=bool(m.bias),
                batch_first=bool(m.batch_first), dtype=dtype)


@register_exporter(nn.LSTM)
@register_exporter(_FastLSTM)
def _export_lstm(m, dtype):
    config = _lstm_config(m, dtype)
    return [(config, lstm_tensors_from_flat([_np(w) for w in m._flat_weights], config, dtype))]


@register_exporter(QuantizedLSTM)
def _export_qlstm(m, dtype):
    if dtype != "int8":
        raise ValueError("export: a QuantizedLSTM can only be exported as int8")
    return [(m._rt_config(), m.runtime_tensors())]


@register_exporter(nn.Linear)
def _export_linear(m, dtype):
    config = dict(type="linear", in_features=m.in_features, out_features=m.out_features,
                  bias=m.bias is not None, dtype=dtype)
    tensors = {} if m.bias is None else {"bias": _np(m.bias)}
    if dtype == "int8":
        tensors["weight"], tensors["weight_scale"] = quantize_rows(_np(m.weight))
    else:
        tensors["weight"] = _np(m.weight)
    return [(config, tensors)]


@register_exporter(QuantizedLinear)
def _export_qlinear(m, dtype):
    if dtype != "int8":
        raise ValueError("export: a QuantizedLinear can only be exported as int8")
    return [(m._rt_config(), m.runtime_tensors())]


def _layers(module: nn.Module, dtype: str) -> list:
    for cls in type(module).__mro__:
        if cls in _EXPORTERS:
            return _EXPORTERS[cls](module, dtype)
    if isinstance(module, nn.Sequential):
        return [layer for child in module for layer in _layers(child, dtype)]
    raise TypeError(f"export: no runtime layer for {type(module).__name__}; supported: "
                    f"{', '.join(sorted(c.__name__ for c in _EXPORTERS))}, nn.Sequential of them")


def export(model: nn.Module, path: str | os.PathLike, dtype: str | None = None) -> None:
    """Writes ``model`` to ``path`` as ONE safetensors file for :func:`fastlstm.runtime.load`.

    ``dtype``: "float32" or "int8" (quantise float layers on the way); default: int8 when
    the model contains quantised modules, else float32. A lone LSTM's runtime model returns
    ``(output, (h_n, c_n))``; a Sequential returns its last output. A model with an ``encoder``
    (a :class:`fastlstm.runtime.FeatureEncoder`) stores it in the same file.

    >>> fastlstm.export(fastlstm.quantize_dynamic(lstm), "lstm_int8.safetensors")
    >>> out, (h_n, c_n) = fastlstm.runtime.load("lstm_int8.safetensors")(x_numpy)
    """
    if dtype is None:
        dtype = "int8" if any(isinstance(m, (QuantizedLSTM, QuantizedLinear)) for m in model.modules()) else "float32"
    if dtype not in ("float32", "int8"):
        raise ValueError(f"export: dtype must be 'float32' or 'int8', got {dtype!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layers = _layers(model, dtype)
    specs, tensors = [], {}
    for i, (config, own) in enumerate(layers):
        config = dict(config, name=str(i))
        specs.append(config)
        for k, v in own.items():
            tensors[f"{i}.{k}"] = np.ascontiguousarray(v)
    lone_lstm = len(specs) == 1 and specs[0]["type"] == "lstm"
    config = {"layers": specs, "outputs": "lstm" if lone_lstm else "tensor"}
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, FeatureEncoder):  # the app's features travel with the model (one file)
        config["encoder"] = encoder.to_config()
    save(path, config, tensors)
