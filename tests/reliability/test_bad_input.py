"""Bad and awkward input for every public op and module: a clear Python
exception of the type torch raises (naming the argument), or -- where torch
accepts the input -- the same result as torch. Never a crash.

Categories (ids name them): dtype, device, shape, hx, view, zero-size,
lengths, packed, nonfinite, binding, huge.
"""

import os
import resource
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fastlstm
from fastlstm import _ext, ops
from fastlstm.testing import assert_parity

I, H = 4, 6
T, B = 5, 3
BACKENDS = fastlstm.available_backends("cpu")


def _pair(backend=None, **cfg):
    ref = torch.nn.LSTM(I, H, **cfg)
    return ref, fastlstm.LSTM.from_torch(ref, backend=backend)


def _cell_pair(backend=None):
    ref = torch.nn.LSTMCell(I, H)
    return ref, fastlstm.LSTMCell.from_torch(ref, backend=backend)


def _same_outcome(run_ref, run_fast, match=None):
    """torch raises -> fastlstm raises the same type (matching ``match``);
    torch returns -> fastlstm returns the same values."""
    try:
        expected = run_ref()
    except Exception as torch_err:  # noqa: BLE001 - any torch error type is the contract
        with pytest.raises(type(torch_err), match=match):
            run_fast()
        return
    actual = run_fast()
    for a, e in zip(torch.utils._pytree.tree_leaves(actual), torch.utils._pytree.tree_leaves(expected)):
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5, equal_nan=True)


# --------------------------------------------------------------------------
# fastlstm.LSTM: inputs torch rejects
# --------------------------------------------------------------------------

x3 = lambda *s, **k: torch.randn(*(s or (T, B, I)), **k)  # noqa: E731
zeros_h = lambda *s, **k: torch.zeros(*(s or (1, B, H)), **k)  # noqa: E731

LSTM_REJECTED = {
    "dtype-int64": (lambda: (x3().long(),), "dtype"),
    "dtype-int32": (lambda: (x3().int(),), "dtype"),
    "dtype-bool": (lambda: (x3() > 0,), "dtype"),
    "dtype-complex64": (lambda: (x3().to(torch.complex64),), "dtype"),
    "dtype-complex128": (lambda: (x3().to(torch.complex128),), "dtype"),
    "dtype-float64-vs-float32-weights": (lambda: (x3().double(),), "dtype"),
    "dtype-float16-vs-float32-weights": (lambda: (x3().half(),), "dtype"),
    "device-meta-input": (lambda: (x3(device="meta"),), "device"),
    "device-meta-h0": (lambda: (x3(), (zeros_h(device="meta"), zeros_h())), "device"),
    "device-meta-c0": (lambda: (x3(), (zeros_h(), zeros_h(device="meta"))), "device"),
    "shape-4d": (lambda: (torch.randn(T, B, I, 1),), "2D or 3D"),
    "shape-1d": (lambda: (torch.randn(I),), "2D or 3D"),
    "shape-wrong-input-size": (lambda: (x3(T, B, I + 1),), "input_size"),
    "shape-zero-input-size": (lambda: (x3(T, B, 0),), "input_size"),
    "zero-size-T": (lambda: (x3(0, B, I),), "sequence length"),
    "zero-size-T-unbatched": (lambda: (torch.randn(0, I),), "sequence length"),
    "hx-wrong-batch": (lambda: (x3(), (zeros_h(1, B + 1, H), zeros_h(1, B + 1, H))), "hidden"),
    "hx-wrong-layers": (lambda: (x3(), (zeros_h(2, B, H), zeros_h(2, B, H))), "hidden"),
    "hx-wrong-hidden": (lambda: (x3(), (zeros_h(1, B, H + 1), zeros_h())), "hidden"),
    "hx-c0-wrong-hidden": (lambda: (x3(), (zeros_h(), zeros_h(1, B, H - 1))), "hidden"),
    "hx-2d-for-3d-input": (lambda: (x3(), (zeros_h(B, H), zeros_h(B, H))), "3-D"),
    "hx-3d-for-2d-input": (lambda: (torch.randn(T, I), (zeros_h(), zeros_h())), "2-D"),
    "hx-int-dtype": (lambda: (x3(), (zeros_h(dtype=torch.long), zeros_h())), None),
    "hx-float64-dtype": (lambda: (x3(), (zeros_h(dtype=torch.double), zeros_h(dtype=torch.double))), None),
}


