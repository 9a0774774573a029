"""The LSTM backward's weight and bias gradients, in one place.

Every reduction over steps and batch of the LSTM ops' backward is here:
:func:`weight_grads` (the fused layer op and the recurrence op) and
:func:`input_weight_grads` (the input projection op). The GEMMs are torch's;
under ``torch.use_deterministic_algorithms(True)`` every reduction runs in an
order fastlstm fixes (:mod:`fastlstm.ops._fixed_order`), so the bits do not
depend on the thread count, the CPU or the BLAS; otherwise they are torch's
GEMMs, 1.5-2.5x faster than the fixed order at the S1-S5 shapes (a BLAS may
then split a reduction by thread count); CUDA tensors always take torch's.
Leaf module: the Triton backend's backward takes :func:`dw_hh` from here.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils import _python_dispatch

from fastlstm.ops import _fixed_order


def plain_eager(x: Tensor) -> bool:
    """True when calling the ops' implementations directly is equivalent to
    going through the dispatcher: eager, a plain CPU tensor, no tracing (jit or
    compile) and no torch function / dispatch mode that would want to see the op."""
    return (
        type(x) is Tensor
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and not torch._C._is_torch_function_mode_enabled()
        and _python_dispatch._get_current_dispatch_mode() is None
    )


def _fixed(t: Tensor) -> bool:
    """Whether reductions over ``t`` run in fastlstm's fixed order: deterministic
    mode on CPU tensors (on CUDA, torch's deterministic GEMMs)."""
    return t.device.type == "cpu" and torch.are_deterministic_algorithms_enabled()


def _mm_tn(a: Tensor, b: Tensor, acc: Tensor | None = None) -> Tensor:
    """``[acc +] aᵀ · b``; a (K, M), b (K, N)."""
    if _fixed(a):
        return _fixed_order.mm_tn(a, b, acc)
    return a.t() @ b if acc is None else torch.addmm(acc, a.t(), b)


def _mm(a: Tensor, b: Tensor) -> Tensor:
    return _fixed_order.mm(a, b) if _fixed(a) else a @ b


def _colsum(b: Tensor) -> Tensor:
    return _fixed_order.colsum(b) if _fixed(b) else b.sum(0)


def previous_hidden(y: Tensor, h0: Tensor, lengths: Tensor | None) -> Tensor:
    """The hidden state each step consumed: (T, B, D, P), in processing order per direction."""
    T = y.shape[0]
    # [:T] keeps T = 0 empty (y[:-1] is then empty too, not one row shorter).
    fwd = torch.cat([h0[0].unsqueeze(0), y[:-1, :, 0]], dim=0)[:T]
    if y.shape[2] == 1:
        return fwd.unsqueeze(2)
    rev = torch.cat([y[1:, :, 1], h0[1].unsqueeze(0)], dim=0)[:T]
    steps = torch.arange(T, device=y.device).unsqueeze(1)
    limit = lengths.to(y.device).unsqueeze(0) if lengths is not None else torch.full_like(steps, T)
    first = (steps + 1 >= limit).unsqueeze(-1)  # the reverse direction starts from h0 here
    rev = torch.where(first, h0[1].unsqueeze(0).expand_as(rev), rev)
    return torch.stack([fwd, rev], dim=2)


def dw_hh(dgates: Tensor, y: Tensor, h0: Tensor, lengths: Tensor | None) -> Tensor:
    """sum over steps of dgates_t^T · h_prev_t per direction: (D, 4H, P)."""
    T, B, D, G = dgates.shape
    # (Traced graphs take the general form: the strided views below would
    # specialise on T.)
    if not plain_eager(dgates) or lengths is not None or T < 2:
        hprev = previous_hidden(y, h0, lengths)
        return torch.stack([_mm_tn(hprev[:, :, d].reshape(T * B, y.shape[-1]),
                                               dgates[:, :, d].reshape(T * B, G)).t() for d in range(D)])
    # Full-length sequences: h_prev is y shifted by one step (h0 at the start),
    # read in place through strided views instead of a stacked copy.
    out = []
    for d in range(D):
        first, rest = (0, slice(1, None)) if d == 0 else (T - 1, slice(None, T - 1))
        prev = slice(None, T - 1) if d == 0 else slice(1, None)
        dg, hy = dgates[rest, :, d].reshape(-1, G), y[prev, :, d].reshape(-1, y.shape[-1])
        # Computed transposed, (H, 4H): MKL runs this orientation 5-15% faster.
        out.append(_mm_tn(hy, dg, _mm_tn(h0[d], dgates[first, :, d])).t())
    return torch.stack(out)


def weight_grads(dgates: Tensor, y: Tensor, h0: Tensor, lengths: Tensor | None,
                 x: Tensor | None = None, bias: bool = False) -> tuple[Tensor | None, Tensor, Tensor | None]:
    """(dW_ih (D*4H, I) when ``x`` (T, B, I) is given, dW_hh (D, 4H, P), d bias
    (D*4H) when ``bias``) from the gate gradients dgates (T, B, D, 4H)."""
    T, B, D, G = dgates.shape
    flat = dgates.reshape(T * B, D * G)
    dw_ih = None
    if x is not None:
        dw_ih = _mm_tn(x.reshape(T * B, x.shape[-1]), flat).t()  # transposed, as in dw_hh
    db = _colsum(flat) if bias else None
    return dw_ih, dw_hh(dgates, y, h0, lengths), db


def input_weight_grads(dgx: Tensor, x: Tensor, need_w: bool, need_bias: bool) -> tuple[Tensor | None, Tensor | None]:
    """(dW_ih, d bias) of the input projection gx = x·W_ihᵀ + b: dgx (N, D*4H), x (N, I)."""
    return (_mm_tn(x, dgx).t() if need_w else None), (_colsum(dgx) if need_bias else None)


def projection_weight_grad(dhproj: Tensor, gates: Tensor, cells: Tensor) -> Tensor:
    """dW_hr (D, P, H) = sum over steps of dhproj_tᵀ · (o_t ⊙ tanh c_t)."""
    T, B, D, P = dhproj.shape
    H = cells.shape[-1]
    hpre = gates[..., 3 * H :] * torch.tanh(cells)
    return torch.stack([_mm_tn(dhproj[:, :, d].reshape(T * B, P), hpre[:, :, d].reshape(T * B, H))
                        for d in range(D)])


def input_grad(dgates_flat: Tensor, w_ih: Tensor) -> Tensor:
    """dx (N, I) = dgates (N, D*4H) · W_ih (D*4H, I), its sum over gates in fixed order
    (a BLAS may split a reduction this short by thread count when N is small)."""
    return _mm(dgates_flat, w_ih)
