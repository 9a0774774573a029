"""``fastlstm::lstm_input_projection``, ``fastlstm::lstm_recurrence`` and
``fastlstm::lstm_recurrence_backward``: custom ops with fake kernels and autograd.

``project``, ``recurrence`` and ``recurrence_backward`` are the CPU kernel
calls behind them; callers that hold prepared weights pass the packed forms
in (the ops look them up in the registry). Every buffer a kernel reads is a
local of the calling frame or owned by a prepared object it holds.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastlstm import _ext
from fastlstm.ops._alloc import empty, pooled_empty
from fastlstm.ops.lstm import _checks, grads
from fastlstm.ops.lstm.prepared import prepared_tensor, workspace

# Default of the ``packed`` arguments below: look the packed weights up.
LOOKUP = object()


def project(x: Tensor, w_ih: Tensor, bias: Tensor | None, directions: int, out: Tensor | None = None,
            packed=LOOKUP) -> Tensor:
    """x (N, I) · w_ihᵀ + bias -> (N, D*4H) (into ``out`` when given). fp32 runs
    the SIMD kernel with ``packed`` (looked up when None), else torch's GEMM."""
    N, I = x.shape
    G = w_ih.shape[0] // directions
    if packed is LOOKUP:
        packed = None
        if N > 0 and I > 0 and x.dtype == torch.float32:
            packed = prepared_tensor(w_ih, directions, G // 4, I, True).packed(w_ih)
    if packed is None or N == 0 or I == 0:
        gx = torch.addmm(bias, x, w_ih.t()) if bias is not None else x @ w_ih.t()
        return gx if out is None else out.copy_(gx)
    x = x.contiguous()
    bias = bias.contiguous() if bias is not None else None
    gx = empty(N, directions * G, like=x) if out is None else out
    _ext._C.lstm_input_projection(
        "float32", _ext.buf(x), _ext.buf(packed), _ext.buf(bias), _ext.buf(gx),
        N, directions, G // 4, I, torch.get_num_threads(),
    )
    return gx


def _input_projection_impl(x: Tensor, w_ih: Tensor, bias: Tensor | None, directions: int) -> Tensor:
    """Input gates of every step for one layer, all directions: x · w_ihᵀ + bias.

    x: (N, I); w_ih: (D*4H, I) (directions concatenated); bias: (D*4H,) or None.
    Returns (N, D*4H). fp32 runs the SIMD kernel on the fastlstm thread pool
    (no torch intra-op threads); otherwise torch's GEMM.

    >>> gx = lstm_input_projection(torch.randn(10, 8), torch.randn(64, 8), None, 1)
    """
    _checks.check_projection_args(x, w_ih, bias, directions)
    return project(x, w_ih, bias, directions)


lstm_input_projection = torch.library.custom_op(
    "fastlstm::lstm_input_projection", _input_projection_impl, mutates_args=(), device_types="cpu"
)


@lstm_input_projection.register_fake
def _(x, w_ih, bias, directions):
    _checks.check_projection_args(x, w_ih, bias, directions)
    return x.new_empty(x.shape[0], w_ih.shape[0])


def _projection_setup_context(ctx, inputs, output):
    x, w_ih, bias, _ = inputs
    ctx.save_for_backward(x, w_ih)
    ctx.has_bias = bias is not None


def _projection_backward(ctx, dgx):
    x, w_ih = ctx.saved_tensors
    dx = grads.input_grad(dgx, w_ih) if ctx.needs_input_grad[0] else None
    dw, db = grads.input_weight_grads(dgx, x, ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2])
    return dx, dw, db, None


lstm_input_projection.register_autograd(_projection_backward, setup_context=_projection_setup_context)


def _dims(gx: Tensor, w_hh: Tensor) -> tuple[int, int, int, int, int]:
    T, B, D, G = gx.shape
    return T, B, D, G // 4, w_hh.shape[-1]