@pytest.mark.parametrize("case", LSTM_REJECTED.values(), ids=LSTM_REJECTED.keys())
def test_lstm_rejects_like_torch(case):
    make, match = case
    ref, fast = _pair()
    args = make()
    with pytest.raises(Exception) as torch_err:
        ref(*args)
    with pytest.raises(type(torch_err.value), match=match):
        fast(*args)


@pytest.mark.parametrize("hx", [torch.zeros(1, B, H), (torch.zeros(1, B, H),), "h"], ids=["tensor", "1-tuple", "str"])
def test_lstm_hx_not_a_pair_raises_clearly(hx):
    # torch fails here with an accidental IndexError; fastlstm names hx.
    _, fast = _pair()
    with pytest.raises((RuntimeError, TypeError), match="hx|hidden"):
        fast(x3(), hx)


@pytest.mark.parametrize("bad", [[1, 2], None, 3.0, "x"], ids=["list", "none", "float", "str"])
def test_lstm_non_tensor_input(bad):
    _, fast = _pair()
    with pytest.raises(TypeError, match="input"):
        fast(bad)


# --------------------------------------------------------------------------
# fastlstm.LSTM: awkward inputs torch accepts must work and match
# --------------------------------------------------------------------------


def _views():
    base = torch.randn(B, T, I)
    wide = torch.randn(T, B, 2 * I)
    return {
        "view-transposed": lambda: (base.transpose(0, 1),),
        "view-strided-slice": lambda: (wide[..., ::2],),
        "view-expanded-batch": lambda: (torch.randn(T, 1, I).expand(T, B, I),),
        "view-zero-stride-all": lambda: (torch.randn(1, 1, 1).expand(T, B, I),),
        "view-negative-step-flip": lambda: (torch.randn(T, B, I).flip(0),),
        "view-storage-offset": lambda: (torch.randn(T + 2, B, I)[2:],),
        "view-channels-permuted": lambda: (torch.randn(I, T, B).permute(1, 2, 0),),
        "view-hx-transposed": lambda: (x3(), (torch.randn(B, 1, H).transpose(0, 1), torch.randn(H, B, 1).permute(2, 1, 0))),
        "view-hx-expanded": lambda: (x3(), (torch.randn(1, 1, H).expand(1, B, H), torch.randn(1, 1, 1).expand(1, B, H))),
        "zero-size-B": lambda: (x3(T, 0, I),),
        "zero-size-B-with-hx": lambda: (x3(T, 0, I), (zeros_h(1, 0, H), zeros_h(1, 0, H))),
        "T1": lambda: (x3(1, B, I),),
        "B1": lambda: (x3(T, 1, I),),
        "unbatched": lambda: (torch.randn(T, I),),
        "unbatched-hx": lambda: (torch.randn(T, I), (torch.randn(1, H), torch.randn(1, H))),
        "nonfinite-nan-input": lambda: (torch.where(torch.rand(T, B, I) < 0.2, float("nan"), x3()),),
        "nonfinite-inf-input": lambda: (torch.where(torch.rand(T, B, I) < 0.2, float("inf"), x3()),),
        "nonfinite-neg-inf-input": lambda: (torch.full((T, B, I), -float("inf")),),
        "nonfinite-nan-h0": lambda: (x3(), (torch.full((1, B, H), float("nan")), zeros_h())),
        "nonfinite-inf-c0": lambda: (x3(), (zeros_h(), torch.full((1, B, H), float("inf")))),
        "nonfinite-huge-finite": lambda: (x3() * 1e30,),
    }


VIEW_CASES = _views()
MODULE_CFGS = {"uni": dict(), "bi-2layer-batchfirst": dict(num_layers=2, bidirectional=True, batch_first=True),
               "proj": dict(proj_size=3)}


