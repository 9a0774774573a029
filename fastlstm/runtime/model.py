"""The runtime model: a small graph of layers loaded from one exported file.

Config (the file's ``config`` metadata, JSON):
``{"layers": [{"type": "lstm", "name": "0", ...}, ...], "outputs": "lstm" | "tensor"}``.
Layers run in order, each feeding the next; tensors of layer ``name`` are
stored as ``"{name}.{tensor}"``. ``outputs`` "lstm" (a lone LSTM) returns
``(output, (h_n, c_n))`` like torch.nn.LSTM; "tensor" returns the last output.
``encoder`` (optional): the productivity app's features (``FeatureEncoder.from_config``).
The file is untrusted: every field is checked and every failure is a ValueError naming it.
"""

from __future__ import annotations

import os
import re

import numpy as np

from fastlstm.runtime import format as _format
from fastlstm.runtime.events import FeatureEncoder
from fastlstm.runtime.layers import LAYER_TYPES

_CONFIG_KEYS = {"layers", "outputs", "encoder"}
_MAX_LAYERS = 64
_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


class Model:
    """A loaded runtime model; call it with a numpy array.

    >>> model = fastlstm.runtime.load("model.safetensors")
    >>> out, (h_n, c_n) = model(np.zeros((1440, 1, 32), np.float32))
    """

    def __init__(self, config: dict, tensors: dict[str, np.ndarray]) -> None:
        if not isinstance(config, dict) or not {"layers", "outputs"} <= set(config) <= _CONFIG_KEYS:
            keys = sorted(config) if isinstance(config, dict) else type(config).__name__
            raise ValueError(f"runtime model: config keys {keys}, expected layers, outputs (and optionally encoder)")
        specs = config["layers"]
        if not isinstance(specs, list) or not specs or len(specs) > _MAX_LAYERS:
            raise ValueError(f"runtime model: config field 'layers' must be a list of 1 to {_MAX_LAYERS} layers")
        for i, spec in enumerate(specs):
            if not isinstance(spec, dict):
                raise ValueError(f"runtime model: config field 'layers[{i}]' must be an object, got {type(spec).__name__}")
            if not isinstance(spec.get("type"), str) or spec["type"] not in LAYER_TYPES:
                raise ValueError(f"runtime model: config field 'layers[{i}].type' is unknown: {spec.get('type')!r}"[:300])
            unknown = set(spec) - set(LAYER_TYPES[spec["type"]].KEYS) - {"type", "name"}
            if unknown:
                raise ValueError(f"runtime model: config field 'layers[{i}]' has unknown keys {sorted(unknown)[:5]}")
            if not isinstance(spec.get("name"), str) or not _NAME.fullmatch(spec["name"]):
                raise ValueError(f"runtime model: config field 'layers[{i}].name' must be a short [A-Za-z0-9_] "
                                 f"string, got {spec.get('name')!r}"[:300])
        names = [spec["name"] for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError("runtime model: config field 'layers' repeats a layer name")
        self.outputs = config["outputs"]
        if self.outputs not in ("lstm", "tensor"):
            raise ValueError(f"runtime model: config field 'outputs' is unknown: {self.outputs!r}"[:300])
        if self.outputs == "lstm" and (len(specs) != 1 or specs[0]["type"] != "lstm"):
            raise ValueError("runtime model: config field 'outputs' 'lstm' needs exactly one lstm layer")
        # Tensors grouped by layer in one pass (a scan per layer made loading quadratic in the layer count).
        own: dict[str, dict[str, np.ndarray]] = {name: {} for name in names}
        for key, value in tensors.items():
            layer, dot, rest = key.partition(".")
            if not dot or layer not in own:
                raise ValueError(f"runtime model: tensor {key!r} belongs to no layer"[:300])
            own[layer][rest] = value
        self.layers = [LAYER_TYPES[spec["type"]](spec, own[spec["name"]]) for spec in specs]
        for prev, layer, spec in zip(self.layers, self.layers[1:], specs[1:]):
            if prev.out_features is None:
                raise ValueError(f"runtime model: layer {spec['name']!r} follows a layer with several outputs, "
                                 "which must come last")
            if prev.out_features != layer.in_features:
                raise ValueError(f"runtime model: layer {spec['name']!r} takes {layer.in_features} features, "
                                 f"the layer before it gives {prev.out_features}")
        self.encoder = None
        if "encoder" in config:
            self.encoder = FeatureEncoder.from_config(config["encoder"])
            if self.encoder.input_dim != self.layers[0].in_features:
                raise ValueError(f"runtime model: config field 'encoder' gives {self.encoder.input_dim} features, "
                                 f"the first layer takes {self.layers[0].in_features}")
        self.config = config

    def __call__(self, x: np.ndarray, hx=None, lengths: np.ndarray | None = None):
        """x: numpy array in the first layer's layout; hx/lengths go to a lone LSTM."""
        if self.outputs == "lstm":
            return self.layers[0].run(x, hx, lengths)
        if hx is not None or lengths is not None:
            raise ValueError("runtime model: hx and lengths are only accepted by a lone LSTM model")
        for layer in self.layers:
            x, _ = layer.run(x)
        return x

    def nbytes(self) -> int:
        """Bytes of the loaded parameters."""
        return sum(layer.nbytes() for layer in self.layers if hasattr(layer, "nbytes"))


def load(path: str | os.PathLike) -> Model:
    """Loads a file written by :func:`fastlstm.export`; numpy + fastlstm._C only.

    Raises ValueError for a truncated, corrupted or foreign file.

    >>> model = fastlstm.runtime.load("model.safetensors")
    >>> y = model(np.random.randn(100, 1, 32).astype(np.float32))
    """
    tensors, config = _format.read(path)
    return Model(config, tensors)


def save(path: str | os.PathLike, config: dict, tensors: dict[str, np.ndarray]) -> None:
    """Writes a runtime model (used by :func:`fastlstm.export`); validates by building it first."""
    Model(config, tensors)
    _format.write(path, tensors, config)
