"""The prepared-weights op layer (fastlstm/ops/lstm/): lifetimes, checks,
tracing, plan(), lstm_step and double backward (issues #20, #21, #22)."""

import gc
import subprocess
import sys
import threading

import pytest
import torch

import fastlstm
from fastlstm import reference
from fastlstm.ops import lstm as ops_lstm
from fastlstm.ops.lstm import lstm_input_projection, lstm_recurrence_backward, lstm_step, plan
from fastlstm.ops.lstm.prepared import REGISTRY
from fastlstm.testing import assert_parity

needs_cpu = pytest.mark.skipif("cpu" not in fastlstm.available_backends("cpu"), reason="fastlstm._C not built")
ops = sys.modules["fastlstm.ops.lstm"]


def _peer(module):
    kwargs = dict(num_layers=module.num_layers, bidirectional=module.bidirectional, proj_size=module.proj_size)
    peer = torch.nn.LSTM(module.input_size, module.hidden_size, **kwargs)
    peer.load_state_dict(module.state_dict())
    return peer


# -- inference-mode modules (#21 class 1) ------------------------------------


@needs_cpu
@pytest.mark.parametrize("proj", [0, 8], ids=["plain", "proj"])
def test_module_loaded_under_inference_mode_matches_torch(proj):
    torch.manual_seed(0)
    source = torch.nn.LSTM(16, 64 if proj else 8, proj_size=proj)
    x = torch.randn(5, 3, 16)
    with torch.inference_mode():
        m = fastlstm.LSTM(16, 64 if proj else 8, proj_size=proj, backend="cpu")
        m.load_state_dict(source.state_dict())
        got = m(x)[0]
        again = m(x)[0]
    with torch.no_grad():
        expected = source(x)[0]
    assert_parity(got, expected, torch.float32, name="y")
    assert torch.equal(got, again)


@needs_cpu
def test_cell_built_under_inference_mode_matches_torch():
    torch.manual_seed(1)
    with torch.inference_mode():
        cell = fastlstm.LSTMCell(16, 32, backend="cpu")
        peer = torch.nn.LSTMCell(16, 32)
        peer.load_state_dict(cell.state_dict())
        x = torch.randn(4, 16)
        assert_parity(cell(x)[0], peer(x)[0], torch.float32, name="h")


@needs_cpu
def test_wide_module_built_under_inference_mode_runs_in_a_fresh_process():
    # Segfaulted before: the stack plan's packed weights were freed before the kernel ran.
    code = ("import torch, fastlstm\n"
            "with torch.inference_mode():\n"
            "    m = fastlstm.LSTM(16, 1024); x = torch.randn(2, 1, 16); y = m(x)[0]\n"
            "    p = torch.nn.LSTM(16, 1024); p.load_state_dict(m.state_dict())\n"
            "    print(float((y - p(x)[0]).abs().max()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip()) < 1e-5


# -- eviction race (#21 class 1) ---------------------------------------------


@needs_cpu
def test_long_call_stays_exact_while_other_threads_cycle_models_through_the_registry(monkeypatch):
    torch.manual_seed(2)
    models = [fastlstm.LSTM(16, 128, backend="cpu").eval() for _ in range(12)]
    x = torch.randn(2000, 1, 16)
    with torch.no_grad():
        expected = models[0](x)[0]
    fastlstm.ops.empty_cache()
    monkeypatch.setattr(REGISTRY, "max_bytes", 1 << 20)  # about two models: every call evicts
    result, stop = {}, threading.Event()

    def long_call():
        with torch.no_grad():
            result["y"] = models[0](x)[0]
        stop.set()

    worker = threading.Thread(target=long_call)
    worker.start()
    cycled = 0
    with torch.no_grad():
        while not stop.is_set() or cycled < len(models):
            models[1 + cycled % (len(models) - 1)](torch.randn(3, 1, 16))
            cycled += 1
    worker.join()
    assert torch.equal(result["y"], expected)
    assert REGISTRY.nbytes <= 1 << 20 or len(REGISTRY) == 1


# -- checks before any pointer (#21 class 2) ---------------------------------


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_input_projection_refuses_mixed_dtypes(dtype):
    with pytest.raises(TypeError, match="dtype|float32 and float64"):
        lstm_input_projection(torch.randn(64, 16).to(dtype), torch.randn(128, 16), None, 1)
    with pytest.raises(TypeError, match="dtype"):
        lstm_input_projection(torch.randn(64, 16), torch.randn(128, 16), torch.randn(128).to(dtype), 1)


@needs_cpu
def test_input_projection_refuses_half_even_when_all_half():
    with pytest.raises(TypeError, match="float32 and float64"):
        lstm_input_projection(torch.randn(8, 4).half(), torch.randn(16, 4).half(), None, 1)


@needs_cpu
def test_recurrence_backward_refuses_mixed_dtypes_and_shapes():
    T, B, D, H = 3, 2, 1, 4
    f = torch.float32
    args = dict(dy=torch.randn(T, B, D, H, dtype=torch.float64), dhn=torch.zeros(D, B, H), dcn=torch.zeros(D, B, H),
                w_hh=torch.randn(D, 4 * H, H), w_hr=None, c0=torch.zeros(D, B, H),
                gates=torch.rand(T, B, D, 4 * H, dtype=f), cells=torch.randn(T, B, D, H), lengths=None)
    with pytest.raises(TypeError, match="dy dtype"):
        lstm_recurrence_backward(*args.values())
    args["dy"] = torch.randn(T, B, D, H + 1)
    with pytest.raises(ValueError, match="dy must have shape"):
        lstm_recurrence_backward(*args.values())


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_layer_op_refuses_mixed_dtypes(dtype):
    m = torch.nn.LSTM(4, 8)
    x = torch.randn(3, 2, 4).to(dtype)
    h = torch.zeros(1, 2, 8)
    with pytest.raises(TypeError):
        torch.ops.fastlstm.lstm_layer(x, list(m._flat_weights), h, h, None, True)


@needs_cpu
def test_lstm_refuses_wrong_state_shapes_and_no_layers():
    m = torch.nn.LSTM(4, 8)
    x = torch.randn(3, 3, 4)
    bad = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="h0 must have shape"):
        fastlstm.ops.lstm(x, (bad, torch.zeros(1, 3, 8)), list(m._flat_weights), num_layers=1, backend="cpu")
    with pytest.raises(ValueError, match="num_layers"):
        fastlstm.ops.lstm(x, None, [], num_layers=0)


