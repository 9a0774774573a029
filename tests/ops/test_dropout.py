"""fastlstm::dropout (the LSTM stack's inter-layer dropout on the CPU)."""

import importlib

import pytest
import torch

import fastlstm
from fastlstm import _ext

needs_cpu = pytest.mark.skipif("cpu" not in fastlstm.available_backends("cpu"), reason="fastlstm._C not built")
drop = importlib.import_module("fastlstm.ops.dropout")


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keeps_the_right_fraction_scaled(dtype, p):
    x = torch.rand(300_001, dtype=dtype) + 0.5  # no zeros: a zero output means dropped
    y = drop.dropout_op(x, p, 1234)
    kept = y != 0
    assert abs(kept.double().mean().item() - (1 - p)) < 5e-3
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))


@needs_cpu
def test_backward_reuses_the_forward_mask():
    x = (torch.rand(7, 5, 33, dtype=torch.float64) + 0.5).requires_grad_()
    w = torch.randn(7, 5, 33, dtype=torch.float64)
    y = drop.dropout_op(x, 0.3, 99)
    (g,) = torch.autograd.grad((y * w).sum(), x)
    kept = (y != 0).double()
    torch.testing.assert_close(y, x.detach() * kept / 0.7)
    torch.testing.assert_close(g, w * kept / 0.7)
    assert torch.autograd.gradcheck(lambda t: drop.dropout_op(t, 0.3, 99), (x,))


@needs_cpu
def test_mask_depends_on_seed_only():
    x = torch.randn(4, 70_000)
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outs.append(drop.dropout_op(x, 0.2, 5))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(outs[0], o) for o in outs[1:])
    assert not torch.equal(outs[0], drop.dropout_op(x, 0.2, 6))
    # Strided input: the mask follows the row-major order of the values.
    assert torch.equal(drop.dropout_op(x.t(), 0.2, 5), drop.dropout_op(x.t().contiguous(), 0.2, 5))


@needs_cpu
def test_dropout_follows_torch_manual_seed_and_falls_back():
    x = torch.randn(50, 40)
    torch.manual_seed(3)
    a = drop.dropout(x, 0.25)
    torch.manual_seed(3)
    assert torch.equal(a, drop.dropout(x, 0.25))
    assert torch.equal(drop.dropout(x.half(), 0.0), x.half())  # p = 0 and non-float dtypes go to torch
    assert torch.equal(drop.dropout(x, 1.0), torch.zeros_like(x))


@needs_cpu
def test_lstm_training_uses_it():
    torch.manual_seed(0)
    module = fastlstm.LSTM(6, 8, num_layers=3, dropout=0.4, backend="cpu").train()
    x = torch.randn(5, 2, 6, requires_grad=True)
    calls = []
    original = drop.dropout_op
    try:
        drop.dropout_op = lambda *a: calls.append(a[1]) or original(*a)
        y = module(x)[0]
    finally:
        drop.dropout_op = original
    assert calls == [0.4, 0.4]  # between the three layers
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


@needs_cpu
def test_opcheck():
    torch.library.opcheck(drop.dropout_op, (torch.randn(6, 9), 0.2, 11))
    torch.library.opcheck(drop.dropout_op, (torch.randn(6, 9, dtype=torch.float64, requires_grad=True), 0.5, 3))


@needs_cpu
def test_binding_checks_sizes_and_p():
    x, y = torch.randn(10), torch.empty(9)
    with pytest.raises(ValueError, match="y has 9 elements"):
        _ext._C.dropout("float32", _ext.buf(x), _ext.buf(y), 10, 0.5, 1)
    with pytest.raises(ValueError, match="p must be in"):
        _ext._C.dropout("float32", _ext.buf(x), _ext.buf(x), 10, 1.0, 1)
    with pytest.raises(ValueError, match="x is required"):
        _ext._C.dropout("float32", (0, 0), _ext.buf(x), 10, 0.5, 1)
    with pytest.raises(TypeError, match="float32 or float64"):
        drop.dropout_op(torch.ones(3, dtype=torch.int32), 0.5, 1)


@needs_cpu
def test_a_negative_seed_is_a_value_error():
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        torch.ops.fastlstm.dropout(torch.randn(8), 0.5, -1)
