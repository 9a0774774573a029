"""fastlstm::lstm_recurrence and fastlstm.ops.lstm against the reference."""

import pytest
import torch

import fastlstm
from fastlstm import reference
from fastlstm.ops import lstm_recurrence
from fastlstm import _ext
from fastlstm.ops.lstm import lstm_input_projection
from fastlstm.testing import assert_parity, within_error_rule

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
    # SIMD kernels: partial unit blocks (H not a multiple of 8/16), full and
    # tail row groups, lengths, a projection wider than one vector.
    "awkward-lengths": (9, 7, 2, 37, 37, [9, 3, 0, 9, 5, 1, 8]),
    "proj-wide": (5, 6, 2, 20, 17, None),
    # more unit / column blocks (9) than one pass of the row tail (2 in the
    # forward, 8 in the backward), with tail rows in both (7 = 6 + 1 = 4 + 3)
    "wide-tail": (2, 7, 1, 130, 130, [2, 1, 2, 2, 1, 2, 2]),
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
    """fp64: parity with the reference. fp32: the design's rule against an fp64
    reference (at most 2x the fp32 reference's own error, plus 1e-6); a fixed
    tolerance between two fp32 results fails where both are within the rule
    (the scalar level's dh0 in proj-wide: 1.2e-5 apart, each ~2e-5 off)."""
    args = _inputs(*case, dtype=dtype)
    args64 = [a.detach().double().requires_grad_(a.requires_grad) if a is not None and a.is_floating_point() else a
              for a in args]
    fused = lstm_recurrence(*args, True)
    ref = reference.lstm_recurrence(*args)
    ref64 = reference.lstm_recurrence(*args64)

    def check(a, b, r, name):
        if dtype == torch.float64:
            return assert_parity(a, b, dtype, name=name)
        ok, err, peer = within_error_rule(a, b, r)
        assert ok, f"{name}: error {err:.3g} against fp64, fp32 reference {peer:.3g}"

    for name, a, b, r in zip(["y", "h_n", "c_n", "gates", "cells"], fused, ref, ref64):
        check(a, b, r, name)
    diff = [i for i, a in enumerate(args) if a is not None and a.requires_grad]
    if case[1] == 0:
        return
    g_fused = torch.autograd.grad(_loss(fused), [args[i] for i in diff])
    g_ref = torch.autograd.grad(_loss(ref), [args[i] for i in diff])
    g_ref64 = torch.autograd.grad(_loss(ref64), [args64[i] for i in diff])
    for i, (a, b, r) in enumerate(zip(g_fused, g_ref, g_ref64)):
        check(a, b, r, f"grad {i}")


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


def _capabilities():
    if not fastlstm.available_backends("cpu"):
        return []
    order = ["scalar", "avx2", "avx512"]
    detected = _ext._C.detected_cpu_capability()
    top = order.index("avx512") if detected.startswith("avx512") else order.index(detected)
    return order[: top + 1]


@pytest.fixture
def capability(request):
    before = _ext._C.cpu_capability()
    _ext._C.set_cpu_capability(request.param)
    yield request.param
    _ext._C.set_cpu_capability(before)