def recurrence(gx, w_hh, w_hr, h0, c0, lengths, save_for_backward, packed=LOOKUP):
    """The fused recurrence kernel call (arguments checked); ``packed``: w_hh's
    packed form, looked up when None."""
    T, B, D, H, P = _dims(gx, w_hh)
    gx, w_hh, h0, c0 = gx.contiguous(), w_hh.contiguous(), h0.contiguous(), c0.contiguous()
    w_hr = w_hr.contiguous() if w_hr is not None else None
    lengths = _checks.check_lengths(lengths)
    if packed is LOOKUP:
        packed = prepared_tensor(w_hh, D, H, P).packed(w_hh)
    y = empty(T, B, D, P, like=gx)
    hn = empty(D, B, P, like=gx)
    cn = empty(D, B, H, like=gx)
    # Saved for backward and released after it: pooled (see pooled_empty).
    gates = pooled_empty(T, B, D, 4 * H, like=gx) if save_for_backward else gx.new_empty(0)
    cells = pooled_empty(T, B, D, H, like=gx) if save_for_backward else gx.new_empty(0)
    buf = _ext.buf
    _ext._C.lstm_recurrence_fwd(
        _ext.dtype_name(gx.dtype),
        buf(gx), buf(w_hh), buf(w_hr), buf(h0), buf(c0), buf(lengths),
        buf(y), buf(hn), buf(cn),
        buf(gates if save_for_backward else None), buf(cells if save_for_backward else None),
        T, B, D, H, P, torch.get_num_threads(), buf(packed),
    )
    return y, hn, cn, gates, cells


