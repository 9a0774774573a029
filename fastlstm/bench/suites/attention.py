"""Sparse (sliding-window) attention: embed 128, 4 heads, window (64, 64),
T in {288, 1440, 8192}, batch 1 and 16 (quick suite: T 288 and 1440, batch 1);
forward and forward + backward (of a sum loss).

Peak memory: how far the process's peak resident memory rises during one
call (``peak_rss_mib``; Linux only).

Two levels, each against the dense way of getting the same answer:

* op: ``fastlstm.ops.sparse_attention`` against
  ``torch.nn.functional.scaled_dot_product_attention`` with a dense boolean
  mask of the same pattern;
* module: ``fastlstm.SparseAttention`` against ``nn.MultiheadAttention``
  (same weights) with the same mask as ``attn_mask``.

Correctness first: fastlstm's result against a float64 reference computed in
query blocks (``fastlstm.reference.sparse_attention`` on each block and the
keys its window can reach, so T = 8192 never forms a T x T matrix), with
``fastlstm.testing``'s fp32 parity tolerance. Dense peers whose T x T
matrices would not fit in half of the machine's free memory are reported as
skipped, with the size they would need.
"""

from __future__ import annotations

import copy
import os

import torch
import torch.nn.functional as F
from torch import nn

from fastlstm.bench import core
from fastlstm.bench.core import Case, Check, Impl, Prepared
from fastlstm.bench.shapes import (ATTENTION_BATCH_FULL, ATTENTION_BATCH_QUICK, ATTENTION_EMBED, ATTENTION_HEADS,
                                   ATTENTION_T_FULL, ATTENTION_T_QUICK, ATTENTION_WINDOW, attention_flops)

FORWARD = "forward"
BACKWARD = "forward+backward"
BLOCK = 256


def _available_bytes() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def dense_bytes(B: int, T: int, heads: int, backward: bool) -> int:
    # scores, probabilities and the float mask, plus their gradients in backward
    return B * heads * T * T * 4 * (6 if backward else 3)


def _require_dense_fits(B: int, T: int, backward: bool, device: str = "cpu") -> None:
    have = torch.cuda.mem_get_info()[0] if device == "cuda" else _available_bytes()
    need = dense_bytes(B, T, ATTENTION_HEADS, backward)
    if need > have // 2:
        raise core.Skipped(f"dense T x T attention needs ~{need / 2**30:.1f} GiB; "
                           f"{have / 2**30:.1f} GiB free")


def _sparse_op():
    import fastlstm.ops as ops

    op = getattr(ops, "sparse_attention", None)
    if op is None:
        raise core.Unavailable("this fastlstm has no fastlstm.ops.sparse_attention")
    return op


def blockwise_reference(q, k, v, window, backward_of=None):
    """float64 sliding-window attention computed block by block (no global tokens).

    Returns the output; with ``backward_of`` (a weight tensor like the output)
    also the gradients of ``sum(out * backward_of)`` for q, k, v.
    """
    from fastlstm.reference import sparse_attention as reference

    left, right = window
    T = q.shape[-2]
    q64, k64, v64 = (t.detach().double().requires_grad_(backward_of is not None) for t in (q, k, v))
    out = torch.empty(q64.shape, dtype=torch.float64, device=q.device)
    for s in range(0, T, BLOCK):
        e = min(T, s + BLOCK)
        ks, ke = max(0, s - left), min(T, e + right)
        shift = s - ks  # local query i is global s+i; local key j is global ks+j
        block, _ = reference(q64[..., s:e, :], k64[..., ks:ke, :], v64[..., ks:ke, :], (left - shift, right + shift))
        out[..., s:e, :] = block.detach()
        if backward_of is not None:
            (block * backward_of[..., s:e, :].double()).sum().backward()
    if backward_of is None:
        return out
    return out, q64.grad, k64.grad, v64.grad


def _parity(pairs) -> Check:
    from fastlstm.testing import PARITY_TOLERANCE, max_abs_error

    tol = PARITY_TOLERANCE[torch.float32]
    worst, passed = 0.0, True
    for actual, expected in pairs:
        err = max_abs_error(actual, expected)
        bound = tol["atol"] + tol["rtol"] * expected.abs().max().item()
        worst = max(worst, err)
        if err > bound:
            passed = False
    return Check(worst, tol["atol"], passed, "" if passed else "differs from the float64 reference")


class _Inputs:
    def __init__(self, B: int, T: int, device: str):
        gen = torch.Generator().manual_seed(1000 + T + B)
        D = ATTENTION_EMBED // ATTENTION_HEADS
        self.q, self.k, self.v = (torch.randn(B, ATTENTION_HEADS, T, D, generator=gen).to(device) for _ in range(3))
        self.x = torch.randn(B, T, ATTENTION_EMBED, generator=gen).to(device)


def _inputs(ctx, B, T) -> _Inputs:
    key = ("attention", B, T)
    if key not in ctx.cache:
        ctx.cache.clear()  # one shape's tensors at a time
        ctx.cache[key] = _Inputs(B, T, ctx.device)
    return ctx.cache[key]


def _mask(T: int, device) -> torch.Tensor:
    left, right = ATTENTION_WINDOW
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    return (j >= i - left) & (j <= i + right)


def _timed(forward, leaves, backward: bool):
    """The timed call: forward, or forward then gradients of the output's sum."""
    if not backward:
        def fn():
            with torch.no_grad():
                return forward()
        return fn
    leaves = [t.detach().requires_grad_(True) for t in leaves]

    def fn_bwd():
        return torch.autograd.grad(forward(*leaves).sum(), leaves)
    return fn_bwd


