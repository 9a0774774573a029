"""Sparse (sliding-window + global-token) attention: the
``fastlstm::sparse_attention`` custom op (with its backward op, fake kernels
and autograd) and :func:`sparse_attention`, the public entry that picks a
backend.

Layouts follow ``scaled_dot_product_attention``: q (B, H, Tq, D), k (B, H, Tk, D),
v (B, H, Tk, Dv). The pattern is documented in :mod:`fastlstm.reference.attention`;
a query with no allowed key (all its keys padded) gets output 0 and
log-sum-exp ``-inf``, where torch's masked softmax would give NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastlstm import _backends, _ext
from fastlstm.ops._alloc import empty
from fastlstm.ops.dropout import draw_seed
from fastlstm.reference import attention as _reference
from fastlstm.reference.attention import normalize_window
from fastlstm._attention_autograd import make_backward, setup_context

# --------------------------------------------------------------------------
# fastlstm::sparse_attention (CPU / CUDA kernels in fastlstm._C)
# --------------------------------------------------------------------------


def _padding_buf(key_padding_mask: Tensor | None) -> Tensor | None:
    # torch.bool is one byte per element with 0/1 values: the kernels read it as uint8.
    return None if key_padding_mask is None else key_padding_mask.contiguous()


def _sizes(q: Tensor, k: Tensor, v: Tensor) -> tuple[int, int, int, int, int, int]:
    B, H, Tq, D = q.shape
    return B, H, Tq, k.shape[2], D, v.shape[3]


@torch.library.custom_op("fastlstm::sparse_attention", mutates_args=(), device_types=("cpu", "cuda"))
def sparse_attention_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    left: int,
    right: int,
    global_tokens: int,
    scale: float,
    key_padding_mask: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Fused sparse attention. ``left``/``right`` < 0 mean unbounded.

    q: (B, H, Tq, D); k: (B, H, Tk, D); v: (B, H, Tk, Dv); key_padding_mask:
    (B, Tk) bool (True = padding) or None. Returns output (B, H, Tq, Dv) and
    log-sum-exp (B, H, Tq).

    >>> out, lse = torch.ops.fastlstm.sparse_attention(q, k, v, 64, 64, 0, 0.125, None)
    """
    return _forward(q, k, v, left, right, global_tokens, scale, key_padding_mask, band=False)[:2]


_DENSE = (0, 0, 0)


def _row_strided(t: Tensor) -> tuple[Tensor, tuple, tuple[int, int, int]]:
    """(tensor, buffer, (batch, head, row) strides) of a (B, H, T, dim) CPU input
    for the kernel: as it is when its rows are contiguous (views of a packed
    projection need no copy), else a dense copy."""
    if not t.is_contiguous() and t.numel() > 0 and t.stride(-1) == 1 and min(t.stride()) >= 0:
        return t, _ext.strided_buf(t), tuple(t.stride()[:3])
    t = t.contiguous()
    return t, _ext.buf(t), _DENSE


def _forward(q, k, v, left, right, global_tokens, scale, key_padding_mask, band: bool, dropout_p=0.0, seed=0,
             bthd: bool = False):
    """Runs the forward kernel: (out, lse, band weights (B, H, Tq, left + right + 1) or None).
    With ``band`` (CPU inference, weights too) or ``bthd`` (CPU) the inputs may
    be strided and ``out`` is a (B, H, Tq, Dv) view of (B, Tq, H, Dv) memory,
    ready for the out-projection without a copy."""
    # The raw ops check too: the kernel sees only element counts, so a float64
    # k or a float mask with the right count would otherwise be misread.
    _check_inputs(q, k, v, global_tokens, key_padding_mask)
    B, H, Tq, Tk, D, Dv = _sizes(q, k, v)
    pad = _padding_buf(key_padding_mask)
    lse = empty(B, H, Tq, like=q)
    buf = _ext.buf
    if band or bthd:
        (q, bq, sq), (k, bk, sk), (v, bv, sv) = _row_strided(q), _row_strided(k), _row_strided(v)
        out = empty(B, Tq, H, Dv, like=q).transpose(1, 2)
        weights = empty(B, H, Tq, left + right + 1, like=q) if band else None
        bo = _ext.strided_buf(out)
        _ext._C.sparse_attention_fwd(
            _ext.dtype_name(q.dtype), bq, bk, bv, buf(pad), bo, buf(lse), B, H, Tq, Tk, D, Dv, left, right,
            global_tokens, scale, torch.get_num_threads(), band=buf(weights), q_strides=sq,
            k_strides=sk, v_strides=sv, out_strides=tuple(out.stride()[:3]) if out.numel() else _DENSE,
            dropout_p=dropout_p, seed=seed,
        )
        return out, lse, weights
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = empty(B, H, Tq, Dv, like=q)
    args = (_ext.dtype_name(q.dtype), buf(q), buf(k), buf(v), buf(pad), buf(out), buf(lse),
            B, H, Tq, Tk, D, Dv, left, right, global_tokens, scale)
    if q.device.type == "cuda":
        _ext._C.sparse_attention_fwd_cuda(*args, torch.cuda.current_stream(q.device).cuda_stream)
    else:
        _ext._C.sparse_attention_fwd(*args, torch.get_num_threads(), dropout_p=dropout_p, seed=seed)
    return out, lse, None