def _recurrence_impl(gx: Tensor, w_hh: Tensor, w_hr: Tensor | None, h0: Tensor, c0: Tensor,
                     lengths: Tensor | None, save_for_backward: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Fused LSTM recurrence for one layer, one or both directions.

    gx: (T, B, D, 4H) = x·W_ihᵀ + b_ih + b_hh; w_hh: (D, 4H, P); w_hr: (D, P, H)
    or None; h0: (D, B, P); c0: (D, B, H); lengths: (B,) int64 CPU or None.
    Direction 1 runs in reverse time. Returns y (T, B, D, P), h_n (D, B, P),
    c_n (D, B, H), and when ``save_for_backward`` the gate activations
    (T, B, D, 4H) and cell states (T, B, D, H) backward needs (else empty).

    >>> y, h_n, c_n, _, _ = lstm_recurrence(gx, w_hh, None, h0, c0, None, False)
    """
    _checks.check_recurrence_args(gx, w_hh, w_hr, h0, c0, lengths)
    _checks.check_kernel_dtype(gx, "gx")
    return recurrence(gx, w_hh, w_hr, h0, c0, lengths, save_for_backward)


lstm_recurrence = torch.library.custom_op(
    "fastlstm::lstm_recurrence", _recurrence_impl, mutates_args=(), device_types="cpu"
)


@lstm_recurrence.register_fake
def _(gx, w_hh, w_hr, h0, c0, lengths, save_for_backward):
    _checks.check_recurrence_args(gx, w_hh, w_hr, h0, c0, lengths)
    T, B, D, H, P = _dims(gx, w_hh)
    gates = gx.new_empty(T, B, D, 4 * H) if save_for_backward else gx.new_empty(0)
    cells = gx.new_empty(T, B, D, H) if save_for_backward else gx.new_empty(0)
    return gx.new_empty(T, B, D, P), gx.new_empty(D, B, P), gx.new_empty(D, B, H), gates, cells


def recurrence_backward(dy, dhn, dcn, w_hh, w_hr, c0, gates, cells, lengths, dgates: Tensor | None = None,
                        packed=LOOKUP):
    """The fused reverse recurrence kernel call (arguments checked); ``dgates``
    (T, B, D, 4H): optional destination; ``packed``: as in :func:`recurrence`."""
    T, B, D, G = gates.shape
    H, P = G // 4, w_hh.shape[-1]
    dy, dhn, dcn = dy.contiguous(), dhn.contiguous(), dcn.contiguous()
    w_hh, c0 = w_hh.contiguous(), c0.contiguous()
    w_hr = w_hr.contiguous() if w_hr is not None else None
    gates, cells = gates.contiguous(), cells.contiguous()
    lengths = _checks.check_lengths(lengths)
    if packed is LOOKUP:
        packed = prepared_tensor(w_hh, D, H, P).packed(w_hh)
    dgates = empty(T, B, D, G, like=dy) if dgates is None else dgates
    dh0 = empty(D, B, P, like=dy)
    dc0 = empty(D, B, H, like=dy)
    dhproj = empty(T, B, D, P, like=dy) if w_hr is not None else dy.new_empty(0)
    buf = _ext.buf
    _ext._C.lstm_recurrence_bwd(
        _ext.dtype_name(dy.dtype),
        buf(dy), buf(dhn), buf(dcn), buf(w_hh), buf(w_hr), buf(c0), buf(gates), buf(cells),
        buf(lengths), buf(dgates), buf(dh0), buf(dc0), buf(dhproj if w_hr is not None else None),
        T, B, D, H, P, torch.get_num_threads(), buf(packed),
    )
    return dgates, dh0, dc0, dhproj


@torch.library.custom_op("fastlstm::lstm_recurrence_backward", mutates_args=(), device_types="cpu")
def lstm_recurrence_backward(
    dy: Tensor, dhn: Tensor, dcn: Tensor, w_hh: Tensor, w_hr: Tensor | None, c0: Tensor,
    gates: Tensor, cells: Tensor, lengths: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fused reverse recurrence. Returns d gx (T, B, D, 4H), d h0 (D, B, P),
    d c0 (D, B, H) and, when projecting, the gradient w.r.t. every projected
    hidden output (T, B, D, P) for dW_hr (else empty)."""
    _checks.check_recurrence_backward_args(dy, dhn, dcn, w_hh, w_hr, c0, gates, cells, lengths)
    return recurrence_backward(dy, dhn, dcn, w_hh, w_hr, c0, gates, cells, lengths)


@lstm_recurrence_backward.register_fake
def _(dy, dhn, dcn, w_hh, w_hr, c0, gates, cells, lengths):
    _checks.check_recurrence_backward_args(dy, dhn, dcn, w_hh, w_hr, c0, gates, cells, lengths)
    T, B, D, G = gates.shape
    H, P = G // 4, w_hh.shape[-1]
    dhproj = dy.new_empty(T, B, D, P) if w_hr is not None else dy.new_empty(0)
    return dy.new_empty(T, B, D, G), dy.new_empty(D, B, P), dy.new_empty(D, B, H), dhproj


def reverse_recurrence(dy, dhn, dcn, w_hh, w_hr, h0, c0, y, gates, cells, lengths, reuse: bool = False,
                       packed=LOOKUP):
    """The fused reverse recurrence, with zeros for output gradients autograd
    left out. ``reuse``: d gates goes to the thread's "dgates" workspace (the
    caller lets no view of it escape)."""
    dy = torch.zeros_like(y) if dy is None else dy
    dhn = torch.zeros_like(h0) if dhn is None else dhn
    dcn = torch.zeros_like(c0) if dcn is None else dcn
    if gates.dtype == torch.float32 and grads.plain_eager(gates):
        dgates = workspace(gates.numel(), gates, "dgates").view(gates.shape) if reuse else None
        _checks.check_recurrence_backward_args(dy, dhn, dcn, w_hh, w_hr, c0, gates, cells, lengths)
        return recurrence_backward(dy, dhn, dcn, w_hh, w_hr, c0, gates, cells, lengths, dgates, packed)
    return torch.ops.fastlstm.lstm_recurrence_backward(dy, dhn, dcn, w_hh, w_hr, c0, gates, cells, lengths)


def _setup_context(ctx, inputs, output):
    gx, w_hh, w_hr, h0, c0, lengths, save_for_backward = inputs
    y, _, _, gates, cells = output
    ctx.save_for_backward(gx, w_hh, w_hr, h0, c0, lengths, y, gates, cells)
    ctx.saved_gates = save_for_backward
    ctx.mark_non_differentiable(gates, cells)
    # Unused outputs get None, not zeros: autograd would otherwise fill a
    # gradient the size of gates and cells for every layer, every step.
    ctx.set_materialize_grads(False)


def _backward(ctx, dy, dhn, dcn, _dgates, _dcells):
    gx, w_hh, w_hr, h0, c0, lengths, y, gates, cells = ctx.saved_tensors
    if not ctx.saved_gates:
        raise RuntimeError(
            "fastlstm::lstm_recurrence was run with save_for_backward=False; cannot differentiate it"
        )
    if torch.is_grad_enabled():  # create_graph: a differentiable backward, through the reference
        from fastlstm.ops.lstm.double_backward import recurrence_grads

        return recurrence_grads(ctx, gx, w_hh, w_hr, h0, c0, lengths, dy, dhn, dcn)
    dgates, dh0, dc0, dhproj = reverse_recurrence(dy, dhn, dcn, w_hh, w_hr, h0, c0, y, gates, cells, lengths)
    _, dw_hh, _ = grads.weight_grads(dgates, y, h0, lengths)
    dw_hr = grads.projection_weight_grad(dhproj, gates, cells) if w_hr is not None else None
    return dgates, dw_hh, dw_hr, dh0, dc0, None, None


lstm_recurrence.register_autograd(_backward, setup_context=_setup_context)
