"""The one-call training stack (``_C.lstm_stack_train_fwd`` / ``_bwd``, #22):
gradients against torch.nn.LSTM, the same bits as the per-layer backward, the
same bits for any thread count, separate gradient buffers, bad input."""

import contextlib
import importlib

import pytest
import torch

import fastlstm
from fastlstm import _ext

needs_simd = pytest.mark.skipif(
    "cpu" not in fastlstm.available_backends("cpu") or _ext.cpu_capability() == "scalar",
    reason="the one-call stack needs fastlstm._C at an AVX2 or AVX-512 level",
)
train_stack = importlib.import_module("fastlstm.ops.lstm.train_stack")

CASES = {
    "bi-2": dict(T=6, B=3, H=8, layers=2, bi=True, bias=True, lengths=None),
    "uni-3": dict(T=5, B=2, H=16, layers=3, bi=False, bias=True, lengths=None),
    "bi-lengths": dict(T=7, B=3, H=8, layers=2, bi=True, bias=True, lengths=[7, 2, 5]),
    "uni-lengths": dict(T=4, B=2, H=8, layers=1, bi=False, bias=True, lengths=[4, 1]),
    "one-step": dict(T=1, B=2, H=8, layers=2, bi=True, bias=True, lengths=None),
    "no-bias": dict(T=5, B=2, H=8, layers=2, bi=True, bias=False, lengths=None),
}


def _modules(case, seed=0):
    torch.manual_seed(seed)
    kwargs = dict(num_layers=case["layers"], bidirectional=case["bi"], bias=case["bias"])
    peer = torch.nn.LSTM(5, case["H"], **kwargs)
    module = fastlstm.LSTM(5, case["H"], backend="cpu", **kwargs)
    module.load_state_dict(peer.state_dict())
    return peer, module


def _grads(module, case, x, h0, c0, loss_weights):
    """Gradients of x, h0, c0 and every parameter of one training step."""
    lengths = case["lengths"]
    hx = (h0, c0)
    if lengths is None:
        y, (hn, cn) = module(x, hx)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
        y, (hn, cn) = module(packed, hx)
        y = torch.nn.utils.rnn.pad_packed_sequence(y, total_length=x.shape[0])[0]
    loss = (y * loss_weights).sum() + (hn**2).sum() + cn.sum()
    return torch.autograd.grad(loss, [x, h0, c0, *module.parameters()])


@contextlib.contextmanager
def _deterministic():
    mode = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(mode)


def _inputs(case):
    D = 2 if case["bi"] else 1
    x = torch.randn(case["T"], case["B"], 5, requires_grad=True)
    h0 = torch.randn(case["layers"] * D, case["B"], case["H"], requires_grad=True)
    c0 = torch.randn(case["layers"] * D, case["B"], case["H"], requires_grad=True)
    w = torch.randn(case["T"], case["B"], D * case["H"])
    return x, h0, c0, w


@needs_simd
@pytest.mark.parametrize("name", sorted(CASES))
def test_one_call_training_matches_torch_nn_lstm(name):
    case = CASES[name]
    peer, module = _modules(case)
    x, h0, c0, w = _inputs(case)
    got = _grads(module, case, x, h0, c0, w)
    expected = _grads(peer, case, x, h0, c0, w)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@needs_simd
def test_the_training_step_runs_one_kernel_call_each_way(monkeypatch, kernel_call_recorder):
    recorder = kernel_call_recorder(_ext._C)
    monkeypatch.setattr(_ext, "_C", recorder)
    peer, module = _modules(CASES["bi-2"])
    module(torch.randn(6, 3, 5))[0].sum().backward()
    kernels = [c for c, _, _ in recorder.calls if c.startswith("lstm_") and "pack" not in c]  # (packing: the first call only)
    assert kernels == ["lstm_stack_train_fwd", "lstm_stack_train_bwd"], kernels


@needs_simd
@pytest.mark.parametrize("name", sorted(CASES))
def test_one_call_backward_has_the_bits_of_the_per_layer_backward_in_deterministic_mode(name, monkeypatch):
    case = CASES[name]
    _, module = _modules(case)
    x, h0, c0, w = _inputs(case)
    with _deterministic():
        one_call = _grads(module, case, x, h0, c0, w)
        monkeypatch.setattr(train_stack, "backward_in_one_call", lambda *a: False)
        per_layer = _grads(module, case, x, h0, c0, w)
    for a, b in zip(one_call, per_layer):
        assert torch.equal(a, b)


