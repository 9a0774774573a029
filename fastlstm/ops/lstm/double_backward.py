"""Differentiable backwards for ``create_graph=True`` (gradients of gradients).

The fused backward kernels are not themselves differentiable; when autograd
records the backward (a gradient penalty, MAML, gradgradcheck) the ops
recompute their forward through the plain-PyTorch reference and take its
gradients with ``create_graph=True``. Same math, reference speed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastlstm import reference as _reference


def grads_of(outputs, grad_outputs, inputs: list, needs: tuple, create_graph: bool = True) -> list:
    """Gradients of ``outputs`` w.r.t. the ``inputs`` whose ``needs`` flag is set (None elsewhere)."""
    wanted = [t for t, need in zip(inputs, needs) if need and t is not None]
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if g is not None]
    got = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                   create_graph=create_graph, allow_unused=True, materialize_grads=True))
    return [next(got) if need and t is not None else None for t, need in zip(inputs, needs)]


def list_flags(need, n: int) -> tuple:
    """needs_input_grad of a list argument (a list of flags, or one flag) as n flags."""
    return tuple(need) if isinstance(need, (list, tuple)) else (bool(need),) * n


def recurrence_grads(ctx, gx, w_hh, w_hr, h0, c0, lengths, dy, dhn, dcn):
    """lstm_recurrence's backward as a differentiable graph: (d gx, d w_hh, d w_hr, d h0, d c0, None, None)."""
    inputs = [gx, w_hh, w_hr, h0, c0]
    with torch.enable_grad():
        y, hn, cn, _, _ = _reference.lstm_recurrence(gx, w_hh, w_hr, h0, c0, lengths)
        got = grads_of((y, hn, cn), (dy, dhn, dcn), inputs, ctx.needs_input_grad[:5])
    return (*got, None, None)


def layer_grads(ctx, x, weights: list[Tensor], h0, c0, lengths, dy, dhn, dcn):
    """lstm_layer's backward as a differentiable graph: (d x, d weights, d h0, d c0, None, None)."""
    D = h0.shape[0]
    needs = ctx.needs_input_grad
    inputs = [x, *weights, h0, c0]
    flags = (needs[0], *list_flags(needs[1], len(weights)), needs[2], needs[3])
    with torch.enable_grad():
        y, hn, cn = _reference.lstm(x, (h0, c0), list(weights), num_layers=1, bidirectional=D == 2,
                                    has_bias=ctx.has_bias, lengths=lengths)
        T, B = x.shape[0], x.shape[1]
        got = grads_of((y.view(T, B, D, -1), hn, cn), (dy, dhn, dcn), inputs, flags)
    dweights = got[1:-2]
    return got[0], dweights, got[-2], got[-1], None, None


def stack_grads(ctx, x, weights: list[Tensor], h0, c0, lengths, dy, dhn, dcn):
    """lstm_stack's backward as a differentiable graph: (d x, d weights, d h0, d c0, None x 4)."""
    num_layers, D, has_bias, _ = ctx.config
    needs = ctx.needs_input_grad
    flags = (needs[0], *list_flags(needs[1], len(weights)), needs[2], needs[3])
    inputs = [x, *weights, h0, c0]
    with torch.enable_grad():
        outputs = _reference.lstm(x, (h0, c0), list(weights), num_layers=num_layers, bidirectional=D == 2,
                                  has_bias=has_bias, lengths=lengths)
        got = grads_of(outputs, (dy, dhn, dcn), inputs, flags)
    dweights = got[1:-2]
    return got[0], dweights, got[-2], got[-1], None, None, None, None
