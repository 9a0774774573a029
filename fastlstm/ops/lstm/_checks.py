"""Argument checks of the LSTM ops, run before any pointer is taken.

Every public LSTM op validates dtypes, devices, shapes and layer counts here
with the exception type torch would raise (TypeError for dtypes, ValueError
for shapes and counts, RuntimeError for devices), so a wrong tensor never
reaches a kernel that would read it as another element type.
"""

from __future__ import annotations

import torch
from torch import Tensor

# The dtypes the fused CPU kernels have variants for.
KERNEL_DTYPES = (torch.float32, torch.float64)


def check_lengths(lengths: Tensor | None, batch: int | None = None) -> Tensor | None:
    """``lengths`` as the kernels take it (contiguous int64 CPU, one per sequence), or None."""
    if lengths is None:
        return None
    if not isinstance(lengths, Tensor):
        raise TypeError(f"lengths must be a Tensor or None, got {type(lengths).__name__}")
    if lengths.device.type != "cpu" or lengths.dtype != torch.int64:
        raise TypeError(f"lengths must be an int64 CPU tensor, got {lengths.dtype} on {lengths.device}")
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be 1-D (batch,), got shape {tuple(lengths.shape)}")
    if batch is not None and lengths.shape[0] != batch:
        raise ValueError(f"lengths must have batch={batch} elements, got {lengths.shape[0]}")
    return lengths.contiguous()


def check_same(named: dict[str, Tensor | None], like: Tensor, like_name: str) -> None:
    """Every tensor in ``named`` has ``like``'s dtype and device."""
    for name, t in named.items():
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a Tensor, got {type(t).__name__}")
        if t.dtype != like.dtype:
            raise TypeError(f"{name} dtype ({t.dtype}) does not match {like_name} dtype ({like.dtype})")
        if t.device != like.device:
            raise RuntimeError(f"{name} is on {t.device} but {like_name} is on {like.device}")


def check_shapes(expected: dict[str, tuple], named: dict[str, Tensor | None]) -> None:
    for name, shape in expected.items():
        t = named[name]
        if t is not None and tuple(t.shape) != tuple(shape):
            raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def check_kernel_dtype(t: Tensor, name: str) -> None:
    if t.dtype not in KERNEL_DTYPES:
        raise TypeError(f"{name}: the fused CPU kernels run float32 and float64, got {t.dtype}")


def check_projection_args(x, w_ih, bias, directions) -> None:
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a 2-D (N, input_size) tensor, got {getattr(x, 'shape', type(x))}")
    if directions not in (1, 2):
        raise ValueError(f"directions must be 1 or 2, got {directions}")
    if not isinstance(w_ih, Tensor) or w_ih.dim() != 2 or w_ih.shape[0] == 0 or w_ih.shape[0] % (4 * directions):
        raise ValueError(f"w_ih must be (directions*4*hidden, input_size), got {getattr(w_ih, 'shape', None)}")
    if w_ih.shape[1] != x.shape[1]:
        raise ValueError(f"w_ih has input size {w_ih.shape[1]} but x has {x.shape[1]}")
    check_kernel_dtype(x, "x")
    check_same({"w_ih": w_ih, "bias": bias}, x, "x")
    check_shapes({"bias": (w_ih.shape[0],)}, {"bias": bias})


def check_recurrence_args(gx, w_hh, w_hr, h0, c0, lengths) -> None:
    """Shapes, dtypes and devices of lstm_recurrence's tensors."""
    if not isinstance(gx, Tensor) or gx.dim() != 4 or gx.shape[-1] % 4 != 0 or gx.shape[-1] == 0:
        raise ValueError(f"gx must be (T, B, D, 4*hidden) with hidden >= 1, got shape {getattr(gx, 'shape', None)}")
    T, B, D, G = gx.shape
    H = G // 4
    if not isinstance(w_hh, Tensor) or w_hh.dim() != 3 or w_hh.shape[0] != D or w_hh.shape[1] != G:
        raise ValueError(f"w_hh must be (D={D}, 4*hidden={G}, proj), got shape {getattr(w_hh, 'shape', None)}")
    P = w_hh.shape[2]
    if w_hr is None and P != H:
        raise ValueError(f"w_hh's last dim ({P}) must equal hidden ({H}) when w_hr is None")
    named = {"w_hh": w_hh, "w_hr": w_hr, "h0": h0, "c0": c0}
    check_same(named, gx, "gx")
    check_shapes({"h0": (D, B, P), "c0": (D, B, H), "w_hr": (D, P, H)}, named)
    check_lengths(lengths, B)