@needs_simd
def test_one_call_backward_has_the_same_bits_for_any_thread_count_in_deterministic_mode():
    case = dict(CASES["bi-2"], T=40, B=16, H=64)
    _, module = _modules(case)
    x, h0, c0, w = _inputs(case)
    threads = torch.get_num_threads()
    results = []
    with _deterministic():
        try:
            for n in (1, 2, 3):
                torch.set_num_threads(n)
                results.append(_grads(module, case, x, h0, c0, w))
        finally:
            torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@needs_simd
def test_the_backward_uses_torchs_blas_and_matches_the_fixed_order():
    assert _ext._C.has_process_sgemm()  # torch is imported: its sgemm_ is found
    case = CASES["bi-lengths"]
    _, module = _modules(case)
    x, h0, c0, w = _inputs(case)
    blas = _grads(module, case, x, h0, c0, w)
    with _deterministic():
        fixed = _grads(module, case, x, h0, c0, w)
    for a, b in zip(blas, fixed):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@needs_simd
def test_every_parameter_gets_its_own_gradient_and_gradients_accumulate():
    _, module = _modules(CASES["bi-2"])
    x = torch.randn(6, 3, 5)
    module(x)[0].sum().backward()
    first = {n: p.grad.clone() for n, p in module.named_parameters()}
    assert torch.equal(module.bias_ih_l0.grad, module.bias_hh_l0.grad)
    module.bias_ih_l0.grad.zero_()  # must not touch any other parameter's gradient
    for name, p in module.named_parameters():
        if name != "bias_ih_l0":
            assert torch.equal(p.grad, first[name]), name
    module(x)[0].sum().backward()
    for name, p in module.named_parameters():
        expected = first[name] if name == "bias_ih_l0" else 2 * first[name]
        torch.testing.assert_close(p.grad, expected, rtol=1e-6, atol=1e-6)


@needs_simd
def test_frozen_layers_and_input_gradients_only():
    peer, module = _modules(CASES["bi-2"])
    for p in module.parameters():
        p.requires_grad_(False)
    x = torch.randn(6, 3, 5, requires_grad=True)
    (gx,) = torch.autograd.grad(module(x)[0].sum(), x)
    (gx_peer,) = torch.autograd.grad(peer(x)[0].sum(), x)
    torch.testing.assert_close(gx, gx_peer, rtol=1e-4, atol=1e-5)


@needs_simd
def test_the_backward_binding_refuses_lengths_outside_the_sequence(kernel_call_recorder):
    _, module = _modules(CASES["bi-2"])
    real = _ext._C
    recorder = kernel_call_recorder(real)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_ext, "_C", recorder)
        module(torch.randn(6, 3, 5))[0].sum().backward()
    args = list(next(a for name, a, _ in recorder.calls if name == "lstm_stack_train_bwd"))
    args[3] = _ext.buf(torch.tensor([6, 7, 1]))  # lengths: 7 > seq_len
    with pytest.raises(ValueError, match=r"lstm_stack_train_bwd: lengths\[1\] = 7 is outside"):
        real.lstm_stack_train_bwd(*args)
    args[3] = _ext.NO_BUF
    args[7] = _ext.buf(torch.zeros(5))  # dy of the wrong size
    with pytest.raises(ValueError, match="lstm_stack_train_bwd: dy has 5 elements"):
        real.lstm_stack_train_bwd(*args)


@needs_simd
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_an_optimizer_step_rewrites_the_prepared_stack_in_place(bidirectional, bias):
    prepared = importlib.import_module("fastlstm.ops.lstm.prepared")
    case = dict(CASES["bi-2"], bi=bidirectional, bias=bias)
    peer, module = _modules(case)
    x = torch.randn(6, 3, 5)
    weights = list(module._flat_weights)
    D = 2 if bidirectional else 1
    module(x)[0].sum().backward()
    prep = prepared.prepared_weights(weights, 2, D, bias, 0)
    before = [t.data_ptr() for layer in range(2) for t in prep.layer(weights, layer) + prep.packed(weights, layer)
              if t is not None]
    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    opt.step()
    peer.load_state_dict(module.state_dict())
    torch.manual_seed(3)
    inputs = _inputs(case)
    torch.testing.assert_close(_grads(module, case, *inputs), _grads(peer, case, *inputs), rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(module(x)[0], peer(x)[0], rtol=1e-5, atol=1e-6)
    module.zero_grad()
    module(x)[0].sum().backward()
    opt.step()  # the next rewrite happens under inference_mode (serving after a training step)
    peer.load_state_dict(module.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(module(x)[0], peer(x)[0], rtol=1e-5, atol=1e-6)
    after = prepared.prepared_weights(weights, 2, D, bias, 0)
    assert after is prep
    assert [t.data_ptr() for layer in range(2) for t in after.layer(weights, layer) + after.packed(weights, layer)
            if t is not None] == before