@needs_cpu
@pytest.mark.parametrize("capability", _capabilities(), indirect=True)
@pytest.mark.parametrize("case", ["awkward-lengths", "proj-wide", "bi"])
def test_every_isa_variant_matches_reference_fp32(case, capability):
    """Every ISA level against an fp64 reference, by the design's error rule
    (at most 2x the fp32 reference's own error, plus 1e-6)."""
    args = _inputs(*CASES[case], dtype=torch.float32)
    args64 = [a.detach().double().requires_grad_(True) if a is not None and a.is_floating_point() else a for a in args]
    fused = lstm_recurrence(*args, True)
    ref = reference.lstm_recurrence(*args)
    ref64 = reference.lstm_recurrence(*args64)
    for name, a, b, r in zip(["y", "h_n", "c_n", "gates", "cells"], fused, ref, ref64):
        ok, err, peer = within_error_rule(a, b, r)
        assert ok, f"{capability} {name}: error {err:.3g} vs fp32 reference {peer:.3g}"
    diff = [i for i, a in enumerate(args) if a is not None and a.requires_grad]
    g_fused = torch.autograd.grad(_loss(fused), [args[i] for i in diff])
    g_ref = torch.autograd.grad(_loss(ref), [args[i] for i in diff])
    g_ref64 = torch.autograd.grad(_loss(ref64), [args64[i] for i in diff])
    for i, (a, b, r) in enumerate(zip(g_fused, g_ref, g_ref64)):
        ok, err, peer = within_error_rule(a, b, r)
        assert ok, f"{capability} grad {i}: error {err:.3g} vs fp32 reference {peer:.3g}"


def _run_with_threads(threads, args):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        outs = lstm_recurrence(*args, True)
        grads = torch.autograd.grad(_loss(outs), [a for a in args if a is not None and a.requires_grad])
        return [o.detach().clone() for o in outs] + list(grads)
    finally:
        torch.set_num_threads(before)


@needs_cpu
@pytest.mark.parametrize("D", [1, 2], ids=["uni", "bi"])
def test_results_bitwise_identical_for_any_thread_count(D):
    torch.manual_seed(3)
    lengths = [11, 2, 7, 0, 11, 5, 9, 11, 1, 4, 11, 6, 3, 10, 8, 11, 2, 11, 7][: 19]
    # large enough (T*B*H*P >= 2^18) that the kernels really use the threads
    args = _inputs(11, 19, D, 48, 48, lengths, dtype=torch.float32)
    one = _run_with_threads(1, args)
    for threads in (2, 3, 4):
        other = _run_with_threads(threads, args)
        for i, (a, b) in enumerate(zip(one, other)):
            assert torch.equal(a, b), f"output {i} differs between 1 and {threads} threads"


@needs_cpu
@pytest.mark.parametrize("D", [1, 2], ids=["uni", "bi"])
def test_small_batch_unit_split_bitwise_identical_and_correct(D):
    """Small batches split the unit blocks across threads (members meet at a
    barrier every step): same bits as one thread, and parity with the reference.
    H = 40 leaves a partial vector block; lengths cover finished rows."""
    torch.manual_seed(5)
    args = _inputs(60, 3, D, 40, 40, [60, 17, 0], dtype=torch.float32)
    saved_mode = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # dW_hh in fastlstm's fixed order, not the BLAS's
    try:
        one = _run_with_threads(1, args)
        others = {threads: _run_with_threads(threads, args) for threads in (2, 3, 4)}
    finally:
        torch.use_deterministic_algorithms(saved_mode)
    for threads, other in others.items():
        for i, (a, b) in enumerate(zip(one, other)):
            assert torch.equal(a, b), f"output {i} differs between 1 and {threads} threads"
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            fused = lstm_recurrence(*args, False)
    finally:
        torch.set_num_threads(before)
    ref = reference.lstm_recurrence(*args)
    ref64 = reference.lstm_recurrence(*[a.double() if a is not None and a.is_floating_point() else a for a in args])
    for name, a, b, r, c in zip(["y", "h_n", "c_n"], fused, ref, ref64, one):
        ok, err, peer = within_error_rule(a, b, r)
        assert ok, f"{name}: error {err:.3g} vs fp32 reference {peer:.3g}"
        assert torch.equal(a, c), f"{name}: inference differs from the training forward"


