"""CUDA implementations of ``fastlstm::lstm_recurrence`` and
``fastlstm::lstm_recurrence_backward`` (the ops, their fake kernels and
autograd live in :mod:`fastlstm.ops.lstm`; this file only adds the "cuda"
kernels).

The kernels (``csrc/cuda/``) run one persistent cooperative launch per layer
when ``W_hh`` fits on chip, else one launch per step. Outputs and the fp32
workspace are allocated here with torch; the kernels enqueue on torch's
current stream and never synchronise the host.

``lengths`` arrive as an int64 CPU tensor (the op's contract); they are
validated on the host and copied to the device here (a small host-to-device
copy per call; it is the one thing that keeps this op out of CUDA-graph
capture when lengths are given).

``proj_size > 0`` is not fused on CUDA: such calls run the same math as
plain torch ops on the GPU, step by step (correct, not fast).

``FASTLSTM_CUDA_LAUNCH=auto|persistent|per-step`` forces a launch mode (tests).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from fastlstm import _ext
from fastlstm import reference as _reference
from fastlstm.ops._alloc import empty

_MODES = {"auto": 0, "persistent": 1, "per-step": 2}


def _launch_mode() -> int:
    name = os.environ.get("FASTLSTM_CUDA_LAUNCH", "auto") or "auto"
    if name not in _MODES:
        raise ValueError(f"FASTLSTM_CUDA_LAUNCH must be one of {', '.join(_MODES)}; got {name!r}")
    return _MODES[name]


def _device_lengths(lengths: Tensor | None, T: int, B: int, device: torch.device) -> Tensor | None:
    if lengths is None:
        return None
    if lengths.device.type != "cpu" or lengths.dtype != torch.int64:
        raise TypeError(f"lengths must be an int64 CPU tensor, got {lengths.dtype} on {lengths.device}")
    if lengths.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},), got {tuple(lengths.shape)}")
    if B and (int(lengths.min()) < 0 or int(lengths.max()) > T):
        raise ValueError(f"lengths must lie in [0, {T}]")
    return lengths.contiguous().to(device, non_blocking=True)


def _check_tensors(fn: str, like: Tensor, **tensors: tuple[Tensor | None, tuple[int, ...]]) -> None:
    """Same device and dtype as ``like`` and the expected shape, else a clear error (never a bad pointer)."""
    for name, (t, shape) in tensors.items():
        if t is None:
            continue
        if t.device != like.device:
            raise RuntimeError(f"{fn}: {name} is on {t.device}, expected {like.device}")
        if t.dtype != like.dtype:
            raise TypeError(f"{fn}: {name} has dtype {t.dtype}, expected {like.dtype}")
        if tuple(t.shape) != shape:
            raise ValueError(f"{fn}: {name} has shape {tuple(t.shape)}, expected {shape}")


def _workspace(backward: bool, B: int, D: int, H: int, like: Tensor) -> Tensor:
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    return torch.empty(_ext._C.cuda_lstm_workspace(backward, B, D, H), dtype=dtype, device=like.device)


def _require_cuda_build() -> None:
    if not _ext.available() or not getattr(_ext._C, "has_cuda", False):
        raise RuntimeError("fastlstm._C was built without CUDA (rebuild with FASTLSTM_CUDA=on)")


def lstm_recurrence_cuda(gx, w_hh, w_hr, h0, c0, lengths, save_for_backward):
    """CUDA kernel of ``fastlstm::lstm_recurrence`` (same contract as the CPU kernel)."""
    T, B, D, G = gx.shape
    H = G // 4
    if w_hr is not None:
        return _projected_forward(gx, w_hh, w_hr, h0, c0, lengths, save_for_backward)
    _check_tensors("lstm_recurrence", gx, w_hh=(w_hh, (D, G, H)), h0=(h0, (D, B, H)), c0=(c0, (D, B, H)))
    _require_cuda_build()
    gx, w_hh, h0, c0 = gx.contiguous(), w_hh.contiguous(), h0.contiguous(), c0.contiguous()
    dev_lengths = _device_lengths(lengths, T, B, gx.device)
    y = empty(T, B, D, H, like=gx)
    hn = empty(D, B, H, like=gx)
    cn = empty(D, B, H, like=gx)
    gates = empty(T, B, D, G, like=gx) if save_for_backward else gx.new_empty(0)
    cells = empty(T, B, D, H, like=gx) if save_for_backward else gx.new_empty(0)
    if T == 0:
        hn.copy_(h0)
        cn.copy_(c0)
        return y, hn, cn, gates, cells
    buf = _ext.buf
    with torch.cuda.device(gx.device):
        work = _workspace(False, B, D, H, gx)
        _ext._C.cuda_lstm_recurrence_fwd(
            _ext.dtype_name(gx.dtype), buf(gx), buf(w_hh), buf(h0), buf(c0), buf(dev_lengths), buf(y), buf(hn), buf(cn),
            buf(gates if save_for_backward else None), buf(cells if save_for_backward else None),
            buf(work), T, B, D, H, torch.cuda.current_stream(gx.device).cuda_stream, _launch_mode(),
        )
    return y, hn, cn, gates, cells


def lstm_recurrence_backward_cuda(dy, dhn, dcn, w_hh, w_hr, c0, gates, cells, lengths):
    """CUDA kernel of ``fastlstm::lstm_recurrence_backward``."""
    T, B, D, G = gates.shape
    H = G // 4
    if w_hr is not None:
        return projected_backward(dy, dhn, dcn, w_hh, w_hr, c0, gates, cells, lengths)
    _check_tensors("lstm_recurrence_backward", gates, dy=(dy, (T, B, D, H)), dhn=(dhn, (D, B, H)),
                   dcn=(dcn, (D, B, H)), w_hh=(w_hh, (D, G, H)), c0=(c0, (D, B, H)), cells=(cells, (T, B, D, H)))
    _require_cuda_build()
    dy, dhn, dcn, c0 = dy.contiguous(), dhn.contiguous(), dcn.contiguous(), c0.contiguous()
    gates, cells = gates.contiguous(), cells.contiguous()
    w_hh_t = w_hh.transpose(1, 2).contiguous()  # (D, H, 4H): rows the backward mat-vec reads
    dev_lengths = _device_lengths(lengths, T, B, dy.device)
    dgates = empty(T, B, D, G, like=dy)
    dh0 = empty(D, B, H, like=dy)
    dc0 = empty(D, B, H, like=dy)
    if T == 0:
        dh0.copy_(dhn)
        dc0.copy_(dcn)
        return dgates, dh0, dc0, dy.new_empty(0)
    buf = _ext.buf
    with torch.cuda.device(dy.device):
        work = _workspace(True, B, D, H, dy)
        _ext._C.cuda_lstm_recurrence_bwd(
            _ext.dtype_name(dy.dtype), buf(dy), buf(dhn), buf(dcn), buf(w_hh_t), buf(c0), buf(gates), buf(cells),
            buf(dev_lengths), buf(dgates), buf(dh0), buf(dc0), buf(work), T, B, D, H,
            torch.cuda.current_stream(dy.device).cuda_stream, _launch_mode(),
        )
    return dgates, dh0, dc0, dy.new_empty(0)


def launch_mode(batch: int, directions: int, hidden: int, dtype: torch.dtype, backward: bool = False) -> str:
    """The launch ``auto`` uses on the current CUDA device: ``"persistent"`` or ``"per-step"``.

    >>> launch_mode(16, 2, 256, torch.bfloat16)
    'persistent'
    """
    _require_cuda_build()
    elem = torch.empty((), dtype=dtype).element_size()
    return _ext._C.cuda_lstm_launch_mode(batch, directions, hidden, elem, backward)


# --------------------------------------------------------------------------
# proj_size > 0: torch ops step by step (device-agnostic; not fused)
# --------------------------------------------------------------------------


def _projected_forward(gx, w_hh, w_hr, h0, c0, lengths, save_for_backward):
    y, hn, cn, gates, cells = _reference.lstm_recurrence(gx, w_hh, w_hr, h0, c0, lengths)
    if not save_for_backward:
        gates, cells = gx.new_empty(0), gx.new_empty(0)
    return y, hn, cn, gates, cells


def projected_backward(dy, dhn, dcn, w_hh, w_hr, c0, gates, cells, lengths):
    """Reverse recurrence with projection in plain torch ops (same contract as
    ``fastlstm::lstm_recurrence_backward``): returns d gates (T, B, D, 4H),
    d h0 (D, B, P), d c0 (D, B, H), d projected h (T, B, D, P)."""
    T, B, D, G = gates.shape
    H = G // 4
    dgates = torch.zeros_like(gates)
    dhproj = torch.zeros_like(dy)
    dh0, dc0 = [], []
    lengths_dev = lengths.to(gates.device) if lengths is not None else None
    for d in range(D):
        dh, dc = dhn[d], dcn[d]
        order = range(T) if d == 1 else range(T - 1, -1, -1)  # reverse of processing order
        for t in order:
            active = None if lengths_dev is None else (t < lengths_dev).unsqueeze(1)
            i, f, g, o = gates[t, :, d].split(H, dim=-1)
            c = cells[t, :, d]
            if d == 0:
                c_prev = c0[d] if t == 0 else cells[t - 1, :, d]
            else:
                c_prev = c0[d] if t == T - 1 else cells[t + 1, :, d]
                if lengths_dev is not None:
                    first = (t + 1 >= lengths_dev).unsqueeze(1)
                    c_prev = torch.where(first, c0[d], c_prev)
            dh_total = dh + dy[t, :, d]
            dh_raw = dh_total @ w_hr[d]
            tc = torch.tanh(c)
            dc_total = dc + dh_raw * o * (1 - tc * tc)
            dpre = torch.cat([dc_total * g * i * (1 - i), dc_total * c_prev * f * (1 - f),
                              dc_total * i * (1 - g * g), dh_raw * tc * o * (1 - o)], dim=-1)
            dh_prev = dpre @ w_hh[d]
            dc_prev = dc_total * f
            if active is not None:
                dpre = torch.where(active, dpre, torch.zeros_like(dpre))
                dh_total = torch.where(active, dh_total, torch.zeros_like(dh_total))
                dh_prev = torch.where(active, dh_prev, dh)
                dc_prev = torch.where(active, dc_prev, dc)
            dgates[t, :, d] = dpre
            dhproj[t, :, d] = dh_total
            dh, dc = dh_prev, dc_prev
        dh0.append(dh)
        dc0.append(dc)
    return dgates, torch.stack(dh0), torch.stack(dc0), dhproj


torch.library.register_kernel("fastlstm::lstm_recurrence", "cuda", lstm_recurrence_cuda)
torch.library.register_kernel("fastlstm::lstm_recurrence_backward", "cuda", lstm_recurrence_backward_cuda)
