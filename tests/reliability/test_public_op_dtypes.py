"""Dtype misuse of every public op that is not an LSTM op (the attention ops, the
dropout op, the int8 modules, SparseAttention): each tensor argument in turn gets a
dtype the op does not take, and the op raises a TypeError or RuntimeError (what torch
raises for a dtype mismatch) naming the dtype, before any kernel sees a pointer."""

from __future__ import annotations

import pytest
import torch

import fastlstm
from fastlstm import _ext
from fastlstm.nn.quantized import QuantizedLinear

pytestmark = pytest.mark.skipif(not _ext.available(), reason=f"fastlstm._C unavailable: {_ext.load_error}")

B, H, T, D = 1, 2, 6, 4


def _qkv():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(B, H, T, D, generator=g) for _ in range(3)]


def _attention_backward_args():
    q, k, v = _qkv()
    out, lse = torch.ops.fastlstm.sparse_attention(q, k, v, 2, 1, 0, 0.5, None)
    return [q, k, v, out, lse, torch.randn_like(out), 2, 1, 0, 0.5, None]


def _dropout_backward_args():
    q, k, v = _qkv()
    out, lse = torch.ops.fastlstm.sparse_attention_dropout(q, k, v, 2, 1, 0, 0.5, None, 0.2, 3)
    return [q, k, v, out, lse, torch.randn_like(out), 2, 1, 0, 0.5, None, 0.2, 3]


def _quantized_lstm():
    torch.manual_seed(0)
    return fastlstm.QuantizedLSTM.from_float(torch.nn.LSTM(4, 8))


def _quantized_linear():
    torch.manual_seed(0)
    return QuantizedLinear.from_float(torch.nn.Linear(4, 3))


def _sparse_attention_module():
    torch.manual_seed(0)
    return fastlstm.SparseAttention(8, 2, window=(2, 1), batch_first=True)


# name -> (op, valid arguments, indices of the tensor arguments to corrupt)
OPS = {
    "ops.sparse_attention": (lambda *a: fastlstm.ops.sparse_attention(*a), lambda: _qkv() + [(2, 1)], (0, 1, 2)),
    "ops.sparse_attention-mask": (
        lambda *a: fastlstm.ops.sparse_attention(*a[:3], (2, 1), key_padding_mask=a[3]),
        lambda: _qkv() + [torch.zeros(B, T, dtype=torch.bool)], (3,)),
    "fastlstm::sparse_attention": (torch.ops.fastlstm.sparse_attention,
                                   lambda: _qkv() + [2, 1, 0, 0.5, torch.zeros(B, T, dtype=torch.bool)], (0, 1, 2, 7)),
    "fastlstm::sparse_attention_banded": (torch.ops.fastlstm.sparse_attention_banded,
                                          lambda: _qkv() + [2, 1, 0.5, None], (0, 1, 2)),
    "fastlstm::sparse_attention_backward": (torch.ops.fastlstm.sparse_attention_backward, _attention_backward_args,
                                            (0, 1, 2, 3, 4, 5)),
    "fastlstm::sparse_attention_dropout": (torch.ops.fastlstm.sparse_attention_dropout,
                                           lambda: _qkv() + [2, 1, 0, 0.5, None, 0.2, 3], (0, 1, 2)),
    "fastlstm::sparse_attention_dropout_backward": (torch.ops.fastlstm.sparse_attention_dropout_backward,
                                                    _dropout_backward_args, (0, 1, 2, 3, 4, 5)),
    "fastlstm::dropout": (torch.ops.fastlstm.dropout, lambda: [torch.randn(3, 5), 0.3, 7], (0,)),
    "QuantizedLSTM": (lambda x, h, c: _quantized_lstm()(x, (h, c)),
                      lambda: [torch.randn(5, 2, 4), torch.zeros(1, 2, 8), torch.zeros(1, 2, 8)], (0, 1, 2)),
    "QuantizedLinear": (lambda x: _quantized_linear()(x), lambda: [torch.randn(3, 4)], (0,)),
    "SparseAttention": (lambda q, k, v: _sparse_attention_module()(q, k, v),
                        lambda: [torch.randn(2, 6, 8) for _ in range(3)], (0, 1, 2)),
}

BAD_DTYPES = [torch.float16, torch.bfloat16, torch.int64, torch.int8, torch.bool, torch.complex64, torch.float64]
# Where the op takes float64 as well as float32, a float64 argument is misuse only beside float32 ones
# (the int8 modules convert a float64 input to float32; the dropout op has float64 kernels).
FLOAT64_IS_VALID_ALONE = {"QuantizedLSTM": (0,), "QuantizedLinear": (0,), "fastlstm::dropout": (0,)}


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.bool:
        return t != 0
    if dtype == torch.complex64:
        return t.to(torch.complex64)
    return (t * 3).to(dtype) if not dtype.is_floating_point else t.to(dtype)


@pytest.mark.parametrize("name", OPS)
def test_valid_call_runs(name):
    op, args, _ = OPS[name]
    with torch.no_grad():
        op(*args())


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=[str(d).removeprefix("torch.") for d in BAD_DTYPES])
@pytest.mark.parametrize("name", OPS)
def test_dtype_misuse_raises(name, dtype):
    op, make_args, tensor_args = OPS[name]
    for i in tensor_args:
        args = make_args()
        if args[i].dtype == dtype or (dtype == torch.float64 and i in FLOAT64_IS_VALID_ALONE.get(name, ())):
            continue
        args[i] = _cast(args[i], dtype)
        with torch.no_grad(), pytest.raises((TypeError, RuntimeError)) as err:
            op(*args)
        message = str(err.value)
        assert "dtype" in message or str(dtype).removeprefix("torch.") in message.lower() or \
            {torch.float16: "half", torch.bfloat16: "bfloat16", torch.int64: "long", torch.int8: "char",
             torch.bool: "bool", torch.complex64: "complex", torch.float64: "double"}[dtype] in message.lower(), \
            f"argument {i}: {message}"