@needs_cpu
def test_backward_team_bitwise_identical_and_correct():
    """A W_hh of >= 1 MB at 8 <= B < 64 rows runs the reverse recurrence as a
    unit-split team (two phases per step): same bits for any thread count and
    the reference's gradients. H = 260 leaves a partial vector block and a
    short last chunk; lengths cover rows that end early or never start."""
    torch.manual_seed(9)
    lengths = [3, 1, 0, 3, 2, 3, 3, 1, 3]
    args = _inputs(3, 9, 1, 260, 260, lengths, dtype=torch.float32)
    one = _run_with_threads(1, args)
    for threads in (2, 3, 4):
        other = _run_with_threads(threads, args)
        for i, (a, b) in enumerate(zip(one, other)):
            assert torch.equal(a, b), f"output {i} differs between 1 and {threads} threads"
    diff = [a for a in args if a is not None and a.requires_grad]
    ref = reference.lstm_recurrence(*args)
    args64 = [a.detach().double().requires_grad_(a.requires_grad) if a is not None and a.is_floating_point() else a
              for a in args]
    ref64 = reference.lstm_recurrence(*args64)
    g_ref = torch.autograd.grad(_loss(ref), diff)
    g_ref64 = torch.autograd.grad(_loss(ref64), [a for a in args64 if a is not None and a.requires_grad])
    for i, (a, b, r) in enumerate(zip(one[5:], g_ref, g_ref64)):
        ok, err, peer = within_error_rule(a, b, r)
        assert ok, f"grad {i}: error {err:.3g} vs fp32 reference {peer:.3g}"


@needs_cpu
def test_fp32_error_at_T1440_within_twice_torch():
    """The design's accuracy rule on S2's shape: the fused fp32 error against
    an fp64 reference is at most 2x torch's own fp32 error plus 1e-6."""
    torch.manual_seed(0)
    peer = torch.nn.LSTM(32, 128, num_layers=2, bidirectional=True, batch_first=True)
    fused = fastlstm.LSTM(32, 128, num_layers=2, bidirectional=True, batch_first=True, backend="cpu")
    fused.load_state_dict(peer.state_dict())
    ref64 = torch.nn.LSTM(32, 128, num_layers=2, bidirectional=True, batch_first=True).double()
    ref64.load_state_dict(peer.state_dict())
    x = torch.randn(1, 1440, 32)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # results do not depend on it; keeps torch's loop quick on busy machines
    with torch.no_grad():
        out_ref, (h_ref, c_ref) = ref64(x.double())
        out_peer, (h_peer, c_peer) = peer(x)
        out, (h, c) = fused(x)
    torch.set_num_threads(before)
    for name, a, b, r in [("output", out, out_peer, out_ref), ("h_n", h, h_peer, h_ref), ("c_n", c, c_peer, c_ref)]:
        ok, err, peer_err = within_error_rule(a, b, r)
        assert ok, f"{name}: fused error {err:.3g} > 2 x torch error {peer_err:.3g} + 1e-6"


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("shape", [(37, 13, 2, 20), (5, 8, 1, 16), (0, 4, 1, 3)], ids=["bi", "uni", "empty"])
def test_input_projection_matches_torch(shape, dtype):
    N, I, D, H = shape
    x = torch.randn(N, I, dtype=dtype, requires_grad=True)
    w = torch.randn(D * 4 * H, I, dtype=dtype, requires_grad=True)
    b = torch.randn(D * 4 * H, dtype=dtype, requires_grad=True)
    out = lstm_input_projection(x, w, b, D)
    ref = torch.addmm(b, x, w.t())
    assert_parity(out, ref, dtype, name="gx")
    assert_parity(lstm_input_projection(x, w, None, D), x @ w.t(), dtype, name="gx no bias")
    if N == 0:
        return
    g = torch.randn_like(ref)
    for i, (a, r) in enumerate(zip(torch.autograd.grad(out, (x, w, b), g), torch.autograd.grad(ref, (x, w, b), g))):
        assert_parity(a, r, dtype, name=f"grad {i}")


