"""Saving and loading a trained :class:`ProductivityLSTM` with its encoder, as ONE
file: the runtime's safetensors export (``fastlstm.runtime.ProductivityApp`` runs
it without torch; :func:`from_pretrained` rebuilds the torch model from it).

>>> model.save_pretrained("productivity.safetensors")           # float32: exact round trip
>>> model = ProductivityLSTM.from_pretrained("productivity.safetensors")
"""

from __future__ import annotations

import os

import numpy as np
import torch

from fastlstm.runtime import format as _format
from fastlstm.runtime.model import Model


def save_pretrained(model, path: str | os.PathLike, dtype: str = "float32", window: int | None = None) -> None:
    """Writes ``model`` and ``model.encoder`` (required) to ``path``; ``window``: the streaming window
    stored for the app (default: the encoder's). ``dtype="int8"`` for a smaller desktop file
    (:func:`from_pretrained` needs float32)."""
    from fastlstm.exporter import export

    if model.encoder is None:
        raise ValueError("save_pretrained: the model has no encoder (set model.encoder = ActivityEncoder(...).fit(log))")
    if window is not None:
        model.encoder.window = window
    export(model, path, dtype=dtype)


def from_pretrained(cls, path: str | os.PathLike):
    """The torch model (eval mode) and encoder saved by :func:`save_pretrained` (float32 files)."""
    from fastlstm.models.activity import ActivityEncoder

    tensors, config = _format.read(path)
    runtime = Model(config, tensors)  # validates the whole file first
    specs = config["layers"]
    kinds = [spec["type"] for spec in specs]
    if (len(specs) < 3 or kinds[0] != "linear" or kinds[-1] != "productivity_head"
            or any(k != "lstm" for k in kinds[1:-1])):
        raise ValueError(f"from_pretrained: {os.fspath(path)} does not hold a ProductivityLSTM (layers {kinds})")
    if any(spec["dtype"] != "float32" for spec in specs):
        raise ValueError("from_pretrained: the file is int8; only a float32 file rebuilds the torch model exactly")
    emb, lstms, head = runtime.layers[0], runtime.layers[1:-1], runtime.layers[-1]
    hc = head.config
    window = None if hc["window"] is None else tuple(hc["window"])
    model = cls(emb.in_features, emb.out_features, tuple(m.hidden_size for m in lstms), output_dim=hc["output_dim"],
                num_heads=hc["num_heads"], attention_window=window, global_tokens=hc["global_tokens"])
    t = lambda key: torch.from_numpy(np.ascontiguousarray(tensors[key]))  # noqa: E731
    names = [spec["name"] for spec in specs]
    state = {"embedding.weight": t(f"{names[0]}.weight"), "embedding.bias": t(f"{names[0]}.bias")}
    for i, (name, lstm) in enumerate(zip(names[1:-1], lstms)):
        for d, suffix in enumerate(("", "_reverse")):
            state[f"lstm.{i}.weight_ih_l0{suffix}"] = t(f"{name}.l0.w_ih")[d]
            state[f"lstm.{i}.weight_hh_l0{suffix}"] = t(f"{name}.l0.w_hh")[d]
            bias = t(f"{name}.l0.bias")[d]  # stored fused (b_ih + b_hh)
            state[f"lstm.{i}.bias_ih_l0{suffix}"] = bias
            state[f"lstm.{i}.bias_hh_l0{suffix}"] = torch.zeros_like(bias)
    h = names[-1]
    state["attention.in_proj_weight"], state["attention.in_proj_bias"] = t(f"{h}.in_proj.weight"), t(f"{h}.in_proj.bias")
    for sub, module in (("out_proj", "attention.out_proj"), ("pattern", "pattern_classifier"),
                        ("forecast", "forecaster"), ("anomaly", "anomaly_detector")):
        state[f"{module}.weight"], state[f"{module}.bias"] = t(f"{h}.{sub}.weight"), t(f"{h}.{sub}.bias")
    model.load_state_dict(state, strict=True)
    if runtime.encoder is not None:
        model.encoder = ActivityEncoder.from_dict(runtime.encoder.to_dict())
        model.encoder.window = runtime.encoder.window
    return model.eval()