@sparse_attention_op.register_fake
def _(q, k, v, left, right, global_tokens, scale, key_padding_mask):
    _check_inputs(q, k, v, global_tokens, key_padding_mask)
    B, H, Tq, Tk, D, Dv = _sizes(q, k, v)
    return q.new_empty(B, H, Tq, Dv), q.new_empty(B, H, Tq)


@torch.library.custom_op("fastlstm::sparse_attention_banded", mutates_args=(), device_types="cpu")
def sparse_attention_banded(
    q: Tensor, k: Tensor, v: Tensor, left: int, right: int, scale: float, key_padding_mask: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Inference form of the sliding-window op (CPU, no autograd): output
    (B, H, Tq, Dv) and the softmax weights of each query's window (B, H, Tq,
    left + right + 1), column c = key i - left + c (0 outside the keys or on padding).
    q, k and v may be strided views (rows contiguous), e.g. of one packed
    in-projection; the output is laid out (B, Tq, H, Dv) in memory, so
    ``out.transpose(1, 2).reshape(B, Tq, H * Dv)`` is free.

    >>> out, band = torch.ops.fastlstm.sparse_attention_banded(q, k, v, 64, 64, 0.125, None)
    """
    if left < 0 or right < 0:
        raise ValueError(f"sparse_attention_banded: the window must be bounded, got ({left}, {right})")
    out, _, band = _forward(q, k, v, left, right, 0, scale, key_padding_mask, band=True)
    return out, band


@sparse_attention_banded.register_fake
def _(q, k, v, left, right, scale, key_padding_mask):
    _check_inputs(q, k, v, 0, key_padding_mask)
    B, H, Tq, Tk, D, Dv = _sizes(q, k, v)
    return q.new_empty(B, Tq, H, Dv).transpose(1, 2), q.new_empty(B, H, Tq, left + right + 1)


@torch.library.custom_op("fastlstm::sparse_attention_backward", mutates_args=(), device_types=("cpu", "cuda"))
def sparse_attention_backward_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    dout: Tensor,
    left: int,
    right: int,
    global_tokens: int,
    scale: float,
    key_padding_mask: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients (dq, dk, dv) of :func:`sparse_attention_op` given the output,
    its log-sum-exp and the output gradient ``dout`` (B, H, Tq, Dv)."""
    return _backward(q, k, v, out, lse, dout, left, right, global_tokens, scale, key_padding_mask)


def _backward(q, k, v, out, lse, dout, left, right, global_tokens, scale, key_padding_mask, dropout_p=0.0, seed=0):
    """Runs the backward kernel: (dq, dk, dv)."""
    _check_inputs(q, k, v, global_tokens, key_padding_mask)
    B, H, Tq, Tk, D, Dv = _sizes(q, k, v)
    for name, t, shape in (("out", out, (B, H, Tq, Dv)), ("lse", lse, (B, H, Tq)), ("dout", dout, (B, H, Tq, Dv))):
        if not isinstance(t, Tensor) or t.dtype != q.dtype:
            raise TypeError(f"sparse_attention_backward: {name} must have q's dtype {q.dtype}, got "
                            f"{t.dtype if isinstance(t, Tensor) else type(t).__name__}")
        if tuple(t.shape) != shape or t.device != q.device:
            raise ValueError(f"sparse_attention_backward: {name} must have shape {shape} on {q.device}, got "
                             f"{tuple(t.shape)} on {t.device}")
    q, k, v, lse = q.contiguous(), k.contiguous(), v.contiguous(), lse.contiguous()
    buf = _ext.buf
    cuda = q.device.type == "cuda"
    if cuda:
        out, dout = out.contiguous(), dout.contiguous()
        (bo, so), (bdo, sdo) = (buf(out), _DENSE), (buf(dout), _DENSE)
    else:  # the CPU kernel reads out and dout in place when their rows are contiguous
        (out, bo, so), (dout, bdo, sdo) = _row_strided(out), _row_strided(dout)
    pad = _padding_buf(key_padding_mask)
    dq = empty(B, H, Tq, D, like=q)
    dk = empty(B, H, Tk, D, like=q)
    dv = empty(B, H, Tk, Dv, like=q)
    args = (_ext.dtype_name(q.dtype), buf(q), buf(k), buf(v), bo, buf(lse), bdo, buf(pad),
            buf(dq), buf(dk), buf(dv), B, H, Tq, Tk, D, Dv, left, right, global_tokens, scale)
    if cuda:
        _ext._C.sparse_attention_bwd_cuda(*args, torch.cuda.current_stream(q.device).cuda_stream)
    else:
        _ext._C.sparse_attention_bwd(*args, torch.get_num_threads(), dropout_p=dropout_p, seed=seed,
                                     out_strides=so, dout_strides=sdo)
    return dq, dk, dv