def _op_impl(ctx, B, T, backward) -> Impl:
    def build() -> Prepared:
        op = _sparse_op()
        inp = _inputs(ctx, B, T)
        q, k, v = inp.q, inp.k, inp.v

        def forward(q=q, k=k, v=v):
            return op(q, k, v, ATTENTION_WINDOW)[0]

        def check() -> Check:
            if not backward:
                with torch.no_grad():
                    return _parity([(forward(), blockwise_reference(q, k, v, ATTENTION_WINDOW))])
            leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
            out = forward(*leaves)
            grads = torch.autograd.grad(out.sum(), leaves)
            ref = blockwise_reference(q, k, v, ATTENTION_WINDOW, backward_of=torch.ones_like(out))
            return _parity(zip([out.detach(), *grads], ref))

        return Prepared(fn=_timed(forward, (q, k, v), backward), check=check, sync=ctx.sync(), measure_memory=True)

    return Impl("fastlstm.ops.sparse_attention", True, build)


def _sdpa_impl(ctx, B, T, backward) -> Impl:
    def build() -> Prepared:
        _require_dense_fits(B, T, backward, ctx.device)
        inp = _inputs(ctx, B, T)
        mask = _mask(T, ctx.device)

        def forward(q=inp.q, k=inp.k, v=inp.v):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

        return Prepared(fn=_timed(forward, (inp.q, inp.k, inp.v), backward), sync=ctx.sync(), measure_memory=True)

    return Impl("torch sdpa (masked)", False, build)


def _module_pair(ctx):
    """(fastlstm.SparseAttention, nn.MultiheadAttention) with the same weights."""
    import fastlstm

    cls = getattr(fastlstm, "SparseAttention", None)
    if cls is None:
        raise core.Unavailable("this fastlstm has no fastlstm.SparseAttention")
    if "attention_modules" not in ctx.cache:
        torch.manual_seed(7)
        mha = nn.MultiheadAttention(ATTENTION_EMBED, ATTENTION_HEADS, batch_first=True).to(ctx.device)
        fast = cls(ATTENTION_EMBED, ATTENTION_HEADS, batch_first=True, window=ATTENTION_WINDOW).to(ctx.device)
        fast.load_state_dict(mha.state_dict())
        ctx.cache["attention_modules"] = (fast, mha)
    return ctx.cache["attention_modules"]


def module_reference(mha: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """float64 output of the windowed module, from its weights and the blockwise reference."""
    m = copy.deepcopy(mha).double()
    B, T, E = x.shape
    qkv = F.linear(x.double(), m.in_proj_weight, m.in_proj_bias)
    q, k, v = (t.reshape(B, T, ATTENTION_HEADS, -1).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    out = blockwise_reference(q, k, v, ATTENTION_WINDOW)
    return m.out_proj(out.transpose(1, 2).reshape(B, T, E))


def _module_impl(ctx, B, T, backward, ours: bool) -> Impl:
    def build() -> Prepared:
        if not ours:
            _require_dense_fits(B, T, backward, ctx.device)
            try:
                mha = _module_pair(ctx)[1]
            except core.Unavailable:
                torch.manual_seed(7)
                mha = nn.MultiheadAttention(ATTENTION_EMBED, ATTENTION_HEADS, batch_first=True).to(ctx.device)
            not_allowed = ~_mask(T, ctx.device)

            def forward(x=None):
                x = _inputs(ctx, B, T).x if x is None else x
                return mha(x, x, x, attn_mask=not_allowed, need_weights=False)[0]

            return Prepared(fn=_timed(forward, (_inputs(ctx, B, T).x,), backward), sync=ctx.sync(), measure_memory=True)
        fast, mha = _module_pair(ctx)
        x = _inputs(ctx, B, T).x

        def forward_fast(x=x):
            return fast(x, x, x, need_weights=False)[0]

        def check() -> Check:
            with torch.no_grad():
                return _parity([(forward_fast(), module_reference(mha, x))])

        return Prepared(fn=_timed(forward_fast, (x,), backward), check=check, sync=ctx.sync(), measure_memory=True)

    return Impl("fastlstm.SparseAttention" if ours else "nn.MultiheadAttention (masked)", ours, build)


def plan(ctx) -> list[Case]:
    Ts = ATTENTION_T_QUICK if ctx.quick else ATTENTION_T_FULL
    Bs = ATTENTION_BATCH_QUICK if ctx.quick else ATTENTION_BATCH_FULL
    D = ATTENTION_EMBED // ATTENTION_HEADS
    cases = []
    for T in Ts:
        for B in Bs:
            for mode in (FORWARD, BACKWARD):
                backward = mode == BACKWARD
                flops = attention_flops(B, T, ATTENTION_HEADS, D, ATTENTION_WINDOW) * (3 if backward else 1)
                params = {"B": B, "T": T, "embed": ATTENTION_EMBED, "heads": ATTENTION_HEADS,
                          "window": list(ATTENTION_WINDOW), "dtype": "float32"}
                op = Case("attention", f"op T={T} B={B}", mode, params, flops=flops,
                          note="GFLOP/s counts only the query-key pairs inside the window")
                op.impls = [_op_impl(ctx, B, T, backward), _sdpa_impl(ctx, B, T, backward)]
                mod = Case("attention", f"module T={T} B={B}", mode, params,
                           note="modules include the input and output projections")
                mod.impls = [_module_impl(ctx, B, T, backward, True), _module_impl(ctx, B, T, backward, False)]
                cases += [op, mod]
    return cases
