"""Triton LSTM recurrence, forward and backward (the ``triton`` backend).

One program per (batch block, direction): the grid is ``(cdiv(B, BLOCK_B), D)``,
so both directions of a layer run in one launch. Each program loops over all
time steps inside the kernel; per step it computes the gate pre-activations
of every hidden tile as ``tl.dot`` of the previous hidden state with ``W_hh``
tiles (fp32 accumulation; IEEE fp32 for fp32 inputs, never TF32), runs the
cell math in registers and writes the new state to a small fp32 workspace
that the program's next step reads back (a CTA barrier separates the steps).
``W_hh`` tiles stream from L2 every step: a single program cannot hold a
whole ``4H x H`` matrix on chip, and Triton has no grid barrier that would
let programs split it.

Ops: ``fastlstm::triton_lstm_recurrence`` and
``fastlstm::triton_lstm_recurrence_backward`` (``torch.library.triton_op`` +
``wrap_triton``, so ``torch.compile`` traces into the kernels), with autograd.
Projections (``proj_size > 0``) are not supported here.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

from fastlstm.ops._alloc import empty


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _lstm_fwd_kernel(
    gx, w_hh, h0, c0, lengths, y, hn, cn, gates, cells, hbuf, cbuf,
    T, B, H,
    D: tl.constexpr, HAS_LENGTHS: tl.constexpr, SAVE: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # gx (T, B, D, 4H); w_hh (D, 4H, H); h0, c0, hn, cn (D, B, H); y, cells (T, B, D, H);
    # gates (T, B, D, 4H); workspaces: hbuf (2, D, B, H) and cbuf (D, B, H), fp32.
    pid_b = tl.program_id(0)
    d = tl.program_id(1)
    # 64-bit offsets: T * B * D * 4H passes 2^31 elements at sizes a GPU holds.
    B = tl.cast(B, tl.int64)
    H = tl.cast(H, tl.int64)
    G = 4 * H
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_b = offs_b < B
    if HAS_LENGTHS:
        lens = tl.load(lengths + offs_b, mask=mask_b, other=0)
    else:
        lens = tl.full([BLOCK_B], T, tl.int64)
    w_base = w_hh + d * G * H
    state = (d * B + offs_b[:, None]) * H
    for n0 in range(0, H, BLOCK_H):
        offs_n = n0 + tl.arange(0, BLOCK_H)
        m = mask_b[:, None] & (offs_n[None, :] < H)
        tl.store(hbuf + state + offs_n[None, :], tl.load(h0 + state + offs_n[None, :], mask=m).to(tl.float32), mask=m)
        tl.store(cbuf + state + offs_n[None, :], tl.load(c0 + state + offs_n[None, :], mask=m).to(tl.float32), mask=m)
    tl.debug_barrier()
    for s in range(0, T):
        t = s + d * (T - 1 - 2 * s)  # direction 1 runs in reverse time
        cur = s % 2
        h_cur = hbuf + (cur * D + d) * B * H
        h_nxt = hbuf + ((1 - cur) * D + d) * B * H
        active = (t < lens)[:, None]
        tbd = (t * B + offs_b[:, None]) * D + d
        for n0 in range(0, H, BLOCK_H):
            offs_n = n0 + tl.arange(0, BLOCK_H)
            mask_n = offs_n < H
            m = mask_b[:, None] & mask_n[None, :]
            gx_row = gx + tbd * G + offs_n[None, :]
            acc_i = tl.load(gx_row, mask=m, other=0.0).to(tl.float32)
            acc_f = tl.load(gx_row + H, mask=m, other=0.0).to(tl.float32)
            acc_g = tl.load(gx_row + 2 * H, mask=m, other=0.0).to(tl.float32)
            acc_o = tl.load(gx_row + 3 * H, mask=m, other=0.0).to(tl.float32)
            for k0 in range(0, H, BLOCK_K):
                offs_k = k0 + tl.arange(0, BLOCK_K)
                mask_k = offs_k < H
                h = tl.load(h_cur + offs_b[:, None] * H + offs_k[None, :],
                            mask=mask_b[:, None] & mask_k[None, :], other=0.0)
                w_ptr = w_base + offs_n[None, :] * H + offs_k[:, None]  # (BLOCK_K, BLOCK_H) of W_hhᵀ
                wm = mask_k[:, None] & mask_n[None, :]
                w_i = tl.load(w_ptr, mask=wm, other=0.0)
                h = h.to(w_i.dtype)
                if IEEE:
                    acc_i += tl.dot(h, w_i, input_precision="ieee")
                    acc_f += tl.dot(h, tl.load(w_ptr + H * H, mask=wm, other=0.0), input_precision="ieee")
                    acc_g += tl.dot(h, tl.load(w_ptr + 2 * H * H, mask=wm, other=0.0), input_precision="ieee")
                    acc_o += tl.dot(h, tl.load(w_ptr + 3 * H * H, mask=wm, other=0.0), input_precision="ieee")
                else:
                    acc_i += tl.dot(h, w_i)
                    acc_f += tl.dot(h, tl.load(w_ptr + H * H, mask=wm, other=0.0))
                    acc_g += tl.dot(h, tl.load(w_ptr + 2 * H * H, mask=wm, other=0.0))
                    acc_o += tl.dot(h, tl.load(w_ptr + 3 * H * H, mask=wm, other=0.0))
            i = tl.sigmoid(acc_i)
            f = tl.sigmoid(acc_f)
            g = _tanh(acc_g)
            o = tl.sigmoid(acc_o)
            st = state + offs_n[None, :]
            c_prev = tl.load(cbuf + st, mask=m, other=0.0)
            h_prev = tl.load(h_cur + offs_b[:, None] * H + offs_n[None, :], mask=m, other=0.0)
            c = f * c_prev + i * g
            h_new = o * _tanh(c)
            out = tbd * H + offs_n[None, :]
            tl.store(y + out, tl.where(active, h_new, 0.0).to(y.dtype.element_ty), mask=m)
            if SAVE:
                g_row = gates + tbd * G + offs_n[None, :]
                ty = gates.dtype.element_ty
                tl.store(g_row, tl.where(active, i, 0.0).to(ty), mask=m)
                tl.store(g_row + H, tl.where(active, f, 0.0).to(ty), mask=m)
                tl.store(g_row + 2 * H, tl.where(active, g, 0.0).to(ty), mask=m)
                tl.store(g_row + 3 * H, tl.where(active, o, 0.0).to(ty), mask=m)
                tl.store(cells + out, tl.where(active, c, 0.0).to(ty), mask=m)
            tl.store(cbuf + st, tl.where(active, c, c_prev), mask=m)
            tl.store(h_nxt + offs_b[:, None] * H + offs_n[None, :], tl.where(active, h_new, h_prev), mask=m)
        tl.debug_barrier()
    h_fin = hbuf + ((T % 2) * D + d) * B * H
    for n0 in range(0, H, BLOCK_H):
        offs_n = n0 + tl.arange(0, BLOCK_H)
        m = mask_b[:, None] & (offs_n[None, :] < H)
        st = state + offs_n[None, :]
        tl.store(hn + st, tl.load(h_fin + offs_b[:, None] * H + offs_n[None, :], mask=m).to(hn.dtype.element_ty),
                 mask=m)
        tl.store(cn + st, tl.load(cbuf + st, mask=m).to(cn.dtype.element_ty), mask=m)


@triton.jit
def _lstm_bwd_kernel(
    dy, dhn, dcn, w_hh, c0, gates, cells, lengths, dgates, dh0, dc0, dpbuf, dhbuf, dcbuf,
    T, B, H,
    D: tl.constexpr, HAS_LENGTHS: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # dy (T, B, D, H); dhn, dcn, c0, dh0, dc0 (D, B, H); w_hh (D, 4H, H); gates, dgates (T, B, D, 4H);
    # cells (T, B, D, H); workspaces, fp32: dpbuf (D, B, 4H) d-gates, dhbuf and dcbuf (D, B, H) carries.
    pid_b = tl.program_id(0)
    d = tl.program_id(1)
    # 64-bit offsets: T * B * D * 4H passes 2^31 elements at sizes a GPU holds.
    B = tl.cast(B, tl.int64)
    H = tl.cast(H, tl.int64)
    G = 4 * H
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    mask_b = offs_b < B
    if HAS_LENGTHS:
        lens = tl.load(lengths + offs_b, mask=mask_b, other=0)
    else:
        lens = tl.full([BLOCK_B], T, tl.int64)
    w_base = w_hh + d * G * H
    state = (d * B + offs_b[:, None]) * H
    dp_row = dpbuf + (d * B + offs_b[:, None]) * G
    for n0 in range(0, H, BLOCK_H):
        offs_n = n0 + tl.arange(0, BLOCK_H)
        m = mask_b[:, None] & (offs_n[None, :] < H)
        st = state + offs_n[None, :]
        tl.store(dhbuf + st, tl.load(dhn + st, mask=m).to(tl.float32), mask=m)
        tl.store(dcbuf + st, tl.load(dcn + st, mask=m).to(tl.float32), mask=m)
    tl.debug_barrier()
    for u in range(0, T):
        s = T - 1 - u
        t = s + d * (T - 1 - 2 * s)
        active = (t < lens)[:, None]
        # Step processed just before t in the forward pass (its cell state is c_prev).
        t_prev = t - 1 + 2 * d
        first = tl.where(d == 0, t == 0, t + 1 >= lens)[:, None]
        t_prev = tl.minimum(tl.maximum(t_prev, 0), T - 1)
        tbd = (t * B + offs_b[:, None]) * D + d
        tbd_prev = (t_prev * B + offs_b[:, None]) * D + d
        # Phase 1: cell backward of every hidden tile -> d-gates.
        for n0 in range(0, H, BLOCK_H):
            offs_n = n0 + tl.arange(0, BLOCK_H)
            m = mask_b[:, None] & (offs_n[None, :] < H)
            st = state + offs_n[None, :]
            out = tbd * H + offs_n[None, :]
            dh = tl.load(dhbuf + st, mask=m, other=0.0)
            dc = tl.load(dcbuf + st, mask=m, other=0.0)
            dh += tl.where(active, tl.load(dy + out, mask=m, other=0.0).to(tl.float32), 0.0)
            g_row = gates + tbd * G + offs_n[None, :]
            i = tl.load(g_row, mask=m, other=0.0).to(tl.float32)
            f = tl.load(g_row + H, mask=m, other=0.0).to(tl.float32)
            g = tl.load(g_row + 2 * H, mask=m, other=0.0).to(tl.float32)
            o = tl.load(g_row + 3 * H, mask=m, other=0.0).to(tl.float32)
            c = tl.load(cells + out, mask=m, other=0.0).to(tl.float32)
            c_before = tl.load(cells + tbd_prev * H + offs_n[None, :], mask=m, other=0.0).to(tl.float32)
            c_init = tl.load(c0 + st, mask=m, other=0.0).to(tl.float32)
            c_prev = tl.where(first, c_init, c_before)
            tc = _tanh(c)
            dc_total = dc + dh * o * (1.0 - tc * tc)
            d_i = tl.where(active, dc_total * g * i * (1.0 - i), 0.0)
            d_f = tl.where(active, dc_total * c_prev * f * (1.0 - f), 0.0)
            d_g = tl.where(active, dc_total * i * (1.0 - g * g), 0.0)
            d_o = tl.where(active, dh * tc * o * (1.0 - o), 0.0)
            dg_row = dgates + tbd * G + offs_n[None, :]
            ty = dgates.dtype.element_ty
            tl.store(dg_row, d_i.to(ty), mask=m)
            tl.store(dg_row + H, d_f.to(ty), mask=m)
            tl.store(dg_row + 2 * H, d_g.to(ty), mask=m)
            tl.store(dg_row + 3 * H, d_o.to(ty), mask=m)
            dp = dp_row + offs_n[None, :]
            tl.store(dp, d_i, mask=m)
            tl.store(dp + H, d_f, mask=m)
            tl.store(dp + 2 * H, d_g, mask=m)
            tl.store(dp + 3 * H, d_o, mask=m)
            tl.store(dcbuf + st, tl.where(active, dc_total * f, dc), mask=m)
            tl.store(dhbuf + st, dh, mask=m)
        tl.debug_barrier()
        # Phase 2: dh_prev = d-gates · W_hh for the rows that were active.
        for n0 in range(0, H, BLOCK_H):
            offs_n = n0 + tl.arange(0, BLOCK_H)
            mask_n = offs_n < H
            m = mask_b[:, None] & mask_n[None, :]
            acc = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
            for k0 in range(0, G, BLOCK_K):
                offs_k = k0 + tl.arange(0, BLOCK_K)
                mask_k = offs_k < G
                dpk = tl.load(dp_row + offs_k[None, :], mask=mask_b[:, None] & mask_k[None, :], other=0.0)
                w = tl.load(w_base + offs_k[:, None] * H + offs_n[None, :], mask=mask_k[:, None] & mask_n[None, :],
                            other=0.0)
                if IEEE:
                    acc += tl.dot(dpk, w.to(tl.float32), input_precision="ieee")
                else:
                    acc += tl.dot(dpk.to(w.dtype), w)
            tl.store(dhbuf + state + offs_n[None, :], acc, mask=m & active)
        tl.debug_barrier()
    for n0 in range(0, H, BLOCK_H):
        offs_n = n0 + tl.arange(0, BLOCK_H)
        m = mask_b[:, None] & (offs_n[None, :] < H)
        st = state + offs_n[None, :]
        tl.store(dh0 + st, tl.load(dhbuf + st, mask=m).to(dh0.dtype.element_ty), mask=m)
        tl.store(dc0 + st, tl.load(dcbuf + st, mask=m).to(dc0.dtype.element_ty), mask=m)


def _blocks(B: int, H: int) -> tuple[int, int, int]:
    """(BLOCK_B, BLOCK_H, BLOCK_K): tl.dot needs every dimension >= 16."""
    block_b = 16 if B <= 16 else 32
    block_h = max(16, min(64, triton.next_power_of_2(H)))
    return block_b, block_h, 32


def _device_lengths(lengths: Tensor | None, T: int, B: int, device: torch.device) -> Tensor | None:
    if lengths is None:
        return None
    if lengths.dtype != torch.int64 or lengths.shape != (B,):
        raise TypeError(f"lengths must be an int64 tensor of shape ({B},), got {lengths.dtype} {tuple(lengths.shape)}")
    return lengths.to(device, non_blocking=True).contiguous()


@triton_op("fastlstm::triton_lstm_recurrence", mutates_args=())
def _recurrence_fwd(
    gx: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, lengths: Tensor | None, save_for_backward: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    T, B, D, G = gx.shape
    H = G // 4
    gx, w_hh, h0, c0 = gx.contiguous(), w_hh.contiguous(), h0.contiguous(), c0.contiguous()
    y = empty(T, B, D, H, like=gx)
    hn = empty(D, B, H, like=gx)
    cn = empty(D, B, H, like=gx)
    gates = empty(T, B, D, G, like=gx) if save_for_backward else gx.new_empty(0)
    cells = empty(T, B, D, H, like=gx) if save_for_backward else gx.new_empty(0)
    if B == 0:
        return y, hn, cn, gates, cells
    hbuf = gx.new_empty(2, D, B, H, dtype=torch.float32)
    cbuf = gx.new_empty(D, B, H, dtype=torch.float32)
    block_b, block_h, block_k = _blocks(B, H)
    wrap_triton(_lstm_fwd_kernel)[(triton.cdiv(B, block_b), D)](
        gx, w_hh, h0, c0, lengths if lengths is not None else gx, y, hn, cn,
        gates if save_for_backward else y, cells if save_for_backward else y, hbuf, cbuf,
        T, B, H, D=D, HAS_LENGTHS=lengths is not None, SAVE=save_for_backward,
        IEEE=gx.dtype == torch.float32, BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k,
    )
    return y, hn, cn, gates, cells


@triton_op("fastlstm::triton_lstm_recurrence_backward", mutates_args=())
def _recurrence_bwd(
    dy: Tensor, dhn: Tensor, dcn: Tensor, w_hh: Tensor, c0: Tensor, gates: Tensor, cells: Tensor,
    lengths: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    T, B, D, G = gates.shape
    H = G // 4
    dy, dhn, dcn, w_hh, c0 = dy.contiguous(), dhn.contiguous(), dcn.contiguous(), w_hh.contiguous(), c0.contiguous()
    gates, cells = gates.contiguous(), cells.contiguous()
    dgates = empty(T, B, D, G, like=dy)
    dh0 = empty(D, B, H, like=dy)
    dc0 = empty(D, B, H, like=dy)
    if B == 0:
        return dgates, dh0, dc0
    dpbuf = dy.new_empty(D, B, G, dtype=torch.float32)
    dhbuf = dy.new_empty(D, B, H, dtype=torch.float32)
    dcbuf = dy.new_empty(D, B, H, dtype=torch.float32)
    block_b, block_h, block_k = _blocks(B, H)
    wrap_triton(_lstm_bwd_kernel)[(triton.cdiv(B, block_b), D)](
        dy, dhn, dcn, w_hh, c0, gates, cells, lengths if lengths is not None else dy, dgates, dh0, dc0,
        dpbuf, dhbuf, dcbuf, T, B, H, D=D, HAS_LENGTHS=lengths is not None,
        IEEE=dy.dtype == torch.float32, BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k,
    )
    return dgates, dh0, dc0


def _setup_context(ctx, inputs, output):
    gx, w_hh, h0, c0, lengths, save_for_backward = inputs
    y, _, _, gates, cells = output
    ctx.save_for_backward(w_hh, h0, c0, lengths, y, gates, cells)
    ctx.saved_gates = save_for_backward
    ctx.mark_non_differentiable(gates, cells)


def _backward(ctx, dy, dhn, dcn, _dgates, _dcells):
    from fastlstm.ops.lstm import grads  # (leaf module: the same dW_hh as the CPU backward)

    w_hh, h0, c0, lengths, y, gates, cells = ctx.saved_tensors
    if not ctx.saved_gates:
        raise RuntimeError("triton_lstm_recurrence was run with save_for_backward=False; cannot differentiate it")
    dy = torch.zeros_like(y) if dy is None else dy
    dhn = torch.zeros_like(h0) if dhn is None else dhn
    dcn = torch.zeros_like(c0) if dcn is None else dcn
    dgates, dh0, dc0 = torch.ops.fastlstm.triton_lstm_recurrence_backward(dy, dhn, dcn, w_hh, c0, gates, cells, lengths)
    return dgates, grads.dw_hh(dgates, y, h0, lengths), dh0, dc0, None, None


_recurrence_fwd.register_autograd(_backward, setup_context=_setup_context)


def lstm_recurrence(
    gx: Tensor,
    w_hh: Tensor,
    w_hr: Tensor | None,
    h0: Tensor,
    c0: Tensor,
    lengths: Tensor | None,
    save_for_backward: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Triton LSTM recurrence with the contract of ``fastlstm::lstm_recurrence`` (differentiable).

    gx: (T, B, D, 4H); w_hh: (D, 4H, H); w_hr must be None (no projection);
    h0, c0: (D, B, H); lengths: (B,) int64 (CPU or device) or None.
    Returns y (T, B, D, H), h_n, c_n (D, B, H), gates (T, B, D, 4H) and cells
    (T, B, D, H) when ``save_for_backward`` (else empty).

    >>> y, h_n, c_n, _, _ = lstm_recurrence(gx, w_hh, None, h0, c0, None, False)
    """
    if w_hr is not None:
        raise NotImplementedError("the triton backend does not support proj_size > 0; use backend='cuda' or 'cpu'")
    T, B, D, G = gx.shape
    H = G // 4
    for name, t, shape in (("w_hh", w_hh, (D, G, H)), ("h0", h0, (D, B, H)), ("c0", c0, (D, B, H))):
        if G % 4 or tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
        if t.device != gx.device or t.dtype != gx.dtype:
            raise TypeError(f"{name} must be {gx.dtype} on {gx.device} like gx, got {t.dtype} on {t.device}")
    if lengths is not None:
        if lengths.dtype != torch.int64 or tuple(lengths.shape) != (B,):
            raise TypeError(f"lengths must be an int64 tensor of shape ({B},)")
        if B and (int(lengths.min()) < 0 or int(lengths.max()) > T):
            raise ValueError(f"lengths must lie in [0, {T}]")
    lengths = _device_lengths(lengths, T, B, gx.device)
    if T == 0:
        empty0 = gx.new_empty(0)
        return gx.new_zeros(0, B, D, G // 4), h0.clone(), c0.clone(), empty0, empty0
    return _recurrence_fwd(gx, w_hh, h0, c0, lengths, save_for_backward)