@sparse_attention_backward_op.register_fake
def _(q, k, v, out, lse, dout, left, right, global_tokens, scale, key_padding_mask):
    # Contiguous like the real kernel's outputs (empty_like would copy a permuted
    # q's strides, and compiled graphs would then view the real result wrongly).
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


sparse_attention_op.register_autograd(
    make_backward(lambda *args: torch.ops.fastlstm.sparse_attention_backward(*args)), setup_context=setup_context
)


# --------------------------------------------------------------------------
# fastlstm::sparse_attention_dropout (CPU training with attention dropout)
# --------------------------------------------------------------------------


@torch.library.custom_op("fastlstm::sparse_attention_dropout", mutates_args=(), device_types="cpu")
def sparse_attention_dropout_op(
    q: Tensor, k: Tensor, v: Tensor, left: int, right: int, global_tokens: int, scale: float,
    key_padding_mask: Tensor | None, dropout_p: float, seed: int,
) -> tuple[Tensor, Tensor]:
    """:func:`sparse_attention_op` with attention dropout: each softmax weight is
    dropped with probability ``dropout_p`` (kept ones scaled by 1 / (1 - p)), by a
    mask that is a pure function of ``seed`` and the weight's (batch * heads + head,
    query, key) (``_C.attention_dropout_mask`` materialises it). lse is that of
    the weights before dropout. The output is laid out (B, Tq, H, Dv) in memory
    (see :func:`sparse_attention_banded`): the out-projection reads it without a
    copy, and its gradient reaches the backward kernel without one."""
    return _forward(q, k, v, left, right, global_tokens, scale, key_padding_mask, False, dropout_p, seed,
                    bthd=True)[:2]


@sparse_attention_dropout_op.register_fake
def _(q, k, v, left, right, global_tokens, scale, key_padding_mask, dropout_p, seed):
    _check_inputs(q, k, v, global_tokens, key_padding_mask)
    B, H, Tq, Tk, D, Dv = _sizes(q, k, v)
    return q.new_empty(B, Tq, H, Dv).transpose(1, 2), q.new_empty(B, H, Tq)