@needs_cpu
def test_transposed_view_of_a_cached_square_weight_gets_its_own_answer():
    torch.manual_seed(3)
    w = torch.randn(64, 64)
    x = torch.randn(10, 64)
    first = lstm_input_projection(x, w, None, 1)
    transposed = lstm_input_projection(x, w.t(), None, 1)
    torch.testing.assert_close(first, x @ w.t(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(transposed, x @ w, rtol=1e-5, atol=1e-4)


# -- memory (#21 class 5) ----------------------------------------------------


class _Scale(torch.nn.Module):
    def forward(self, w):
        return w * 1.0


@needs_cpu
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_parametrized_module_does_not_pile_up_prepared_weights(grad):
    from torch.nn.utils import parametrize

    torch.manual_seed(4)
    m = fastlstm.LSTM(64, 256, backend="cpu")
    parametrize.register_parametrization(m, "weight_hh_l0", _Scale())
    x = torch.randn(4, 2, 64)
    fastlstm.ops.empty_cache()
    with torch.set_grad_enabled(grad):
        for i in range(40):
            m(x)[0].sum()
            gc.collect()
            if i == 1:
                after_two = (len(REGISTRY), REGISTRY.nbytes)
    assert (len(REGISTRY), REGISTRY.nbytes) == after_two
    peer = torch.nn.LSTM(64, 256)
    with torch.no_grad():
        for name in ("weight_ih_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(peer, name).copy_(getattr(m, name))
        peer.weight_hh_l0.copy_(m.weight_hh_l0)
        assert_parity(m(x)[0], peer(x)[0], torch.float32, name="y")


@needs_cpu
def test_registry_is_bounded_in_bytes(monkeypatch):
    fastlstm.ops.empty_cache()
    monkeypatch.setattr(REGISTRY, "max_bytes", 8 << 20)
    models = [fastlstm.LSTM(16, 256, backend="cpu").eval() for _ in range(12)]  # ~3 MB of kernel forms each
    with torch.no_grad():
        for m in models:
            m(torch.randn(2, 1, 16))
    assert 0 < REGISTRY.nbytes <= 8 << 20


@needs_cpu
def test_entry_dies_with_its_parameters():
    fastlstm.ops.empty_cache()
    m = fastlstm.LSTM(8, 16, backend="cpu").eval()
    with torch.no_grad():
        m(torch.randn(3, 1, 8))
    assert len(REGISTRY) >= 1
    del m
    gc.collect()
    assert len(REGISTRY) == 0


# -- tracing (#21 class 4) ---------------------------------------------------


@needs_cpu
def test_jit_trace_is_correct_on_new_input():
    torch.manual_seed(5)
    m = fastlstm.LSTM(6, 8, backend="cpu").requires_grad_(False)
    x = torch.randn(5, 3, 6)
    with _no_check():
        traced = torch.jit.trace(m, (x,), check_trace=False)
    new = torch.randn(5, 3, 6)
    assert_parity(traced(new)[0], m(new)[0], torch.float32, name="y")
    assert_parity(traced(new)[0], _peer(m)(new)[0].detach(), torch.float32, name="y vs torch")


class _no_check:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", torch.jit.TracerWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


# -- plan() (#22) ------------------------------------------------------------

BASE = dict(backend="cpu", dtype=torch.float32, state_dtype=torch.float32, proj_size=0, needs_grad=False,
            grads_to_weights=False, record=False, eager=True, tracing=False, dropout_between=False,
            empty_input=False)


@pytest.mark.parametrize("change, path, weights", [
    ({}, "stack", "prepared"),
    ({"proj_size": 4}, "direct", "prepared"),
    ({"dtype": torch.float64, "state_dtype": torch.float64}, "direct", "prepared"),
    ({"dropout_between": True}, "direct", "prepared"),
    ({"empty_input": True}, "direct", "prepared"),
    ({"needs_grad": True, "grads_to_weights": True}, "stack_fn", "prepared"),
    ({"needs_grad": True}, "stack_fn", "prepared"),
    ({"needs_grad": True, "grads_to_weights": True, "eager": False, "compiling": True}, "stack_op", "prepared"),
    ({"needs_grad": True, "grads_to_weights": True, "dropout_between": True}, "layer_op", "prepared"),
    ({"needs_grad": True, "dropout_between": True}, "ops", "prepared"),
    ({"needs_grad": True, "grads_to_weights": True, "proj_size": 4}, "ops", "differentiable"),
    ({"record": True}, "ops", "prepared"),
    ({"tracing": True}, "ops", "differentiable"),
    ({"eager": False, "compiling": True}, "ops", "differentiable"),
    ({"backend": "reference"}, "ops", "prepared"),
    ({"backend": "reference", "needs_grad": True, "grads_to_weights": True}, "ops", "differentiable"),
])
def test_plan_chooses_the_path(change, path, weights):
    chosen = plan(**{**BASE, **change})
    assert (chosen.path, chosen.weights) == (path, weights)
    assert chosen.save == (BASE["record"] or change.get("record", False) or change.get("needs_grad", False))


# -- lstm_step (#22) ---------------------------------------------------------


@needs_cpu
def test_lstm_step_matches_the_reference_cell_and_its_gradients():
    torch.manual_seed(6)
    cell = torch.nn.LSTMCell(5, 8)
    weights = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
    x, h, c = torch.randn(3, 5, requires_grad=True), torch.randn(3, 8), torch.randn(3, 8)
    h1, c1 = lstm_step(x, weights, h, c, True)
    hr, cr = cell(x, (h, c))
    assert_parity(h1.detach(), hr.detach(), torch.float32, name="h")
    assert_parity(c1.detach(), cr.detach(), torch.float32, name="c")
    g = torch.autograd.grad((h1 + c1).sum(), [x, *weights])
    gr = torch.autograd.grad((hr + cr).sum(), [x, *weights])
    for a, b in zip(g, gr):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@needs_cpu
def test_lstm_step_opcheck_and_compile():
    torch.manual_seed(7)
    cell = torch.nn.LSTMCell(4, 6)
    weights = [cell.weight_ih.detach(), cell.weight_hh.detach(), cell.bias_ih.detach(), cell.bias_hh.detach()]
    args = (torch.randn(2, 4), weights, torch.randn(2, 6), torch.randn(2, 6), True)
    torch.library.opcheck(torch.ops.fastlstm.lstm_step.default, args)
    compiled = torch.compile(lambda *a: torch.ops.fastlstm.lstm_step(*a), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(*args), lstm_step(*args))


# -- double backward (#20) ---------------------------------------------------


@needs_cpu
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_gradgradcheck_fp64_module(bidirectional):
    torch.manual_seed(8)
    m = fastlstm.LSTM(3, 4, bidirectional=bidirectional, backend="cpu").double()
    x = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    params = list(m.parameters())

    def f(x, *ps):
        weights = list(ps)
        return fastlstm.ops.lstm(x, None, weights, num_layers=1, bidirectional=bidirectional, backend="cpu")[0]

    assert torch.autograd.gradgradcheck(f, (x, *params))


@needs_cpu
def test_gradgradcheck_fp64_recurrence_op():
    torch.manual_seed(9)
    T, B, D, H = 3, 2, 2, 3
    gx = torch.randn(T, B, D, 4 * H, dtype=torch.float64, requires_grad=True)
    w_hh = torch.randn(D, 4 * H, H, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(D, B, H, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(D, B, H, dtype=torch.float64, requires_grad=True)
    f = lambda gx, w, h, c: fastlstm.ops.lstm_recurrence(gx, w, None, h, c, None, True)[:3]  # noqa: E731
    assert torch.autograd.gradgradcheck(f, (gx, w_hh, h0, c0))


@needs_cpu
def test_gradient_penalty_matches_torch():
    torch.manual_seed(10)
    m = fastlstm.LSTM(3, 5, backend="cpu")
    peer = _peer(m)
    x = torch.randn(4, 2, 3, requires_grad=True)
    penalties = []
    for module in (m, peer):
        y = module(x)[0]
        (gx,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
        penalties.append(torch.autograd.grad(gx.pow(2).sum(), list(module.parameters())))
    for a, b in zip(*penalties):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# -- lstm_stack: every layer of a training step in one node (#22) -------------


def _stack_args(dtype=torch.float32, bidirectional=True, lengths=False, layers=2):
    torch.manual_seed(11)
    m = torch.nn.LSTM(3, 4, num_layers=layers, bidirectional=bidirectional).to(dtype)
    D = 2 if bidirectional else 1
    x = torch.randn(5, 2, 3, dtype=dtype, requires_grad=True)
    h0 = torch.randn(layers * D, 2, 4, dtype=dtype, requires_grad=True)
    c0 = torch.randn(layers * D, 2, 4, dtype=dtype, requires_grad=True)
    lens = torch.tensor([5, 3]) if lengths else None
    return m, (x, list(m._flat_weights), h0, c0, lens, layers, bidirectional, True)


@needs_cpu
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
def test_stack_op_matches_the_reference_with_every_gradient(bidirectional, lengths):
    m, args = _stack_args(torch.float64, bidirectional, lengths)
    x, weights, h0, c0, lens = args[:5]
    y, hn, cn, _ = torch.ops.fastlstm.lstm_stack(*args)
    yr, hr, cr = reference.lstm(x, (h0, c0), weights, num_layers=2, bidirectional=bidirectional, lengths=lens)
    for a, b in ((y, yr), (hn, hr), (cn, cr)):
        torch.testing.assert_close(a, b)
    leaves = [x, h0, c0, *weights]
    loss = lambda o: (o[0] * 1.5).sum() + (o[1] ** 2).sum() + o[2].sum()  # noqa: E731
    got = torch.autograd.grad(loss((y, hn, cn)), leaves)
    expected = torch.autograd.grad(loss((yr, hr, cr)), leaves)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


@needs_cpu
def test_stack_op_opcheck_gradcheck_and_compile():
    m, args = _stack_args(torch.float64)
    torch.library.opcheck(torch.ops.fastlstm.lstm_stack.default, args)
    x, weights, h0, c0 = args[:4]
    f = lambda x, h, c, *w: torch.ops.fastlstm.lstm_stack(x, list(w), h, c, None, 2, True, True)[:3]  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, h0, c0, *weights))
    assert torch.autograd.gradgradcheck(f, (x, h0, c0, *weights))
    module = fastlstm.LSTM(3, 4, num_layers=2, bidirectional=True, backend="cpu")
    xs = torch.randn(5, 2, 3)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    out = compiled(xs)[0]
    out.sum().backward()
    grads = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    module(xs)[0].sum().backward()
    for a, p in zip(grads, module.parameters()):
        torch.testing.assert_close(a, p.grad)


@needs_cpu
def test_training_step_is_one_autograd_node_for_the_whole_stack():
    module = fastlstm.LSTM(3, 4, num_layers=3, bidirectional=True, backend="cpu")
    y = module(torch.randn(5, 2, 3))[0]
    assert "LstmStack" in type(y.grad_fn).__name__ or "lstm_stack" in y.grad_fn.name()


@needs_cpu
def test_clearing_entries_that_own_other_entries_tensors_does_not_deadlock():
    # A recording forward caches the packed form of a prepared object's own w_hh:
    # freeing the outer entry fires the inner entry's finalizer.
    m = fastlstm.LSTM(4, 8, num_layers=2, backend="cpu")
    x = torch.randn(3, 2, 4, requires_grad=True)
    with torch.no_grad():
        m.requires_grad_(False)
    m(x, None)[0].sum().backward()  # x needs grad, weights do not
    fastlstm.ops.lstm(x.detach(), None, list(m._flat_weights), num_layers=2, record=[])
    done = threading.Event()
    worker = threading.Thread(target=lambda: (fastlstm.ops.empty_cache(), done.set()))
    worker.start()
    worker.join(timeout=60)
    assert done.is_set()
    assert len(REGISTRY) == 0
