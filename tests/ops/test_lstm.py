"""fastlstm::lstm_recurrence and fastlstm.ops.lstm against the reference."""

import pytest
import torch

import fastlstm
from fastlstm import reference
from fastlstm.ops import lstm_recurrence
from fastlstm.testing import assert_parity

needs_cpu = pytest.mark.skipif("cpu" not in fastlstm.available_backends("cpu"), reason="fastlstm._C not built")

# (T, B, D, H, P, lengths)
CASES = {
    "uni": (7, 3, 1, 5, 5, None),
    "bi": (6, 2, 2, 4, 4, None),
    "bi-proj": (5, 3, 2, 6, 3, None),
    "T1": (1, 2, 2, 3, 3, None),
    "lengths-bi": (6, 4, 2, 4, 4, [6, 1, 4, 0]),
    "lengths-proj": (5, 3, 2, 5, 2, [2, 5, 3]),
    "B0": (3, 0, 2, 3, 3, None),
}


def _inputs(T, B, D, H, P, lengths, dtype=torch.float64, requires_grad=True):
    def r(*shape):
        return (torch.randn(*shape, dtype=dtype) * 0.5).requires_grad_(requires_grad)

    w_hr = r(D, P, H) if P != H else None
    lengths = torch.tensor(lengths, dtype=torch.int64) if lengths is not None else None
    return r(T, B, D, 4 * H), r(D, 4 * H, P), w_hr, r(D, B, P), r(D, B, H), lengths


def _loss(outputs):
    y, hn, cn = outputs[:3]
    return (y * torch.arange(y.numel(), dtype=y.dtype).reshape(y.shape).cos()).sum() + hn.sum() * 0.5 - cn.sum()


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_recurrence_matches_reference(case, dtype):
    args = _inputs(*case, dtype=dtype)
    fused = lstm_recurrence(*args, True)
    ref = reference.lstm_recurrence(*args)
    for name, a, b in zip(["y", "h_n", "c_n", "gates", "cells"], fused, ref):
        assert_parity(a, b, dtype, name=name)
    diff_inputs = [a for a in args if a is not None and a.requires_grad]
    if case[1] == 0:
        return
    g_fused = torch.autograd.grad(_loss(fused), diff_inputs)
    g_ref = torch.autograd.grad(_loss(ref), diff_inputs)
    for i, (a, b) in enumerate(zip(g_fused, g_ref)):
        assert_parity(a, b, dtype, name=f"grad {i}")


@needs_cpu
@pytest.mark.parametrize("case", ["uni", "bi-proj", "lengths-bi"])
def test_recurrence_gradcheck(case):
    T, B, D, H, P, lengths = CASES[case]
    args = _inputs(min(T, 4), B, D, H, P, lengths and [min(n, 4) for n in lengths])
    lengths = args[5]

    def fn(gx, w_hh, w_hr, h0, c0):
        return lstm_recurrence(gx, w_hh, w_hr, h0, c0, lengths, True)[:3]

    assert torch.autograd.gradcheck(fn, args[:5], eps=1e-6, atol=1e-7)


@needs_cpu
@pytest.mark.parametrize("case", ["bi-proj", "lengths-bi"])
def test_recurrence_opcheck(case):
    args = _inputs(*CASES[case])
    torch.library.opcheck(torch.ops.fastlstm.lstm_recurrence.default, args + (True,))
    inference_args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(torch.ops.fastlstm.lstm_recurrence.default, inference_args + (False,))
    y, hn, cn, gates, cells = lstm_recurrence(*args, True)
    w_hr = args[2]
    torch.library.opcheck(
        torch.ops.fastlstm.lstm_recurrence_backward.default,
        (torch.randn_like(y), torch.randn_like(hn), torch.randn_like(cn), args[1].detach(),
         None if w_hr is None else w_hr.detach(), args[4].detach(), gates, cells, args[5]),
    )


@needs_cpu
def test_lstm_compiles_fullgraph_without_breaks():
    module = fastlstm.LSTM(6, 8, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(3, 10, 6, requires_grad=True)
    eager_out, (eager_h, _) = module(x)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    out, (h, _) = compiled(x)
    torch.testing.assert_close(out, eager_out)
    torch.testing.assert_close(h, eager_h)
    g_eager = torch.autograd.grad(eager_out.sum(), x)[0]
    g = torch.autograd.grad(compiled(x)[0].sum(), x)[0]
    torch.testing.assert_close(g, g_eager)


@needs_cpu
def test_inference_does_not_save_gates():
    args = _inputs(4, 2, 1, 3, 3, None, requires_grad=False)
    *_, gates, cells = lstm_recurrence(*args, False)
    assert gates.numel() == 0 and cells.numel() == 0


@needs_cpu
def test_functional_lstm_matches_reference_with_lengths():
    module = fastlstm.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3, dtype=torch.float64)
    x = torch.randn(7, 3, 4, dtype=torch.float64)
    lengths = torch.tensor([7, 2, 5])
    kwargs = dict(num_layers=2, bidirectional=True, proj_size=3, lengths=lengths)
    fused = fastlstm.ops.lstm(x, None, module._flat_weights, backend="cpu", **kwargs)
    ref = reference.lstm(x, None, module._flat_weights, **kwargs)
    for a, b in zip(fused, ref):
        assert_parity(a, b)


@needs_cpu
def test_explicit_unavailable_backend_raises():
    x = torch.randn(3, 2, 4, dtype=torch.bfloat16)
    module = fastlstm.LSTM(4, 5, dtype=torch.bfloat16, backend="cpu")
    with pytest.raises(RuntimeError, match="backend 'cpu'"):
        module(x)
    # auto falls back to the reference for dtypes the kernels do not cover
    out, _ = fastlstm.LSTM(4, 5, dtype=torch.bfloat16)(x)
    assert out.dtype == torch.bfloat16


def test_set_backend_and_env(monkeypatch):
    fastlstm.set_backend("reference")
    try:
        assert fastlstm.get_backend() == "reference"
    finally:
        fastlstm.set_backend(None)
    monkeypatch.setenv("FASTLSTM_BACKEND", "reference")
    assert fastlstm.get_backend() == "reference"
    monkeypatch.setenv("FASTLSTM_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="backend"):
        fastlstm.get_backend()
    with pytest.raises(ValueError):
        fastlstm.set_backend("fast")
