"""Autograd of the sparse-attention forward ops, shared by the C++/CUDA ops
(``fastlstm.ops.attention``) and the Triton ones (``fastlstm.triton.attention``).
A leaf module: neither imports the other through it."""

from __future__ import annotations

import torch


def setup_context(ctx, inputs, output):
    q, k, v, left, right, global_tokens, scale, key_padding_mask = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, key_padding_mask)
    ctx.pattern = (left, right, global_tokens, scale)
    ctx.mark_non_differentiable(lse)


def make_backward(backward_op):
    """Autograd backward for a sparse-attention forward op whose backward is
    ``backward_op`` (shared by the C++/CUDA and Triton op pairs)."""

    def _backward(ctx, dout, _dlse):
        q, k, v, out, lse, key_padding_mask = ctx.saved_tensors
        left, right, global_tokens, scale = ctx.pattern
        if dout is None:
            dout = torch.zeros_like(out)
        extra = getattr(ctx, "dropout", ())  # (dropout_p, seed) of the dropout op
        dq, dk, dv = backward_op(q, k, v, out, lse, dout, left, right, global_tokens, scale, key_padding_mask, *extra)
        return (dq, dk, dv) + (None,) * (5 + len(extra))

    return _backward