@needs_cpu
@pytest.mark.parametrize(
    "shape", [(64, 200, 1, 72), (611, 24, 2, 20), (500, 200, 2, 20)], ids=["by-units", "short-k", "row-tiles"]
)
def test_input_projection_parallel_plans_match_torch_and_each_other(shape):
    """Large enough to use the threads: few rows split the unit blocks, short
    inputs write whole rows of every direction, long inputs run in row tiles
    (kProjTileRows, the last one partial). Every plan gives the same bits for
    any thread count."""
    torch.manual_seed(4)
    N, I, D, H = shape
    x, w, b = torch.randn(N, I), torch.randn(D * 4 * H, I), torch.randn(D * 4 * H)
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            with torch.no_grad():
                outs.append(lstm_input_projection(x, w, b, D))
    finally:
        torch.set_num_threads(before)
    assert_parity(outs[0], torch.addmm(b.double(), x.double(), w.double().t()), torch.float32, name="gx")
    for threads, out in zip((2, 3), outs[1:]):
        assert torch.equal(out, outs[0]), f"gx differs between 1 and {threads} threads"


@needs_cpu
def test_input_projection_opcheck():
    args = (torch.randn(9, 5, requires_grad=True), torch.randn(2 * 4 * 6, 5, requires_grad=True),
            torch.randn(2 * 4 * 6, requires_grad=True), 2)
    torch.library.opcheck(torch.ops.fastlstm.lstm_input_projection.default, args)


@needs_cpu
def test_packed_weight_cache_follows_in_place_updates():
    torch.manual_seed(1)
    module = fastlstm.LSTM(5, 24, num_layers=2, bidirectional=True, backend="cpu")
    x = torch.randn(6, 3, 5)
    with torch.no_grad():
        module(x)  # fills the caches
        for w in module.parameters():
            w.mul_(0.5).add_(0.01)
        out = module(x)[0]
        ref = reference.lstm(x, None, module._flat_weights, num_layers=2, bidirectional=True)[0]
    assert_parity(out, ref, name="after in-place update")


@needs_cpu
def test_packed_buffer_checked_by_binding():
    D, H, P = 1, 8, 8
    n = _ext._C.lstm_packed_weights_size("float32", D, H, P)
    if n == 0:
        pytest.skip("the active kernel reads w_hh directly (scalar level)")
    w = torch.randn(D, 4 * H, P)
    with pytest.raises(ValueError, match="packed"):
        _ext._C.lstm_pack_weights("float32", _ext.buf(w), _ext.buf(torch.empty(n - 1)), D, H, P)
    gx, h0, c0 = torch.randn(2, 1, D, 4 * H), torch.zeros(D, 1, P), torch.zeros(D, 1, H)
    y, hn, cn = torch.empty(2, 1, D, P), torch.empty(D, 1, P), torch.empty(D, 1, H)
    with pytest.raises(ValueError, match="w_hh_packed"):
        _ext._C.lstm_recurrence_fwd("float32", _ext.buf(gx), _ext.buf(w), (0, 0), _ext.buf(h0), _ext.buf(c0),
                                    (0, 0), _ext.buf(y), _ext.buf(hn), _ext.buf(cn), (0, 0), (0, 0),
                                    2, 1, D, H, P, 1, _ext.buf(torch.empty(n + 16)))
    with pytest.raises(ValueError, match="float32"):
        _ext._C.lstm_input_projection("float64", (0, 0), (0, 0), (0, 0), (0, 0), 1, 1, H, 4, 1)


@needs_cpu
def test_lstm_inference_and_training_paths_agree():
    """The eager inference shortcut (ops called without the dispatcher) and the
    autograd path give the same forward result."""
    torch.manual_seed(2)
    module = fastlstm.LSTM(7, 16, num_layers=2, bidirectional=True, backend="cpu")
    x = torch.randn(9, 4, 7)
    with torch.no_grad():
        fast = module(x)[0]
    slow = module(x.requires_grad_(True))[0]
    torch.testing.assert_close(fast, slow.detach(), rtol=0, atol=0)