def check_recurrence_backward_args(dy, dhn, dcn, w_hh, w_hr, c0, gates, cells, lengths) -> None:
    if not isinstance(gates, Tensor) or gates.dim() != 4 or gates.shape[-1] % 4 or gates.shape[-1] == 0:
        raise ValueError(f"gates must be (T, B, D, 4*hidden), got shape {getattr(gates, 'shape', None)}")
    T, B, D, G = gates.shape
    H = G // 4
    if not isinstance(w_hh, Tensor) or w_hh.dim() != 3:
        raise ValueError(f"w_hh must be (D, 4*hidden, proj), got {getattr(w_hh, 'shape', None)}")
    P = w_hh.shape[2]
    if w_hr is None and P != H:
        raise ValueError(f"w_hh's last dim ({P}) must equal hidden ({H}) when w_hr is None")
    named = {"dy": dy, "dhn": dhn, "dcn": dcn, "w_hh": w_hh, "w_hr": w_hr, "c0": c0, "cells": cells}
    check_kernel_dtype(gates, "gates")
    check_same(named, gates, "gates")
    check_shapes({"dy": (T, B, D, P), "dhn": (D, B, P), "dcn": (D, B, H), "w_hh": (D, G, P), "w_hr": (D, P, H),
                  "c0": (D, B, H), "cells": (T, B, D, H)}, named)
    check_lengths(lengths, B)


def check_layer_args(x, weights, h0, c0, lengths, has_bias) -> int:
    """lstm_layer's arguments; returns the number of directions."""
    per_dir = 4 if has_bias else 2
    if not isinstance(weights, (list, tuple)) or len(weights) not in (per_dir, 2 * per_dir):
        raise ValueError(f"weights must hold {per_dir} tensors per direction (1 or 2 directions), "
                         f"got {len(weights) if isinstance(weights, (list, tuple)) else type(weights).__name__}")
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(f"x must be (T, B, input_size), got shape {getattr(x, 'shape', None)}")
    check_kernel_dtype(x, "x")
    D = len(weights) // per_dir
    if not isinstance(weights[0], Tensor) or weights[0].dim() != 2 or weights[0].shape[0] % 4:
        raise ValueError(f"w_ih must be (4*hidden, input_size), got {getattr(weights[0], 'shape', None)}")
    G = weights[0].shape[0]
    H = G // 4
    names = ("w_ih", "w_hh", "b_ih", "b_hh")
    shapes = ((G, x.shape[-1]), (G, H), (G,), (G,))
    named, expected = {}, {}
    for d in range(D):
        for k in range(per_dir):
            name = f"{names[k]}[{d}]"
            named[name], expected[name] = weights[d * per_dir + k], shapes[k]
    named["h0"], named["c0"] = h0, c0
    expected["h0"] = expected["c0"] = (D, x.shape[1], H)
    check_same(named, x, "x")
    check_shapes(expected, named)
    check_lengths(lengths, x.shape[1])
    return D


def check_lstm_args(x, hx, weights, *, num_layers, D, per_dir, H, P, lengths) -> None:
    """fastlstm.ops.lstm's arguments (before any GEMM or kernel sees them)."""
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(f"x must be a 3-D (T, B, input_size) tensor, got {getattr(x, 'shape', type(x))}")
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be an int >= 1, got {num_layers!r}")
    n = num_layers * D * per_dir
    if not isinstance(weights, (list, tuple)) or len(weights) != n:
        raise ValueError(f"weights must hold {n} tensors for this configuration, got "
                         f"{len(weights) if isinstance(weights, (list, tuple)) else type(weights).__name__}")
    for w in weights:
        if not isinstance(w, Tensor):
            raise TypeError(f"weights must be Tensors, got {type(w).__name__}")
        if w.dtype != x.dtype:
            raise ValueError(f"x dtype ({x.dtype}) does not match weight dtype ({w.dtype})")
        if w.device != x.device:
            raise RuntimeError(f"x is on {x.device} but a weight is on {w.device}")
    B = x.shape[1]
    if hx is not None:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError("hx must be a tuple (h0, c0) or None")
        for name, t, size in (("h0", hx[0], P), ("c0", hx[1], H)):
            if not isinstance(t, Tensor):
                raise TypeError(f"hx: {name} must be a Tensor, got {type(t).__name__}")
            if tuple(t.shape) != (num_layers * D, B, size):
                raise ValueError(f"hx: {name} must have shape {(num_layers * D, B, size)}, got {tuple(t.shape)}")
            if t.device != x.device:
                raise RuntimeError(f"hx: {name} is on {t.device} but x is on {x.device}")
            if t.dtype != x.dtype:
                raise TypeError(f"hx: {name} dtype ({t.dtype}) does not match x dtype ({x.dtype})")
    check_lengths(lengths, B)
