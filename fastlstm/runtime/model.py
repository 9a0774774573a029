"""The runtime model: a small graph of layers loaded from one exported file.

Config (the file's ``config`` metadata, JSON):
``{"layers": [{"type": "lstm", "name": "0", ...}, ...], "outputs": "lstm" | "tensor"}``.
Layers run in order, each feeding the next; tensors of layer ``name`` are
stored as ``"{name}.{tensor}"``. ``outputs`` "lstm" (a lone LSTM) returns
``(output, (h_n, c_n))`` like torch.nn.LSTM; "tensor" returns the last output.
"""

from __future__ import annotations

import os

import numpy as np

from fastlstm.runtime import format as _format
from fastlstm.runtime.layers import LAYER_TYPES


class Model:
    """A loaded runtime model; call it with a numpy array.

    >>> model = fastlstm.runtime.load("model.safetensors")
    >>> out, (h_n, c_n) = model(np.zeros((1440, 1, 32), np.float32))
    """

    def __init__(self, config: dict, tensors: dict[str, np.ndarray]) -> None:
        if set(config) != {"layers", "outputs"}:
            raise ValueError(f"runtime model: config keys {sorted(config)}, expected ['layers', 'outputs']")
        specs = config.get("layers")
        if not isinstance(specs, list) or not specs:
            raise ValueError("runtime model: config has no layers")
        self.outputs = config["outputs"]
        if self.outputs not in ("lstm", "tensor"):
            raise ValueError(f"runtime model: unknown outputs kind {self.outputs!r}")
        if self.outputs == "lstm" and (len(specs) != 1 or specs[0].get("type") != "lstm"):
            raise ValueError("runtime model: outputs 'lstm' needs exactly one lstm layer")
        self.layers = []
        used = set()
        for spec in specs:
            if not isinstance(spec, dict) or spec.get("type") not in LAYER_TYPES:
                raise ValueError(f"runtime model: unknown layer type {spec.get('type') if isinstance(spec, dict) else spec!r}")
            cls = LAYER_TYPES[spec["type"]]
            unknown = set(spec) - set(cls.KEYS) - {"type", "name"}
            if unknown or "name" not in spec:
                raise ValueError(f"runtime model: layer config has unknown keys {sorted(unknown)} or no name")
            name = str(spec["name"])
            prefix = name + "."
            own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            used.update(prefix + k for k in own)
            self.layers.append(cls(spec, own))
        extra = set(tensors) - used
        if extra:
            raise ValueError(f"runtime model: tensors {sorted(extra)[:5]} belong to no layer")
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