# fastlstm::lstm_layer: the whole-layer training op.
# (T, B, D, I, H, lengths, bias)
LAYER_CASES = {
    "uni": (7, 3, 1, 4, 5, None, True),
    "bi": (6, 2, 2, 3, 4, None, True),
    "bi-nobias": (5, 3, 2, 4, 3, None, False),
    "T1-bi": (1, 2, 2, 3, 3, None, True),
    "lengths-bi": (6, 4, 2, 3, 4, [6, 1, 4, 2], True),
}


def _layer_inputs(T, B, D, I, H, lengths, bias, dtype=torch.float64):
    def r(*shape):
        return (torch.randn(*shape, dtype=dtype) * 0.5).requires_grad_(True)

    weights = []
    for _ in range(D):
        weights += [r(4 * H, I), r(4 * H, H)] + ([r(4 * H), r(4 * H)] if bias else [])
    lengths = torch.tensor(lengths, dtype=torch.int64) if lengths is not None else None
    return r(T, B, I), weights, r(D, B, H), r(D, B, H), lengths, bias


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("case", LAYER_CASES.values(), ids=LAYER_CASES.keys())
def test_layer_op_matches_reference_outputs_and_every_gradient(case, dtype):
    x, weights, h0, c0, lengths, bias = _layer_inputs(*case, dtype=torch.float64)
    D = h0.shape[0]
    fused_in = [t.detach().to(dtype).requires_grad_(True) for t in [x, *weights, h0, c0]]
    fx, *fw, fh0, fc0 = fused_in
    y, hn, cn, _, _ = torch.ops.fastlstm.lstm_layer(fx, fw, fh0, fc0, lengths, bias)
    ref = reference.lstm(x, (h0, c0), weights, num_layers=1, bidirectional=D == 2, has_bias=bias,
                         lengths=lengths)
    got = (y.reshape(y.shape[0], y.shape[1], -1), hn, cn)
    for a, b in zip(got, ref):
        assert_parity(a, b)
    g_got = torch.autograd.grad(_loss(got), fused_in)
    g_ref = torch.autograd.grad(_loss(ref), [x, *weights, h0, c0])
    for a, b in zip(g_got, g_ref):
        assert_parity(a, b)


@needs_cpu
@pytest.mark.parametrize("case", ["bi", "lengths-bi"])
def test_layer_op_gradcheck_and_opcheck(case):
    args = _layer_inputs(*LAYER_CASES[case])
    x, weights, h0, c0, lengths, bias = args

    def f(x, h0, c0, *weights):
        return torch.ops.fastlstm.lstm_layer(x, list(weights), h0, c0, lengths, bias)[:3]

    assert torch.autograd.gradcheck(f, (x, h0, c0, *weights))
    torch.library.opcheck(torch.ops.fastlstm.lstm_layer.default, args)


@needs_cpu
def test_layer_op_bias_gradients_do_not_alias():
    """b_ih and b_hh receive equal gradients in separate tensors, so a later
    in-place accumulation into one .grad cannot change the other."""
    module = fastlstm.LSTM(3, 4, backend="cpu")
    module(torch.randn(5, 2, 3))[0].sum().backward()
    assert torch.equal(module.bias_ih_l0.grad, module.bias_hh_l0.grad)
    assert module.bias_ih_l0.grad.data_ptr() != module.bias_hh_l0.grad.data_ptr()


@needs_cpu
def test_layer_op_weight_gradient_views_match_general_form():
    """dW_hh read through strided views of y (full-length sequences) equals the
    general form built from the stacked previous hidden states."""
    import importlib

    ops_lstm = importlib.import_module("fastlstm.ops.lstm.grads")
    T, B, D, H = 6, 3, 2, 5
    dgates = torch.randn(T, B, D, 4 * H, dtype=torch.float64)
    y = torch.randn(T, B, D, H, dtype=torch.float64)
    h0 = torch.randn(D, B, H, dtype=torch.float64)
    fast = ops_lstm.dw_hh(dgates, y, h0, None)
    full = torch.full((B,), T, dtype=torch.int64)
    general = ops_lstm.dw_hh(dgates, y, h0, full)
    torch.testing.assert_close(fast, general)


