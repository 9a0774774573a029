"""Matrix products summed in an order fastlstm fixes (``fastlstm::fixed_order_mm``).

The weight and bias gradients of the LSTM ops are sums over all T*B steps. A
BLAS chooses how to split such a sum by its thread count and CPU, so the bits
of torch.mm's result may change with ``torch.set_num_threads``. The C++ kernel
behind these functions (``csrc/cpu/fixed_order_gemm.h``) sums every element in
an order that depends on K alone, on any thread count and ISA level.

float32 and float64 on the CPU only; other dtypes and devices fall back to
torch's own product (no order promise there).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastlstm import _ext
from fastlstm.ops._alloc import empty


def _check(a: Tensor, b: Tensor, acc: Tensor | None) -> None:
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"fixed_order_mm: a (M, K) and b (K, N) expected, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype or (acc is not None and acc.dtype != a.dtype):
        raise TypeError(f"fixed_order_mm: a, b and acc must share a dtype, got {a.dtype} and {b.dtype}")
    if acc is not None and tuple(acc.shape) != (a.shape[0], b.shape[1]):
        raise ValueError(f"fixed_order_mm: acc must have shape {(a.shape[0], b.shape[1])}, got {tuple(acc.shape)}")


@torch.library.custom_op("fastlstm::fixed_order_mm", mutates_args=())
def fixed_order_mm(a: Tensor, b: Tensor, acc: Tensor | None) -> Tensor:
    """``acc + a · b`` (or ``a · b``), a: (M, K) with any strides, b: (K, N), acc: (M, N).

    >>> x, f = torch.randn(192, 6), torch.randn(192, 64)
    >>> dw = fixed_order_mm(x.t(), f, None)  # xᵀ·f, (6, 64), same bits on any thread count
    """
    _check(a, b, acc)
    M, K = a.shape
    N = b.shape[1]
    if a.device.type != "cpu" or a.dtype not in (torch.float32, torch.float64) or not _ext.available():
        return a @ b if acc is None else torch.addmm(acc, a, b)
    if b.stride(1) != 1 or (K > 1 and b.stride(0) < N):
        b = b.contiguous()
    out = empty(M, N, like=a) if acc is None else acc.clone(memory_format=torch.contiguous_format)
    if M > 0 and N > 0:
        _ext._C.fixed_order_gemm(
            _ext.dtype_name(a.dtype), _ext.strided_buf(a), a.stride(0), a.stride(1), _ext.strided_buf(b), b.stride(0),
            _ext.strided_buf(out), N, M, N, K, acc is not None, torch.get_num_threads(),
        )
    return out


@fixed_order_mm.register_fake
def _(a, b, acc):
    _check(a, b, acc)
    return a.new_empty(a.shape[0], b.shape[1])


def _setup_context(ctx, inputs, output):
    a, b, _ = inputs
    ctx.save_for_backward(a, b)


def _backward(ctx, grad):
    a, b = ctx.saved_tensors
    da = grad @ b.t() if ctx.needs_input_grad[0] else None
    db = a.t() @ grad if ctx.needs_input_grad[1] else None
    return da, db, grad if ctx.needs_input_grad[2] else None


fixed_order_mm.register_autograd(_backward, setup_context=_setup_context)


def mm(a: Tensor, b: Tensor, acc: Tensor | None = None) -> Tensor:
    """``[acc +] a · b`` summed in fixed order; a (M, K), b (K, N).

    >>> mm(torch.randn(5, 3), torch.randn(3, 4)).shape
    torch.Size([5, 4])
    """
    return torch.ops.fastlstm.fixed_order_mm(a, b, acc)


def mm_tn(a: Tensor, b: Tensor, acc: Tensor | None = None) -> Tensor:
    """``[acc +] aᵀ · b`` summed in fixed order; a (K, M), b (K, N) -> (M, N).
    Strided views (one direction of dgates (T, B, D, 4H)) are read in place.

    >>> mm_tn(torch.randn(192, 6), torch.randn(192, 64)).shape
    torch.Size([6, 64])
    """
    return torch.ops.fastlstm.fixed_order_mm(a.t(), b, acc)


@torch.library.custom_op("fastlstm::fixed_order_colsum", mutates_args=())
def fixed_order_colsum(b: Tensor) -> Tensor:
    """Column sums of b (K, N) -> (N,), summed pairwise in an order fixed by K.

    >>> fixed_order_colsum(torch.ones(7, 3))
    tensor([7., 7., 7.])
    """
    if b.dim() != 2:
        raise ValueError(f"fixed_order_colsum: b must be (K, N), got shape {tuple(b.shape)}")
    K, N = b.shape
    if b.device.type != "cpu" or b.dtype not in (torch.float32, torch.float64) or not _ext.available():
        return b.sum(0)
    if b.stride(1) != 1 or (K > 1 and b.stride(0) < N):
        b = b.contiguous()
    out = empty(N, like=b)
    if N > 0:
        _ext._C.fixed_order_colsum(_ext.dtype_name(b.dtype), _ext.strided_buf(b), b.stride(0), _ext.strided_buf(out), N, K,
                                   torch.get_num_threads())
    return out


@fixed_order_colsum.register_fake
def _(b):
    if b.dim() != 2:
        raise ValueError(f"fixed_order_colsum: b must be (K, N), got shape {tuple(b.shape)}")
    return b.new_empty(b.shape[1])


def _colsum_setup_context(ctx, inputs, output):
    ctx.rows = inputs[0].shape[0]


fixed_order_colsum.register_autograd(
    lambda ctx, grad: grad.unsqueeze(0).expand(ctx.rows, grad.shape[0]), setup_context=_colsum_setup_context
)


def colsum(b: Tensor) -> Tensor:
    """Column sums of b (K, N) -> (N,) in fixed order (see fixed_order_colsum)."""
    return torch.ops.fastlstm.fixed_order_colsum(b)
