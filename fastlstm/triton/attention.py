"""Triton sparse (sliding-window + global-token) attention, flash-attention style.

Forward: one program per (query block, batch*head); online softmax over the
key blocks the block's window can reach, plus the global-key blocks; key tiles
outside the window are never loaded. Backward (FlashAttention-2 split): one
kernel per query block for dQ, one per key block for dK and dV (each visits
only the query blocks that can see it), both recomputing probabilities from
the saved log-sum-exp. Registered as ``fastlstm::triton_sparse_attention``
and ``fastlstm::triton_sparse_attention_backward`` (``torch.library.triton_op``
+ ``wrap_triton``, so ``torch.compile`` traces into the kernels), with autograd.

Pattern and the no-allowed-key convention (output 0, lse -inf) are those of
:mod:`fastlstm.reference.attention`.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

from fastlstm.ops._alloc import empty
from fastlstm._attention_autograd import make_backward, setup_context


@triton.jit
def _allowed(i, j, Tq, Tk, left, right, G, pad_ptr, HAS_PAD: tl.constexpr):
    """Boolean tile: query i may attend key j (i, j broadcastable index tiles)."""
    ok = ((j >= i - left) & (j <= i + right)) | (j < G) | (i < G)
    ok = ok & (i < Tq) & (j < Tk)
    if HAS_PAD:
        padded = tl.load(pad_ptr + j, mask=j < Tk, other=1)
        ok = ok & (padded == 0)
    return ok


@triton.jit
def _key_bounds(start_m, Tq, Tk, left, right, G, BLOCK_M: tl.constexpr):
    """Key columns a query block can see: the global prefix [0, g_end) and the window [lo, hi)."""
    end_m = tl.minimum(start_m + BLOCK_M, Tq) - 1
    lo = tl.maximum(start_m - left, 0)
    hi = tl.minimum(end_m + right + 1, Tk)
    is_global = (start_m < G).to(tl.int32)  # global queries see every key
    lo = lo * (1 - is_global)
    hi = hi + (Tk - hi) * is_global
    g_end = tl.minimum(G, lo)
    return g_end, lo, hi


@triton.jit
def _query_bounds(start_n, Tq, Tk, left, right, G, BLOCK_N: tl.constexpr):
    """Query rows that can see a key block: global queries [0, g_end) and the window [lo, hi)."""
    end_n = tl.minimum(start_n + BLOCK_N, Tk) - 1
    lo = tl.maximum(start_n - right, 0)
    hi = tl.minimum(end_n + left + 1, Tq)
    is_global = (start_n < G).to(tl.int32)  # global keys are seen by every query
    lo = lo * (1 - is_global)
    hi = hi + (Tq - hi) * is_global
    g_end = tl.minimum(G, lo)
    return g_end, lo, hi


@triton.jit
def _attn_fwd_kernel(
    Q, K, V, O, LSE, PAD, Tq, Tk, D, Dv, H, left, right, G, scale,
    HAS_PAD: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # 64-bit (b, h) slice offsets: B * H * T * D passes 2^31
    b = bh // H
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q = tl.load(Q + bh * Tq * D + offs_m[:, None] * D + offs_d[None, :],
                mask=(offs_m[:, None] < Tq) & (offs_d[None, :] < D), other=0.0)
    k_base = K + bh * Tk * D
    v_base = V + bh * Tk * Dv
    pad = PAD + b * Tk
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    g_end, lo, hi = _key_bounds(start_m, Tq, Tk, left, right, G, BLOCK_M)
    # Pass 0: global keys left of the window; pass 1: the window. Disjoint by the column masks.
    for p in tl.static_range(2):
        if p == 0:
            n_begin = 0
            n_end = g_end
        else:
            n_begin = (lo // BLOCK_N) * BLOCK_N
            n_end = hi
        for start_n in range(n_begin, n_end, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            in_pass = (offs_n < g_end) if p == 0 else ((offs_n >= lo) & (offs_n < hi))
            k = tl.load(k_base + offs_n[:, None] * D + offs_d[None, :],
                        mask=(offs_n[:, None] < Tk) & (offs_d[None, :] < D), other=0.0)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                s = tl.dot(q, tl.trans(k))
            ok = _allowed(offs_m[:, None], offs_n[None, :], Tq, Tk, left, right, G, pad, HAS_PAD)
            ok = ok & in_pass[None, :]
            s = tl.where(ok, s * scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp(m_i - m_safe)
            pr = tl.exp(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(pr, 1)
            v = tl.load(v_base + offs_n[:, None] * Dv + offs_dv[None, :],
                        mask=(offs_n[:, None] < Tk) & (offs_dv[None, :] < Dv), other=0.0)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(pr.to(v.dtype), v, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(pr.to(v.dtype), v)
            m_i = m_new
    has_keys = l_i > 0
    out = acc / tl.where(has_keys, l_i, 1.0)[:, None]
    lse = tl.where(has_keys, m_i + tl.log(tl.where(has_keys, l_i, 1.0)), float("-inf"))
    tl.store(O + bh * Tq * Dv + offs_m[:, None] * Dv + offs_dv[None, :], out.to(O.dtype.element_ty),
             mask=(offs_m[:, None] < Tq) & (offs_dv[None, :] < Dv))
    tl.store(LSE + bh * Tq + offs_m, lse, mask=offs_m < Tq)


@triton.jit
def _attn_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, PAD, Tq, Tk, D, Dv, H, left, right, G, scale,
    HAS_PAD: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # 64-bit (b, h) slice offsets: B * H * T * D passes 2^31
    b = bh // H
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = offs_m < Tq
    q = tl.load(Q + bh * Tq * D + offs_m[:, None] * D + offs_d[None, :],
                mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)
    do = tl.load(DO + bh * Tq * Dv + offs_m[:, None] * Dv + offs_dv[None, :],
                 mask=row_ok[:, None] & (offs_dv[None, :] < Dv), other=0.0)
    lse = tl.load(LSE + bh * Tq + offs_m, mask=row_ok, other=float("-inf"))
    lse = tl.where(lse == float("-inf"), float("inf"), lse)  # rows without keys: p = 0
    delta = tl.load(DELTA + bh * Tq + offs_m, mask=row_ok, other=0.0)
    k_base = K + bh * Tk * D
    v_base = V + bh * Tk * Dv
    pad = PAD + b * Tk
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    g_end, lo, hi = _key_bounds(start_m, Tq, Tk, left, right, G, BLOCK_M)
    for p in tl.static_range(2):
        if p == 0:
            n_begin = 0
            n_end = g_end
        else:
            n_begin = (lo // BLOCK_N) * BLOCK_N
            n_end = hi
        for start_n in range(n_begin, n_end, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            in_pass = (offs_n < g_end) if p == 0 else ((offs_n >= lo) & (offs_n < hi))
            k = tl.load(k_base + offs_n[:, None] * D + offs_d[None, :],
                        mask=(offs_n[:, None] < Tk) & (offs_d[None, :] < D), other=0.0)
            v = tl.load(v_base + offs_n[:, None] * Dv + offs_dv[None, :],
                        mask=(offs_n[:, None] < Tk) & (offs_dv[None, :] < Dv), other=0.0)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee")
                dp = tl.dot(do, tl.trans(v), input_precision="ieee")
            else:
                s = tl.dot(q, tl.trans(k))
                dp = tl.dot(do, tl.trans(v))
            ok = _allowed(offs_m[:, None], offs_n[None, :], Tq, Tk, left, right, G, pad, HAS_PAD)
            ok = ok & in_pass[None, :]
            pr = tl.where(ok, tl.exp(s * scale - lse[:, None]), 0.0)
            ds = pr * (dp - delta[:, None])
            if IEEE:
                dq += tl.dot(ds.to(k.dtype), k, input_precision="ieee")
            else:
                dq += tl.dot(ds.to(k.dtype), k)
    tl.store(DQ + bh * Tq * D + offs_m[:, None] * D + offs_d[None, :], (dq * scale).to(DQ.dtype.element_ty),
             mask=row_ok[:, None] & (offs_d[None, :] < D))


@triton.jit
def _attn_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, PAD, Tq, Tk, D, Dv, H, left, right, G, scale,
    HAS_PAD: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    pid_n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # 64-bit (b, h) slice offsets: B * H * T * D passes 2^31
    b = bh // H
    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    col_ok = offs_n < Tk
    k = tl.load(K + bh * Tk * D + offs_n[:, None] * D + offs_d[None, :],
                mask=col_ok[:, None] & (offs_d[None, :] < D), other=0.0)
    v = tl.load(V + bh * Tk * Dv + offs_n[:, None] * Dv + offs_dv[None, :],
                mask=col_ok[:, None] & (offs_dv[None, :] < Dv), other=0.0)
    q_base = Q + bh * Tq * D
    do_base = DO + bh * Tq * Dv
    pad = PAD + b * Tk
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    g_end, lo, hi = _query_bounds(start_n, Tq, Tk, left, right, G, BLOCK_N)
    for p in tl.static_range(2):
        if p == 0:
            m_begin = 0
            m_end = g_end
        else:
            m_begin = (lo // BLOCK_M) * BLOCK_M
            m_end = hi
        for start_m in range(m_begin, m_end, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            row_ok = offs_m < Tq
            in_pass = (offs_m < g_end) if p == 0 else ((offs_m >= lo) & (offs_m < hi))
            q = tl.load(q_base + offs_m[:, None] * D + offs_d[None, :],
                        mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)
            do = tl.load(do_base + offs_m[:, None] * Dv + offs_dv[None, :],
                         mask=row_ok[:, None] & (offs_dv[None, :] < Dv), other=0.0)
            lse = tl.load(LSE + bh * Tq + offs_m, mask=row_ok, other=float("-inf"))
            lse = tl.where(lse == float("-inf"), float("inf"), lse)
            delta = tl.load(DELTA + bh * Tq + offs_m, mask=row_ok, other=0.0)
            # Transposed tiles: rows are keys, columns are queries.
            if IEEE:
                st = tl.dot(k, tl.trans(q), input_precision="ieee")
                dpt = tl.dot(v, tl.trans(do), input_precision="ieee")
            else:
                st = tl.dot(k, tl.trans(q))
                dpt = tl.dot(v, tl.trans(do))
            ok = _allowed(offs_m[None, :], offs_n[:, None], Tq, Tk, left, right, G, pad, HAS_PAD)
            ok = ok & in_pass[None, :]
            pt = tl.where(ok, tl.exp(st * scale - lse[None, :]), 0.0)
            dst = pt * (dpt - delta[None, :])
            if IEEE:
                dv += tl.dot(pt.to(do.dtype), do, input_precision="ieee")
                dk += tl.dot(dst.to(q.dtype), q, input_precision="ieee")
            else:
                dv += tl.dot(pt.to(do.dtype), do)
                dk += tl.dot(dst.to(q.dtype), q)
    tl.store(DK + bh * Tk * D + offs_n[:, None] * D + offs_d[None, :], (dk * scale).to(DK.dtype.element_ty),
             mask=col_ok[:, None] & (offs_d[None, :] < D))
    tl.store(DV + bh * Tk * Dv + offs_n[:, None] * Dv + offs_dv[None, :], dv.to(DV.dtype.element_ty),
             mask=col_ok[:, None] & (offs_dv[None, :] < Dv))


# Widest head_dim / v_dim the kernels take. At 256 (fp32) the forward's
# 32 x 256 tiles spill ~36 KB per thread to local memory on sm_90
# (tests/triton/test_compile_sm90.py); wider heads go to another backend
# (fastlstm/_backends.py).
MAX_HEAD_DIM = 128


def _blocks(D: int, Dv: int) -> tuple[int, int, int, int]:
    if max(D, Dv) > MAX_HEAD_DIM:
        raise ValueError(f"triton sparse attention: head_dim and v_dim must be <= {MAX_HEAD_DIM}; got {D}, {Dv}")
    block_d = max(16, triton.next_power_of_2(D))
    block_dv = max(16, triton.next_power_of_2(Dv))
    block = 64 if max(block_d, block_dv) <= 64 else 32
    return block, block, block_d, block_dv


def _bounds(left: int, right: int, Tq: int, Tk: int) -> tuple[int, int]:
    # Unbounded (< 0) becomes a reach no index difference can exceed.
    reach = Tq + Tk + 1
    return (reach if left < 0 else min(left, reach)), (reach if right < 0 else min(right, reach))


@triton_op("fastlstm::triton_sparse_attention", mutates_args=())
def _attention_fwd(
    q: Tensor, k: Tensor, v: Tensor, left: int, right: int, global_tokens: int, scale: float,
    key_padding_mask: Tensor | None,
) -> tuple[Tensor, Tensor]:
    B, H, Tq, D = q.shape
    Tk, Dv = k.shape[2], v.shape[3]
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = empty(B, H, Tq, Dv, like=q)
    lse = empty(B, H, Tq, like=q, dtype=torch.float32)
    if B * H == 0 or Tq == 0:
        return out, lse
    block_m, block_n, block_d, block_dv = _blocks(D, Dv)
    left, right = _bounds(left, right, Tq, Tk)
    pad = key_padding_mask.contiguous().to(torch.int8) if key_padding_mask is not None else lse
    wrap_triton(_attn_fwd_kernel)[(triton.cdiv(Tq, block_m), B * H)](
        q, k, v, out, lse, pad, Tq, Tk, D, Dv, H, left, right, global_tokens, scale,
        HAS_PAD=key_padding_mask is not None, IEEE=q.dtype == torch.float32,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_DV=block_dv,
    )
    return out, lse


@triton_op("fastlstm::triton_sparse_attention_backward", mutates_args=())
def _attention_bwd(
    q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dout: Tensor, left: int, right: int,
    global_tokens: int, scale: float, key_padding_mask: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    B, H, Tq, D = q.shape
    Tk, Dv = k.shape[2], v.shape[3]
    q, k, v, dout = q.contiguous(), k.contiguous(), v.contiguous(), dout.contiguous()
    dq = empty(B, H, Tq, D, like=q)
    dk = empty(B, H, Tk, D, like=q)
    dv = empty(B, H, Tk, Dv, like=q)
    if B * H == 0 or Tq == 0 or Tk == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    # The softmax-backward correction dO . O per query, in fp32.
    delta = (dout.float() * out.float()).sum(-1).contiguous()
    lse = lse.float().contiguous()
    block_m, block_n, block_d, block_dv = _blocks(D, Dv)
    left, right = _bounds(left, right, Tq, Tk)
    pad = key_padding_mask.contiguous().to(torch.int8) if key_padding_mask is not None else lse
    common = dict(HAS_PAD=key_padding_mask is not None, IEEE=q.dtype == torch.float32,
                  BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_DV=block_dv)
    wrap_triton(_attn_bwd_dq_kernel)[(triton.cdiv(Tq, block_m), B * H)](
        q, k, v, dout, lse, delta, dq, pad, Tq, Tk, D, Dv, H, left, right, global_tokens, scale, **common
    )
    wrap_triton(_attn_bwd_dkdv_kernel)[(triton.cdiv(Tk, block_n), B * H)](
        q, k, v, dout, lse, delta, dk, dv, pad, Tq, Tk, D, Dv, H, left, right, global_tokens, scale, **common
    )
    return dq, dk, dv


_attention_fwd.register_autograd(
    make_backward(lambda *args: torch.ops.fastlstm.triton_sparse_attention_backward(*args)),
    setup_context=setup_context,
)


def sparse_attention(
    q: Tensor, k: Tensor, v: Tensor, left: int, right: int, global_tokens: int, scale: float,
    key_padding_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Triton sparse attention with the contract of ``fastlstm::sparse_attention`` (differentiable).

    q: (B, H, Tq, D); k: (B, H, Tk, D); v: (B, H, Tk, Dv); ``left``/``right``
    < 0 mean unbounded; key_padding_mask: (B, Tk) bool or None. Returns output
    (B, H, Tq, Dv) and log-sum-exp (B, H, Tq, float32). Use
    :func:`fastlstm.ops.sparse_attention` (``backend="triton"``) for checked arguments.

    >>> out, lse = sparse_attention(q, k, v, 64, 64, 0, q.shape[-1] ** -0.5)
    """
    if not math.isfinite(scale):  # as the compiled CPU and CUDA kernels refuse it
        raise ValueError(f"triton sparse_attention: scale must be finite, got {scale}")
    return torch.ops.fastlstm.triton_sparse_attention(q, k, v, left, right, global_tokens, scale, key_padding_mask)
