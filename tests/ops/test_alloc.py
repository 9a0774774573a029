"""The op layer's pool for large saved activations (fastlstm.ops._alloc.pooled_empty)."""

import pytest
import torch

import fastlstm
from fastlstm import reference
from fastlstm.ops import _alloc

needs_cpu = pytest.mark.skipif("cpu" not in fastlstm.available_backends("cpu"), reason="fastlstm._C not built")


def test_large_buffer_reused_only_once_released():
    _alloc.release_pool()
    n = _alloc._POOL_MIN_BYTES // 4 + 2
    like = torch.empty(0)
    a = _alloc.pooled_empty(n, like=like)
    b = _alloc.pooled_empty(n, like=like)  # a is still referenced: a new buffer
    assert a.data_ptr() != b.data_ptr()
    view = a[:10]
    address = a.data_ptr()
    del a
    c = _alloc.pooled_empty(n, like=like)  # a's storage lives on in its view
    assert c.data_ptr() not in (address, b.data_ptr())
    del view
    d = _alloc.pooled_empty(2, n // 2, like=like)  # any shape of the same size
    assert d.data_ptr() == address and d.shape == (2, n // 2)
    small = _alloc.pooled_empty(100, like=like)  # below the threshold: plain allocation, not pooled
    assert all(small.data_ptr() != t.data_ptr() for t in _alloc._pool)
    _alloc.release_pool()


@needs_cpu
def test_training_steps_reusing_pooled_gates_stay_exact(monkeypatch):
    # Pool every gates/cells buffer (threshold 0) and train a few steps: each step
    # must equal the reference, whatever buffer its gates landed in.
    monkeypatch.setattr(_alloc, "_POOL_MIN_BYTES", 0)
    _alloc.release_pool()
    torch.manual_seed(3)
    module = fastlstm.LSTM(4, 6, num_layers=2, bidirectional=True, backend="cpu")
    for step in range(3):
        # Two graphs alive at once: the second forward must not take the first's buffers.
        xs = [torch.randn(7, 2, 4) for _ in range(2)]
        ys = [module(x)[0] for x in xs]
        for x, y in zip(xs, ys):
            grads = torch.autograd.grad(y.square().sum(), list(module.parameters()))
            wr = [w.detach().double().requires_grad_() for w in module._flat_weights]
            yr = reference.lstm(x.double(), None, wr, num_layers=2, bidirectional=True)[0]
            ref = torch.autograd.grad(yr.square().sum(), wr)
            torch.testing.assert_close(y.double(), yr, rtol=1e-5, atol=1e-6)
            for g, r in zip(grads, ref):
                torch.testing.assert_close(g.double(), r, rtol=1e-4, atol=1e-5)
    assert _alloc._pool, "the layers' gates went through the pool"
    _alloc.release_pool()


@needs_cpu
def test_empty_cache_drops_pool_and_workspaces():
    import importlib

    ops = importlib.import_module("fastlstm.ops.lstm.prepared")
    module = fastlstm.LSTM(4, 6, backend="cpu")
    with torch.no_grad():
        module(torch.randn(5, 2, 4))
    assert vars(ops._WORKSPACE)
    fastlstm.ops.empty_cache()
    assert not vars(ops._WORKSPACE) and not _alloc._pool
    with torch.no_grad():
        module(torch.randn(5, 2, 4))  # allocated again on use