# _C.lstm_stack_fwd: fp32 inference through every layer in one call.
# (T, B, I, H, layers, bidirectional, bias, lengths, hx)
STACK_CASES = {
    "uni-1": (7, 3, 5, 16, 1, False, True, None, False),
    "bi-2": (9, 2, 6, 12, 2, True, True, None, True),
    "uni-3-nobias": (5, 4, 3, 20, 3, False, False, None, True),
    "bi-lengths": (8, 5, 4, 37, 2, True, True, [8, 1, 5, 0, 8], True),
    # large enough that the unit-split team and the batch plan use both threads
    "team": (40, 2, 8, 256, 2, False, True, [40, 9], False),
    "batch": (12, 24, 8, 48, 2, True, True, None, False),
    # the wavefront over the layers (chunks of 16 steps; T not a multiple of it)
    "wavefront": (40, 2, 8, 64, 2, False, True, [40, 9], True),
    "wavefront-3": (33, 3, 5, 64, 3, False, False, [33, 17, 16], True),
}
WAVEFRONT_CASES = {"wavefront", "wavefront-3"}


def _stack_inputs(T, B, I, H, layers, bi, bias, lengths, hx):
    module = fastlstm.LSTM(I, H, num_layers=layers, bidirectional=bi, bias=bias, backend="cpu").eval()
    x = torch.randn(T, B, I)
    n = layers * (2 if bi else 1)
    state = (torch.randn(n, B, H) * 0.5, torch.randn(n, B, H) * 0.5) if hx else None
    lengths = torch.tensor(lengths, dtype=torch.int64) if lengths is not None else None
    kwargs = dict(num_layers=layers, bidirectional=bi, has_bias=bias, lengths=lengths)
    return module, x, state, kwargs


@needs_cpu
@pytest.mark.parametrize("name", STACK_CASES.keys())
def test_stack_inference_matches_per_layer_path_bitwise_and_reference(name, monkeypatch):
    """The one-call stack runs the same kernels as the per-layer path: same bits;
    and parity with the float64 reference. With 2 threads the unidirectional
    cases named wavefront run as one (each layer a chunk behind the one below)."""
    import importlib

    ops = importlib.import_module("fastlstm.ops.lstm")
    case = STACK_CASES[name]
    T, B, _, H, layers, bi = case[:6]
    assert _ext._C.lstm_stack_uses_wavefront(T, B, 2 if bi else 1, H, layers, 2) == (name in WAVEFRONT_CASES)
    torch.manual_seed(11)
    module, x, state, kwargs = _stack_inputs(*case)
    weights = list(module._flat_weights)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            prep = ops.prepared_weights(weights, kwargs["num_layers"], 2 if kwargs["bidirectional"] else 1,
                                        kwargs["has_bias"], 0)
            assert prep.stack_plan(weights) is not None
            stack = fastlstm.ops.lstm(x, state, weights, backend="cpu", **kwargs)
            monkeypatch.setattr(ops.PreparedWeights, "stack_plan", lambda *a: None)
            per_layer = fastlstm.ops.lstm(x, state, weights, backend="cpu", **kwargs)
    finally:
        torch.set_num_threads(before)
    ref = reference.lstm(x.double(), None if state is None else tuple(s.double() for s in state),
                         [w.double() for w in weights], **kwargs)
    for name, a, b, r in zip(["out", "h_n", "c_n"], stack, per_layer, ref):
        assert torch.equal(a, b), f"{name}: stack and per-layer paths differ"
        assert_parity(a, r.float())