@torch.library.custom_op("fastlstm::sparse_attention_dropout_backward", mutates_args=(), device_types="cpu")
def sparse_attention_dropout_backward_op(
    q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dout: Tensor, left: int, right: int,
    global_tokens: int, scale: float, key_padding_mask: Tensor | None, dropout_p: float, seed: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients (dq, dk, dv) of :func:`sparse_attention_dropout_op` (same mask)."""
    return _backward(q, k, v, out, lse, dout, left, right, global_tokens, scale, key_padding_mask, dropout_p, seed)


@sparse_attention_dropout_backward_op.register_fake
def _(q, k, v, out, lse, dout, left, right, global_tokens, scale, key_padding_mask, dropout_p, seed):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _dropout_setup_context(ctx, inputs, output):
    setup_context(ctx, inputs[:8], output)
    ctx.dropout = inputs[8:]


sparse_attention_dropout_op.register_autograd(
    make_backward(lambda *args: torch.ops.fastlstm.sparse_attention_dropout_backward(*args)),
    setup_context=_dropout_setup_context,
)


def dropout_mask(dropout_p: float, seed: int, B: int, H: int, Tq: int, Tk: int) -> Tensor:
    """The keep mask (B, H, Tq, Tk) bool of :func:`sparse_attention_dropout_op` for ``seed``."""
    mask = torch.empty(B, H, Tq, Tk, dtype=torch.uint8)
    _ext._C.attention_dropout_mask(dropout_p, seed, _ext.buf(mask), B * H, Tq, Tk)
    return mask.bool()


# --------------------------------------------------------------------------
# Public entry
# --------------------------------------------------------------------------


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, global_tokens: int, key_padding_mask: Tensor | None) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"sparse_attention: {name} must be a Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"sparse_attention: {name} must be 4-D (B, heads, T, head_dim); got shape {tuple(t.shape)}")
        if not t.dtype.is_floating_point:
            raise TypeError(f"sparse_attention: {name} must be floating point, got {t.dtype}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"sparse_attention: q, k, v must share a dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.device != q.device or v.device != q.device:
        raise ValueError("sparse_attention: q, k, v must be on the same device")
    if k.shape[:2] != q.shape[:2] or v.shape[:2] != q.shape[:2]:
        raise ValueError(
            f"sparse_attention: q, k, v must share (B, heads); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape[3] != q.shape[3]:
        raise ValueError(f"sparse_attention: k head_dim {k.shape[3]} != q head_dim {q.shape[3]}")
    if v.shape[2] != k.shape[2]:
        raise ValueError(f"sparse_attention: v has {v.shape[2]} keys, k has {k.shape[2]}")
    if not isinstance(global_tokens, int) or isinstance(global_tokens, bool) or global_tokens < 0:
        raise ValueError(f"sparse_attention: global_tokens must be an int >= 0; got {global_tokens!r}")
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, Tensor) or key_padding_mask.dtype != torch.bool:
            got = key_padding_mask.dtype if isinstance(key_padding_mask, Tensor) else type(key_padding_mask).__name__
            raise TypeError(f"sparse_attention: key_padding_mask must be a bool Tensor (True = padding), got {got}")
        if tuple(key_padding_mask.shape) != (k.shape[0], k.shape[2]):
            raise ValueError(
                f"sparse_attention: key_padding_mask must have shape (B, Tk) = {(k.shape[0], k.shape[2])}; "
                f"got {tuple(key_padding_mask.shape)}"
            )
        if key_padding_mask.device != q.device:
            raise ValueError("sparse_attention: key_padding_mask must be on the same device as q")


def sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window,
    global_tokens: int = 0,
    scale: float | None = None,
    key_padding_mask: Tensor | None = None,
    backend: str | None = None,
    dropout_p: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Sliding-window attention with optional global tokens, never forming Tq x Tk.

    q: (B, H, Tq, D); k: (B, H, Tk, D); v: (B, H, Tk, Dv), like
    ``scaled_dot_product_attention``. Query ``i`` attends keys
    ``i - left .. i + right`` (``window=(left, right)``; ``(w, 0)`` is causal,
    an int ``w`` means ``(w, w)``, ``None`` is dense), plus the first
    ``global_tokens`` positions, which also attend to every key.
    ``key_padding_mask`` (B, Tk) bool marks padding keys with True. ``scale``
    defaults to ``D ** -0.5``. Returns output (B, H, Tq, Dv) and the
    log-sum-exp of the scaled scores (B, H, Tq; not differentiable). Rows with
    no allowed key give output 0 and log-sum-exp ``-inf``.
    ``dropout_p`` > 0 drops attention weights (training; CPU kernels only), with a
    mask drawn from torch's default generator (so ``torch.manual_seed`` fixes it).

    >>> q = k = v = torch.randn(2, 4, 1440, 32)
    >>> out, lse = sparse_attention(q, k, v, window=(64, 64))
    """
    _check_inputs(q, k, v, global_tokens, key_padding_mask)
    window = normalize_window(window)
    left, right = window if window is not None else (-1, -1)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    scale = float(scale)
    name = _backends.resolve(backend, q.device, q.dtype, op="sparse_attention", head_dim=max(q.shape[-1], v.shape[-1]))
    if dropout_p:
        if not 0.0 <= dropout_p < 1.0:
            raise ValueError(f"sparse_attention: dropout_p must be in [0, 1); got {dropout_p!r}")
        if name != "cpu":
            raise NotImplementedError(f"sparse_attention: attention dropout runs on the cpu backend only, not {name!r}")
        seed = draw_seed()
        return torch.ops.fastlstm.sparse_attention_dropout(
            q, k, v, left, right, global_tokens, scale, key_padding_mask, float(dropout_p), seed
        )
    if name == "reference":
        return _reference.sparse_attention(q, k, v, window, global_tokens, scale, key_padding_mask)
    if name == "triton":
        from fastlstm.triton import attention as triton_attention

        return triton_attention.sparse_attention(q, k, v, left, right, global_tokens, scale, key_padding_mask)
    return torch.ops.fastlstm.sparse_attention(q, k, v, left, right, global_tokens, scale, key_padding_mask)
