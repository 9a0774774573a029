"""``fastlstm::dropout``: elementwise dropout on the CPU with a counter-based
mask (whether element i survives is a hash of a seed and i; see
``csrc/include/fastlstm/dropout_hash.h``). torch's ``bernoulli_`` draws a
dropout mask at about 7 ns per element on this project's CPUs, which made the
LSTM stack's inter-layer dropout 4% of a productivity-model training step; the
hash costs a few cycles, and the backward recomputes the mask from the seed
instead of storing it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fastlstm import _ext
from fastlstm.ops._alloc import empty

_KERNEL_DTYPES = (torch.float32, torch.float64)


@torch.library.custom_op("fastlstm::dropout", mutates_args=(), device_types="cpu")
def dropout_op(x: Tensor, p: float, seed: int) -> Tensor:
    """x / (1 - p) where element i (row-major) survives under ``seed``, else 0."""
    if x.dtype not in _KERNEL_DTYPES:
        raise TypeError(f"fastlstm::dropout: x must be float32 or float64, got {x.dtype}")
    if seed < 0:  # (the mask hash takes an unsigned 64-bit seed; the schema's int is int64)
        raise ValueError(f"fastlstm::dropout: seed must be >= 0, got {seed}")
    x = x.contiguous()
    y = empty(*x.shape, like=x)
    _ext._C.dropout(_ext.dtype_name(x.dtype), _ext.buf(x), _ext.buf(y), x.numel(), p, seed, torch.get_num_threads())
    return y


@dropout_op.register_fake
def _(x, p, seed):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    _, ctx.p, ctx.seed = inputs


def _backward(ctx, dy):
    # The same mask and scale: d x = d y / (1 - p) where kept, else 0.
    return dropout_op(dy, ctx.p, ctx.seed), None, None


dropout_op.register_autograd(_backward, setup_context=_setup_context)


def draw_seed() -> int:
    """A seed for the counter-based dropout masks (this op's and the attention
    kernels'), drawn from torch's default generator so torch.manual_seed fixes them."""
    return int(torch.randint(0, 2**62, ()).item())


def dropout(x: Tensor, p: float) -> Tensor:
    """Training-mode ``F.dropout(x, p)``: the fused kernel for CPU float
    tensors (its mask seeded from torch's default generator, so
    ``torch.manual_seed`` fixes it), torch's dropout elsewhere and when
    compiling.

    >>> y = dropout(torch.randn(288, 64, 256), 0.2)
    """
    if (p <= 0 or p >= 1 or x.device.type != "cpu" or x.dtype not in _KERNEL_DTYPES or _ext._C is None
            or torch.compiler.is_compiling()):
        return F.dropout(x, p=p, training=True)
    return dropout_op(x, float(p), draw_seed())