@needs_cpu
def test_training_workspaces_never_leak_into_results():
    # The forward's input gates and the backward's gate gradients live in
    # per-thread workspaces reused by the next call: nothing a call returns
    # may be a view of them, so a second call must leave the first's
    # outputs and gradients untouched, and both must match the reference.
    torch.manual_seed(7)
    module = fastlstm.LSTM(5, 8, num_layers=2, bidirectional=True, backend="cpu")
    params = list(module.parameters())
    results = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        x = torch.randn(9, 3, 5, requires_grad=True)
        y, (hn, cn) = module(x)
        grads = torch.autograd.grad((y * y).sum() + hn.sum() + cn.sum(), [x] + params)
        results.append((x, y, grads, [t.clone() for t in (y, *grads)]))
    for x, y, grads, copies in results:
        assert all(torch.equal(a, b) for a, b in zip((y, *grads), copies))
        xr = x.detach().double().requires_grad_()
        wr = [w.detach().double().requires_grad_() for w in module._flat_weights]
        yr, hr, cr = reference.lstm(xr, None, wr, num_layers=2, bidirectional=True)
        ref = torch.autograd.grad((yr * yr).sum() + hr.sum() + cr.sum(), [xr] + wr)
        assert_parity(y, yr.float())
        for g, r in zip(grads, ref):
            torch.testing.assert_close(g.double(), r, rtol=1e-4, atol=1e-5)