def _adapt(args, cfg):
    """Reshape a (T, B, ·)-style case to the module's hx layout / batch_first."""
    x = args[0]
    if cfg.get("batch_first") and x.dim() == 3:
        x = x.transpose(0, 1)
    if len(args) == 1:
        return (x,)
    h0, c0 = args[1]
    n = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
    P = cfg.get("proj_size", 0) or H
    rep = lambda t: t.expand(n, *t.shape[1:]) if t.shape[0] == 1 and t.dim() == 3 else (  # noqa: E731
        t.expand(n, t.shape[-1]) if t.dim() == 2 else t)
    return (x, (rep(h0)[..., :P], rep(c0)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", MODULE_CFGS.values(), ids=MODULE_CFGS.keys())
@pytest.mark.parametrize("case", VIEW_CASES.values(), ids=VIEW_CASES.keys())
def test_lstm_accepts_like_torch(case, cfg, backend):
    ref, fast = _pair(backend, **cfg)
    args = _adapt(case(), cfg)
    if args[0].dim() == 2 and cfg.get("batch_first"):
        pass  # unbatched input ignores batch_first in torch too
    expected = ref(*args)
    actual = fast(*args)
    out_r, (h_r, c_r) = expected
    out_f, (h_f, c_f) = actual
    for a, e in ((out_f, out_r), (h_f, h_r), (c_f, c_r)):
        assert a.shape == e.shape
        # Non-finite values propagate exactly where torch's do.
        assert torch.equal(torch.isnan(a), torch.isnan(e))
        assert torch.equal(torch.isposinf(a), torch.isposinf(e))
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5, equal_nan=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lstm_backward_through_views(backend):
    ref, fast = _pair(backend, bidirectional=True)
    base = torch.randn(I, T, B, dtype=torch.float32)
    x_r = base.clone().requires_grad_()
    x_f = base.clone().requires_grad_()
    h0 = torch.randn(1, 1, H).expand(2, B, H)
    out_r, _ = ref(x_r.permute(1, 2, 0), (h0, h0))
    out_f, _ = fast(x_f.permute(1, 2, 0), (h0, h0))
    grad = torch.randn(B, T, 2 * H).transpose(0, 1)  # non-contiguous incoming gradient
    out_r.backward(grad)
    out_f.backward(grad)
    assert_parity(x_f.grad, x_r.grad, name="dx")
    for (name, p_f), p_r in zip(fast.named_parameters(), ref.parameters()):
        assert_parity(p_f.grad, p_r.grad, name=name)


# --------------------------------------------------------------------------
# PackedSequence
# --------------------------------------------------------------------------

PACKED = {
    "packed-sorted": ([5, 3, 2], True),
    "packed-unsorted": ([2, 5, 3], False),
    "packed-all-equal": ([4, 4, 4], True),
    "packed-single": ([5], True),
    "packed-length-one": ([1, 1, 1], False),
    "packed-many-ties": ([3, 5, 3, 1, 5], False),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("case", PACKED.values(), ids=PACKED.keys())
def test_packed_lengths_like_torch(case, bidirectional, backend):
    lengths, enforce_sorted = case
    ref, fast = _pair(backend, bidirectional=bidirectional)
    x = torch.randn(max(lengths), len(lengths), I)
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=enforce_sorted)
    out_r, (h_r, c_r) = ref(packed)
    out_f, (h_f, c_f) = fast(packed)
    assert torch.equal(out_f.batch_sizes, out_r.batch_sizes)
    for a, e in ((out_f.data, out_r.data), (h_f, h_r), (c_f, c_r)):
        assert_parity(a, e)


@pytest.mark.parametrize("lengths", [[5, 0, 2], [-1, 2, 2]], ids=["zero", "negative"])
def test_packed_bad_lengths_rejected_like_torch(lengths):
    # pack_padded_sequence itself validates: both modules never see these.
    with pytest.raises(RuntimeError):
        pack_padded_sequence(torch.randn(5, 3, I), torch.tensor(lengths), enforce_sorted=False)


def test_packed_length_beyond_padding_like_torch():
    # torch packs a length > T without complaint (the PackedSequence then has
    # 6 steps); the module must treat that PackedSequence exactly as torch does.
    # Its batch_sizes sum to 10 but it holds 9 rows: torch fails deep inside
    # with RuntimeError; fastlstm raises RuntimeError naming the inconsistency.
    ref, fast = _pair()
    packed = pack_padded_sequence(torch.randn(5, 3, I), torch.tensor([6, 2, 2]), enforce_sorted=False)
    with pytest.raises(RuntimeError):
        ref(packed)
    with pytest.raises(RuntimeError, match="batch_sizes"):
        fast(packed)


def test_packed_hx_mismatch():
    ref, fast = _pair()
    packed = pack_padded_sequence(torch.randn(5, 3, I), torch.tensor([5, 3, 2]))
    bad = (torch.zeros(1, 2, H), torch.zeros(1, 2, H))
    _same_outcome(lambda: ref(packed, bad), lambda: fast(packed, bad), match="hidden")


def test_packed_dtype_mismatch():
    # torch skips its dtype check for packed input and fails in a GEMM
    # (RuntimeError); fastlstm gives the ValueError torch gives for padded input.
    ref, fast = _pair()
    packed = pack_padded_sequence(torch.randn(5, 3, I, dtype=torch.float64), torch.tensor([5, 3, 2]))
    with pytest.raises(RuntimeError):
        ref(packed)
    with pytest.raises(ValueError, match="dtype"):
        fast(packed)


# --------------------------------------------------------------------------
# fastlstm.LSTMCell
# --------------------------------------------------------------------------

CELL_CASES = {
    "dtype-int64": lambda: (torch.randn(B, I).long(),),
    "dtype-complex64": lambda: (torch.randn(B, I).to(torch.complex64),),
    "dtype-float64": lambda: (torch.randn(B, I).double(),),
    "hx-int64": lambda: (torch.randn(B, I), (torch.zeros(B, H, dtype=torch.long), torch.zeros(B, H))),
    "shape-3d": lambda: (torch.randn(T, B, I),),
    "shape-wrong-input-size": lambda: (torch.randn(B, I + 1),),
    "hx-3d": lambda: (torch.randn(B, I), (torch.zeros(1, B, H), torch.zeros(1, B, H))),
    "hx-wrong-batch": lambda: (torch.randn(B, I), (torch.zeros(B + 1, H), torch.zeros(B + 1, H))),
    "hx-wrong-hidden": lambda: (torch.randn(B, I), (torch.zeros(B, H + 1), torch.zeros(B, H))),
    "hx-2d-for-unbatched": lambda: (torch.randn(I), (torch.zeros(B, H), torch.zeros(B, H))),
    "hx-not-tuple": lambda: (torch.randn(B, I), torch.zeros(B, H)),
    "device-meta-input": lambda: (torch.randn(B, I, device="meta"),),
    "device-meta-h0": lambda: (torch.randn(B, I), (torch.zeros(B, H, device="meta"), torch.zeros(B, H))),
    "zero-size-B": lambda: (torch.randn(0, I),),
    "unbatched": lambda: (torch.randn(I),),
    "view-transposed": lambda: (torch.randn(I, B).t(), (torch.randn(H, B).t(), torch.randn(H, B).t())),
    "view-expanded": lambda: (torch.randn(1, I).expand(B, I), (torch.randn(1, H).expand(B, H),) * 2),
    "nonfinite-nan": lambda: (torch.full((B, I), float("nan")),),
    "nonfinite-inf-c0": lambda: (torch.randn(B, I), (torch.zeros(B, H), torch.full((B, H), float("inf")))),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CELL_CASES.values(), ids=CELL_CASES.keys())
def test_cell_like_torch(case, backend):
    ref, fast = _cell_pair(backend)
    args = case()
    _same_outcome(lambda: ref(*args), lambda: fast(*args))


# --------------------------------------------------------------------------
# ops.lstm and ops.lstm_recurrence (no torch twin: checked messages)
# --------------------------------------------------------------------------


def _weights(**cfg):
    return list(torch.nn.LSTM(I, H, **cfg)._flat_weights)


OPS_LSTM_BAD = {
    "lengths-int32": (dict(lengths=torch.tensor([5, 3, 2], dtype=torch.int32)), TypeError, "lengths"),
    "lengths-float": (dict(lengths=torch.tensor([5.0, 3, 2])), TypeError, "lengths"),
    "lengths-meta": (dict(lengths=torch.tensor([5, 3, 2], device="meta")), TypeError, "lengths"),
    "lengths-too-long": (dict(lengths=torch.tensor([6, 3, 2])), ValueError, "lengths"),
    "lengths-negative": (dict(lengths=torch.tensor([5, -1, 2])), ValueError, "lengths"),
    "lengths-int64-max": (dict(lengths=torch.tensor([2**63 - 1, 1, 1])), ValueError, "lengths"),
    "lengths-wrong-count": (dict(lengths=torch.tensor([5, 3])), ValueError, "lengths"),
    "lengths-2d": (dict(lengths=torch.tensor([[5, 3, 2]])), ValueError, "lengths"),
    "weights-missing": (dict(weights=_weights()[:3]), ValueError, "weights"),
    "weights-too-many-layers": (dict(num_layers=2), ValueError, "weights"),
    "weights-float64": (dict(weights=[w.double() for w in _weights()]), ValueError, "dtype"),
    "weights-meta": (dict(weights=[w.to("meta") for w in _weights()]), RuntimeError, "weight"),
    "weights-w_hh-wrong-shape": (dict(weights=[_weights()[0], torch.randn(4 * H, H - 1), *_weights()[2:]]),
                                 ValueError, "w_hh"),
    "x-2d": (dict(x=torch.randn(B, I)), ValueError, "x"),
    "x-int": (dict(x=torch.randn(T, B, I).long()), ValueError, "dtype"),
    "x-complex": (dict(x=torch.randn(T, B, I).to(torch.complex64)), ValueError, "dtype"),
    "hx-wrong-batch": (dict(hx=(torch.zeros(1, 2, H), torch.zeros(1, 2, H))), ValueError, "h0"),
    "hx-wrong-hidden": (dict(hx=(torch.zeros(1, B, H + 1), torch.zeros(1, B, H))), ValueError, "h0"),
    "hx-not-pair": (dict(hx=torch.zeros(1, B, H)), TypeError, "hx"),
    "backend-unknown": (dict(backend="fast"), ValueError, "backend"),
}


@pytest.mark.parametrize("case", OPS_LSTM_BAD.values(), ids=OPS_LSTM_BAD.keys())
def test_ops_lstm_rejects(case):
    override, exc, match = case
    args = dict(x=torch.randn(T, B, I), hx=None, weights=_weights(), num_layers=1)
    args.update(override)
    with pytest.raises(exc, match=match):
        ops.lstm(args.pop("x"), args.pop("hx"), args.pop("weights"), **args)


OPS_LENGTHS_OK = {
    "sorted": [5, 3, 2], "unsorted": [2, 5, 3], "with-zero": [0, 5, 1], "all-zero": [0, 0, 0], "full": [5, 5, 5],
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths", OPS_LENGTHS_OK.values(), ids=OPS_LENGTHS_OK.keys())
def test_ops_lstm_lengths_accepted(lengths, backend):
    weights = _weights(bidirectional=True, num_layers=2)
    x = torch.randn(T, B, I, dtype=torch.float64)
    weights = [w.double() for w in weights]
    lengths = torch.tensor(lengths)
    got = ops.lstm(x, None, weights, num_layers=2, bidirectional=True, lengths=lengths, backend=backend)
    want = fastlstm.reference.lstm(x, None, weights, num_layers=2, bidirectional=True, lengths=lengths)
    for a, e in zip(got, want):
        assert_parity(a, e)


def _rec_args(D=1, P=H, dtype=torch.float32):
    return dict(gx=torch.randn(T, B, D, 4 * H, dtype=dtype), w_hh=torch.randn(D, 4 * H, P, dtype=dtype),
                w_hr=None if P == H else torch.randn(D, P, H, dtype=dtype),
                h0=torch.zeros(D, B, P, dtype=dtype), c0=torch.zeros(D, B, H, dtype=dtype), lengths=None)


REC_BAD = {
    "gx-3d": (dict(gx=torch.randn(T, B, 4 * H)), ValueError, "gx"),
    "gx-not-4h": (dict(gx=torch.randn(T, B, 1, 4 * H - 1)), ValueError, "gx"),
    "gx-zero-hidden": (dict(gx=torch.randn(T, B, 1, 0)), ValueError, "gx"),
    "gx-int": (dict(gx=torch.randn(T, B, 1, 4 * H).long()), TypeError, "dtype"),
    "gx-complex": (dict(gx=torch.randn(T, B, 1, 4 * H).to(torch.complex64)), TypeError, "dtype"),
    "w_hh-float64": (dict(w_hh=torch.randn(1, 4 * H, H, dtype=torch.float64)), TypeError, "w_hh"),
    "w_hh-meta": (dict(w_hh=torch.randn(1, 4 * H, H, device="meta")), RuntimeError, "w_hh"),
    "w_hh-wrong-gates": (dict(w_hh=torch.randn(1, 4 * H - 4, H)), ValueError, "w_hh"),
    "w_hh-proj-without-w_hr": (dict(w_hh=torch.randn(1, 4 * H, H - 1)), ValueError, "w_hr"),
    "w_hh-wrong-directions": (dict(w_hh=torch.randn(2, 4 * H, H)), ValueError, "w_hh"),
    "w_hr-wrong-shape": (dict(w_hr=torch.randn(1, H, H - 1)), ValueError, "w_hr"),
    "h0-wrong-batch": (dict(h0=torch.zeros(1, B + 1, H)), ValueError, "h0"),
    "c0-wrong-hidden": (dict(c0=torch.zeros(1, B, H + 1)), ValueError, "c0"),
    "c0-float64": (dict(c0=torch.zeros(1, B, H, dtype=torch.float64)), TypeError, "c0"),
    "h0-meta": (dict(h0=torch.zeros(1, B, H, device="meta")), RuntimeError, "h0"),
    "lengths-too-long": (dict(lengths=torch.tensor([T + 1, 1, 1])), ValueError, "lengths"),
    "lengths-negative": (dict(lengths=torch.tensor([-1, 1, 1])), ValueError, "lengths"),
    "lengths-wrong-count": (dict(lengths=torch.tensor([1, 1])), ValueError, "lengths"),
    "lengths-int32": (dict(lengths=torch.tensor([1, 1, 1], dtype=torch.int32)), TypeError, "lengths"),
    "directions-3": (dict(gx=torch.randn(T, B, 3, 4 * H), w_hh=torch.randn(3, 4 * H, H),
                          h0=torch.zeros(3, B, H), c0=torch.zeros(3, B, H)), ValueError, "directions"),
}


@pytest.mark.parametrize("case", REC_BAD.values(), ids=REC_BAD.keys())
def test_lstm_recurrence_rejects(case):
    if not _ext.available():
        pytest.skip(f"fastlstm._C unavailable: {_ext.load_error}")
    override, exc, match = case
    args = _rec_args()
    args.update(override)
    with pytest.raises(exc, match=match):
        ops.lstm_recurrence(*args.values(), False)


REC_OK = {
    "gx-transposed": dict(gx=torch.randn(B, T, 1, 4 * H).transpose(0, 1)),
    "gx-expanded": dict(gx=torch.randn(1, 1, 1, 4 * H).expand(T, B, 1, 4 * H)),
    "w_hh-transposed": dict(w_hh=torch.randn(1, H, 4 * H).transpose(1, 2)),
    "h0-expanded": dict(h0=torch.randn(1, 1, H).expand(1, B, H), c0=torch.randn(1, 1, 1).expand(1, B, H)),
    "zero-T": dict(gx=torch.randn(0, B, 1, 4 * H)),
    "zero-B": dict(gx=torch.randn(T, 0, 1, 4 * H), h0=torch.zeros(1, 0, H), c0=torch.zeros(1, 0, H)),
    "zero-lengths": dict(lengths=torch.zeros(B, dtype=torch.int64)),
    "nonfinite": dict(gx=torch.where(torch.rand(T, B, 1, 4 * H) < 0.1, float("nan"), torch.randn(T, B, 1, 4 * H))),
}


@pytest.mark.parametrize("case", REC_OK.values(), ids=REC_OK.keys())
def test_lstm_recurrence_accepts(case):
    if not _ext.available():
        pytest.skip(f"fastlstm._C unavailable: {_ext.load_error}")
    args = _rec_args()
    args.update(case)
    got = ops.lstm_recurrence(*args.values(), True)
    want = fastlstm.reference.lstm_recurrence(*args.values())
    for a, e in zip(got, want):
        assert a.shape == e.shape
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5, equal_nan=True)


# --------------------------------------------------------------------------
# The _C binding directly: huge sizes with tiny buffers never touch memory
# --------------------------------------------------------------------------

HUGE_DIMS = {
    "T-2^31": (2**31, 1, 1, 4, 4),
    "B-2^31": (1, 2**31, 1, 4, 4),
    "H-2^30": (1, 1, 1, 2**30, 2**30),
    "TBG-over-2^32": (2**16, 2**16, 1, 4, 4),
    "overflow-int64": (2**40, 2**40, 1, 4, 4),
    "int64-max-T": (2**63 - 1, 1, 1, 4, 4),
    "negative-T": (-1, 1, 1, 4, 4),
    "negative-B": (1, -5, 1, 4, 4),
    "negative-H": (1, 1, 1, -4, 4),
    "proj-over-hidden": (1, 1, 1, 4, 5),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("dims", HUGE_DIMS.values(), ids=HUGE_DIMS.keys())
def test_binding_huge_dims_with_tiny_buffers_raise(dims, dtype):
    if not _ext.available():
        pytest.skip(f"fastlstm._C unavailable: {_ext.load_error}")
    tiny = torch.zeros(16, dtype=getattr(torch, dtype))
    b = _ext.buf(tiny)
    Tn, Bn, Dn, Hn, Pn = dims
    with pytest.raises(ValueError):
        _ext._C.lstm_recurrence_fwd(dtype, b, b, (0, 0), b, b, (0, 0), b, b, b, (0, 0), (0, 0), Tn, Bn, Dn, Hn, Pn, 1)
    with pytest.raises(ValueError):
        _ext._C.lstm_recurrence_bwd(dtype, b, b, b, b, (0, 0), b, b, b, (0, 0), b, b, b, (0, 0), Tn, Bn, Dn, Hn, Pn, 1)


def test_binding_bad_dtype_and_lies_about_numel():
    if not _ext.available():
        pytest.skip(f"fastlstm._C unavailable: {_ext.load_error}")
    tiny = torch.zeros(16)
    b = _ext.buf(tiny)
    with pytest.raises(TypeError, match="dtype"):
        _ext._C.lstm_recurrence_fwd("complex64", b, b, (0, 0), b, b, (0, 0), b, b, b, (0, 0), (0, 0), 1, 1, 1, 1, 1, 1)
    with pytest.raises(TypeError):  # pybind11 rejects a negative address before any check
        _ext._C.lstm_recurrence_fwd("float32", (-1, 16), b, (0, 0), b, b, (0, 0), b, b, b, (0, 0), (0, 0), 1, 1, 1, 1, 1, 1)
    # Claims more elements than the shapes need: refused (the sizes must agree exactly).
    with pytest.raises(ValueError, match="elements"):
        _ext._C.lstm_recurrence_fwd("float32", (b[0], 2**62, 4, tiny), b, (0, 0), b, b, (0, 0), b, b, b, (0, 0), (0, 0),
                                    1, 1, 1, 1, 1, 1)


# --------------------------------------------------------------------------
# T = 100000 in bounded memory (a subprocess, so the RSS measurement is clean)
# --------------------------------------------------------------------------

_LONG_SEQ = textwrap.dedent(
    """
    import resource, sys, torch, fastlstm
    T, H, I = int(sys.argv[1]), 8, 4
    torch.set_num_threads(1)
    m = fastlstm.LSTM(I, H, backend=sys.argv[2])
    with torch.inference_mode():
        m(torch.randn(10, 1, I))  # warm-up: libraries and allocator pools
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        x = torch.randn(T, 1, I)
        out, (h, c) = m(x)
        assert out.shape == (T, 1, H) and torch.isfinite(out).all()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) * 1024)
    """
)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "reference"])
def test_long_sequence_bounded_memory(backend):
    if backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("T = 100000 steps in Triton's interpreter take far longer than the test's time limit")
    T_long, H_, I_ = 100_000, 8, 4
    env = dict(os.environ, PYTHONPATH=str(__import__("pathlib").Path(fastlstm.__file__).resolve().parent.parent))
    run = subprocess.run([sys.executable, "-c", _LONG_SEQ, str(T_long), backend], capture_output=True, text=True,
                         env=env, cwd="/", timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    growth = int(run.stdout.split()[-1])
    # Tensors an inference pass must hold: x, gx (4H), y (H), one float each per step.
    needed = T_long * (I_ + 4 * H_ + H_) * 4
    assert growth <= 3 * needed + 8 * 2**20, f"peak RSS grew {growth / 2**20:.1f} MiB; tensors need {needed / 2**20:.1f} MiB"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0  # sanity: the unit is KiB on Linux