@needs_cpu
def test_fp32_training_with_lengths_matches_reference():
    """The fp32 training path (lstm_layer) with rows of every length, the
    bias gradients included; H = 20 leaves a partial vector block."""
    torch.manual_seed(8)
    module = fastlstm.LSTM(5, 20, bidirectional=True, backend="cpu")
    weights = list(module._flat_weights)
    x = torch.randn(7, 5, 5)
    lengths = torch.tensor([7, 2, 0, 5, 7])
    y = fastlstm.ops.lstm(x, None, weights, num_layers=1, bidirectional=True, lengths=lengths, backend="cpu")[0]
    grads = torch.autograd.grad((y * y).sum(), weights)
    wr = [w.detach().double().requires_grad_() for w in weights]
    yr = reference.lstm(x.double(), None, wr, num_layers=1, bidirectional=True, lengths=lengths)[0]
    ref = torch.autograd.grad((yr * yr).sum(), wr)
    for name, g, r in zip(module._flat_weights_names, grads, ref):
        torch.testing.assert_close(g.double(), r, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


@needs_cpu
def test_stack_inference_used_by_the_module_and_follows_weight_updates():
    import importlib

    ops = importlib.import_module("fastlstm.ops.lstm")
    torch.manual_seed(4)
    module = fastlstm.LSTM(5, 8, num_layers=2, backend="cpu").eval()
    x = torch.randn(6, 2, 5)
    ops.empty_cache()
    with torch.no_grad():
        first = module(x)[0]
        entries = ops.REGISTRY.entries()
        module.weight_hh_l1.mul_(0.5)  # in place: the version counter moves, the plan must too
        second = module(x)[0]
    # The entry is refreshed in place, not joined by a second one.
    assert ops.REGISTRY.entries() == entries
    ref = reference.lstm(x, None, list(module._flat_weights), num_layers=2)[0]
    assert not torch.equal(first, second)
    assert_parity(second, ref)


@needs_cpu
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_training_weights_follow_optimizer_steps_without_piling_up(bidirectional):
    """Training reuses one build of a layer's weights per version of its
    parameters: after each in-place update the step matches torch.nn.LSTM,
    and the caches hold as many entries as after the first step."""
    import importlib

    ops = importlib.import_module("fastlstm.ops.lstm")
    torch.manual_seed(6)
    module = fastlstm.LSTM(5, 8, num_layers=2, bidirectional=bidirectional, backend="cpu")
    peer = torch.nn.LSTM(5, 8, num_layers=2, bidirectional=bidirectional)
    x = torch.randn(6, 3, 5)
    ops.empty_cache()
    sizes = None
    for _ in range(3):
        peer.load_state_dict(module.state_dict())
        out, peer_out = module(x)[0], peer(x)[0]
        out.sum().backward()
        peer_out.sum().backward()
        assert_parity(out.detach(), peer_out.detach(), torch.float32, name="y")
        for name, p in module.named_parameters():
            torch.testing.assert_close(p.grad, peer.get_parameter(name).grad, rtol=1e-4, atol=1e-5)
        if sizes is None:
            sizes = (len(ops.REGISTRY), ops.REGISTRY.nbytes)
        assert (len(ops.REGISTRY), ops.REGISTRY.nbytes) == sizes
        with torch.no_grad():  # an optimizer step: in place, versions move
            for p in module.parameters():
                p.sub_(0.1 * p.grad)
                p.grad = None
        peer.zero_grad()


@needs_cpu
def test_empty_cache_makes_edits_through_data_visible():
    """Edits through .data bypass the version counters the weight caches
    key on; empty_cache() is the documented remedy."""
    torch.manual_seed(7)
    module = fastlstm.LSTM(5, 8, bidirectional=True, backend="cpu")
    x = torch.randn(4, 2, 5)
    module(x)[0].sum().backward()
    module.weight_hh_l0.data.mul_(0.5)
    fastlstm.ops.empty_cache()
    ref = reference.lstm(x, None, list(module._flat_weights), num_layers=1, bidirectional=True)[0]
    assert_parity(module(x)[0].detach(), ref.detach(), torch.float32, name="y")


@needs_cpu
def test_stack_buffers_checked_by_binding():
    if _ext._C.lstm_packed_weights_size("float32", 1, 8, 8) == 0:
        pytest.skip("the active kernel reads w_hh directly (scalar level)")
    import importlib

    ops = importlib.import_module("fastlstm.ops.lstm")
    T, B, I, H = 3, 2, 4, 8
    module = fastlstm.LSTM(I, H, num_layers=2).eval()
    weights = list(module._flat_weights)
    prep = ops.prepared_weights(weights, 2, 1, True, 0)  # owns the plan's buffers
    plan = prep.stack_plan(weights)
    x, state = torch.randn(T, B, I), torch.zeros(2, B, H)
    y, hn, cn = torch.empty(T, B, H), torch.empty(2, B, H), torch.empty(2, B, H)
    gx, mid = torch.empty(T * B * 4 * H), torch.empty(T * B * H)
    b = _ext.buf

    def call(x=x, plan=plan, y=y, gx=gx, mid=mid, lengths=None, I=I):
        _ext._C.lstm_stack_fwd(b(x), b(state), b(state), b(lengths) if lengths is not None else (0, 0), plan,
                               b(y), b(hn), b(cn), b(gx) if gx is not None else (0, 0),
                               b(mid) if mid is not None else (0, 0), T, B, I, 1, H, 2)

    call()
    with pytest.raises(ValueError, match="x has"):
        call(x=torch.randn(T, B, I + 1))
    with pytest.raises(ValueError, match="layer 1 w_ih_packed"):
        call(plan=[plan[0], plan[0]])  # layer 1's input is H wide, not I
    with pytest.raises(ValueError, match="y_mid"):
        call(mid=None)
    with pytest.raises(ValueError, match="gx has"):
        call(gx=torch.empty(T * B * 4 * H - 1))
    assert not _ext._C.lstm_stack_uses_wavefront(T, B, 1, H, 2, 2)
    with pytest.raises(ValueError, match="gx"):  # only the wavefront may go without it
        call(gx=None)
    with pytest.raises(ValueError, match="lengths"):
        call(lengths=torch.tensor([T + 1, 1]))
    with pytest.raises(ValueError, match="at least one layer"):
        call(plan=[])
