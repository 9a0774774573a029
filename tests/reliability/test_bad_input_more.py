"""Bad and awkward input for SparseAttention / ops.sparse_attention and
QuantizedLSTM, and huge sizes at their _C bindings (see test_bad_input.py for
the LSTM battery). Same contract: torch's exception type with a clear
message, or torch's result where torch accepts the input; never a crash."""

import pytest
import torch
from torch import nn

import fastlstm
from fastlstm import _ext, ops

E, NH, T, B = 8, 2, 5, 3
needs_c = pytest.mark.skipif(not _ext.available(), reason="fastlstm._C unavailable")


def _mha_pair(backend=None, **cfg):
    ref = nn.MultiheadAttention(E, NH, **cfg).eval()
    fast = fastlstm.SparseAttention(E, NH, **cfg, backend=backend).eval()
    fast.load_state_dict(ref.state_dict(), strict=True)
    return ref, fast


q3 = lambda *s, **k: torch.randn(*(s or (T, B, E)), **k)  # noqa: E731

MHA_REJECTED = {
    "dtype-int64": (lambda: (q3().long(),) * 3, None),
    "dtype-float64": (lambda: (q3().double(),) * 3, None),
    "dtype-complex64": (lambda: (q3().to(torch.complex64),) * 3, None),
    "device-meta-query": (lambda: (q3(device="meta"), q3(), q3()), None),
    "shape-wrong-embed": (lambda: (q3(T, B, E + 1),) * 3, "embed"),
    "shape-4d": (lambda: (torch.randn(T, B, E, 1),) * 3, None),
    "shape-key-value-length-mismatch": (lambda: (q3(), q3(4, B, E), q3()), None),
    "mask-wrong-shape": (lambda: (q3(), q3(), q3(), torch.zeros(B, T - 1, dtype=torch.bool)), "key_padding_mask"),
}


@pytest.mark.parametrize("case", MHA_REJECTED.values(), ids=MHA_REJECTED.keys())
def test_sparse_attention_module_rejects_like_torch(case):
    make, match = case
    ref, fast = _mha_pair()
    args = make()
    with pytest.raises(Exception) as torch_err:
        ref(*args)
    # torch asserts on some shapes (AssertionError); fastlstm raises ValueError there.
    expected = (ValueError,) if isinstance(torch_err.value, AssertionError) else (type(torch_err.value),)
    with pytest.raises(expected, match=match):
        fast(*args)


def test_sparse_attention_float_mask_is_refused():
    # torch accepts float masks (additive); fastlstm wants bool and says so.
    _, fast = _mha_pair()
    with pytest.raises(TypeError, match="key_padding_mask"):
        fast(q3(), q3(), q3(), key_padding_mask=torch.zeros(B, T))


MHA_ACCEPTED = {
    "view-transposed": lambda: (torch.randn(B, T, E).transpose(0, 1),) * 3,
    "view-expanded": lambda: (torch.randn(T, 1, E).expand(T, B, E),) * 3,
    "view-zero-stride": lambda: (torch.randn(1, 1, 1).expand(T, B, E),) * 3,
    "view-strided": lambda: (torch.randn(T, B, 2 * E)[..., ::2],) * 3,
    "kv-longer-than-q": lambda: (q3(), q3(7, B, E), q3(7, B, E)),
    "zero-size-B": lambda: (q3(T, 0, E),) * 3,
    "zero-size-T": lambda: (q3(0, B, E),) * 3,
    "T1": lambda: (q3(1, B, E),) * 3,
    "unbatched": lambda: (torch.randn(T, E),) * 3,
    "mask-partial": lambda: (q3(), q3(), q3(), torch.tensor([[False] * T, [False, False, True, True, True],
                                                             [True] + [False] * (T - 1)])),
    "nonfinite-nan-query": lambda: (torch.where(torch.rand(T, B, E) < 0.2, float("nan"), q3()), q3(), q3()),
    "nonfinite-inf-value": lambda: (q3(), q3(), torch.where(torch.rand(T, B, E) < 0.2, float("inf"), q3())),
}


@pytest.mark.parametrize("backend", fastlstm.available_backends("cpu"))
@pytest.mark.parametrize("case", MHA_ACCEPTED.values(), ids=MHA_ACCEPTED.keys())
def test_sparse_attention_module_accepts_like_torch(case, backend):
    ref, fast = _mha_pair(backend)
    args = case()
    out_r, w_r = ref(*args)
    out_f, w_f = fast(*args)
    for a, e in ((out_f, out_r), (w_f, w_r)):
        assert a.shape == e.shape
        assert torch.equal(torch.isnan(a), torch.isnan(e))
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5, equal_nan=True)


def test_sparse_attention_all_padding_documented_difference():
    # torch gives NaN for a query whose keys are all padding; fastlstm gives
    # out_proj.bias (documented in SparseAttention's docstring).
    ref, fast = _mha_pair()
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[1] = True
    out_r, _ = ref(q3(), q3(), q3(), key_padding_mask=mask)
    out_f, _ = fast(q3(), q3(), q3(), key_padding_mask=mask)
    assert torch.isnan(out_r[:, 1]).all()
    torch.testing.assert_close(out_f[:, 1], fast.out_proj.bias.expand(T, E))


x4 = lambda *s, **k: torch.randn(*(s or (2, 2, 5, 4)), **k)  # noqa: E731
OP_BAD = {
    "q-3d": (dict(q=x4(2, 5, 4)), ValueError, "q"),
    "q-int": (dict(q=x4().long()), TypeError, "q"),
    "q-complex": (dict(q=x4().to(torch.complex64)), TypeError, "q"),
    "k-float64": (dict(k=x4(dtype=torch.float64)), TypeError, "dtype"),
    "k-meta": (dict(k=x4(device="meta")), ValueError, "device"),
    "k-head-dim": (dict(k=x4(2, 2, 5, 3)), ValueError, "head_dim"),
    "v-keys": (dict(v=x4(2, 2, 4, 4)), ValueError, "keys"),
    "kv-batch": (dict(k=x4(1, 2, 5, 4), v=x4(1, 2, 5, 4)), ValueError, "B"),
    "window-negative": (dict(window=-1), ValueError, "window"),
    "window-float": (dict(window=1.5), TypeError, "window"),
    "window-triple": (dict(window=(1, 2, 3)), TypeError, "window"),
    "global-negative": (dict(global_tokens=-1), ValueError, "global_tokens"),
    "global-bool": (dict(global_tokens=True), ValueError, "global_tokens"),
    "scale-nan": (dict(scale=float("nan")), ValueError, "scale"),
    "scale-inf": (dict(scale=float("inf")), ValueError, "scale"),
    "mask-float": (dict(key_padding_mask=torch.zeros(2, 5)), TypeError, "key_padding_mask"),
    "mask-uint8": (dict(key_padding_mask=torch.zeros(2, 5, dtype=torch.uint8)), TypeError, "key_padding_mask"),
    "mask-shape": (dict(key_padding_mask=torch.zeros(2, 4, dtype=torch.bool)), ValueError, "key_padding_mask"),
    "mask-meta": (dict(key_padding_mask=torch.zeros(2, 5, dtype=torch.bool, device="meta")), ValueError, "device"),
}


@pytest.mark.parametrize("backend", fastlstm.available_backends("cpu"))
@pytest.mark.parametrize("case", OP_BAD.values(), ids=OP_BAD.keys())
def test_ops_sparse_attention_rejects(case, backend):
    override, exc, match = case
    if backend == "reference" and "scale" in override:
        pytest.skip("the reference computes with any float scale (NaN/inf propagate like torch)")
    args = dict(q=x4(), k=x4(), v=x4(), window=2, global_tokens=0, scale=None, key_padding_mask=None)
    args.update(override)
    with pytest.raises(exc, match=match):
        ops.sparse_attention(**args, backend=backend)


RAW_BAD = {
    "k-float64": (dict(k=x4(dtype=torch.float64)), TypeError),
    "k-meta": (dict(k=x4(device="meta")), ValueError),
    "mask-float": (dict(mask=torch.zeros(2, 5)), TypeError),
    "mask-int64": (dict(mask=torch.zeros(2, 5, dtype=torch.long)), TypeError),
    "batch-mismatch": (dict(k=x4(1, 2, 5, 4), v=x4(1, 2, 5, 4)), ValueError),
}


@needs_c
@pytest.mark.parametrize("case", RAW_BAD.values(), ids=RAW_BAD.keys())
def test_raw_sparse_attention_op_rejects(case):
    # The registered op (torch.ops.fastlstm.sparse_attention) is public too:
    # it must not hand a float64 or mask buffer with a matching count to the kernel.
    override, exc = case
    args = dict(q=x4(), k=x4(), v=x4(), mask=None)
    args.update(override)
    with pytest.raises(exc):
        torch.ops.fastlstm.sparse_attention(args["q"], args["k"], args["v"], 2, 2, 0, 0.5, args["mask"])


# --------------------------------------------------------------------------
# QuantizedLSTM
# --------------------------------------------------------------------------


def _qlstm(**cfg):
    return fastlstm.quantize_dynamic(nn.Sequential(nn.LSTM(4, 6, **cfg)))[0]


QL_BAD = {
    "dtype-int64": (lambda: (torch.randn(T, B, 4).long(),), TypeError, "floating"),
    "dtype-complex": (lambda: (torch.randn(T, B, 4).to(torch.complex64),), TypeError, "floating"),
    "device-meta": (lambda: (torch.randn(T, B, 4, device="meta"),), RuntimeError, "CPU"),
    "device-meta-hx": (lambda: (torch.randn(T, B, 4), (torch.zeros(1, B, 6, device="meta"), torch.zeros(1, B, 6))),
                       RuntimeError, "device"),
    "shape-input-size": (lambda: (torch.randn(T, B, 5),), RuntimeError, "input"),
    "shape-4d": (lambda: (torch.randn(T, B, 4, 1),), RuntimeError, "3-D"),
    "zero-size-T": (lambda: (torch.randn(0, B, 4),), RuntimeError, "sequence length"),
    "hx-wrong-batch": (lambda: (torch.randn(T, B, 4), (torch.zeros(1, 2, 6), torch.zeros(1, 2, 6))), RuntimeError, "state"),
    "hx-not-pair": (lambda: (torch.randn(T, B, 4), torch.zeros(1, B, 6)), RuntimeError, "hx"),
    "requires-grad": (lambda: (torch.randn(T, B, 4, requires_grad=True),), RuntimeError, "grad"),
}


@needs_c
@pytest.mark.parametrize("case", QL_BAD.values(), ids=QL_BAD.keys())
def test_quantized_lstm_rejects(case):
    make, exc, match = case
    with pytest.raises(exc, match=match):
        _qlstm()(*make())


QL_OK = {
    "view-transposed": lambda: (torch.randn(B, T, 4).transpose(0, 1),),
    "view-expanded": lambda: (torch.randn(T, 1, 4).expand(T, B, 4),),
    "view-strided": lambda: (torch.randn(T, B, 8)[..., ::2],),
    "zero-size-B": lambda: (torch.randn(T, 0, 4),),
    "unbatched": lambda: (torch.randn(T, 4),),
    "hx-expanded": lambda: (torch.randn(T, B, 4), (torch.randn(1, 1, 6).expand(1, B, 6),) * 2),
}


@needs_c
@pytest.mark.parametrize("case", QL_OK.values(), ids=QL_OK.keys())
def test_quantized_lstm_views_match_contiguous(case):
    module = _qlstm()
    args = case()
    contiguous = [args[0].contiguous()] + ([tuple(t.contiguous() for t in args[1])] if len(args) > 1 else [])
    out_v, (h_v, c_v) = module(*args)
    out_c, (h_c, c_c) = module(*contiguous)
    for a, e in ((out_v, out_c), (h_v, h_c), (c_v, c_c)):
        assert torch.equal(a, e)


@needs_c
def test_quantized_lstm_nan_propagates():
    module = _qlstm()
    x = torch.randn(T, B, 4)
    x[2, 1, 0] = float("nan")
    out, _ = module(x)
    assert torch.isnan(out[2:, 1]).all()  # from the NaN step on, sequence 1 is NaN ...
    assert torch.isfinite(out[:, 0]).all() and torch.isfinite(out[:2]).all()  # ... and nothing else


# --------------------------------------------------------------------------
# Huge sizes with tiny buffers at the new bindings
# --------------------------------------------------------------------------

ATTN_HUGE = {
    "B-2^31": (2**31, 1, 4, 4, 4, 4), "Tq-2^31": (1, 1, 2**31, 4, 4, 4), "Tk-2^31": (1, 1, 4, 2**31, 4, 4),
    "product-over-2^32": (2**12, 2**12, 2**12, 4, 4, 4), "overflow-int64": (2**40, 2**40, 2**40, 1, 1, 1),
    "negative": (1, -1, 4, 4, 4, 4),
}


@needs_c
@pytest.mark.parametrize("dims", ATTN_HUGE.values(), ids=ATTN_HUGE.keys())
def test_attention_binding_huge_dims_raise(dims):
    tiny = torch.zeros(64)
    b = _ext.buf(tiny)
    Bn, Hn, Tq, Tk, D, Dv = dims
    with pytest.raises(ValueError):
        _ext._C.sparse_attention_fwd("float32", b, b, b, (0, 0), b, b, Bn, Hn, Tq, Tk, D, Dv, 2, 2, 0, 0.5, 1)
    with pytest.raises(ValueError):
        _ext._C.sparse_attention_bwd("float32", b, b, b, b, b, b, (0, 0), b, b, b, Bn, Hn, Tq, Tk, D, Dv, 2, 2, 0,
                                     0.5, 1)


INT8_HUGE = {
    "T-2^40": (2**40, 1, 1, 4, 4, 4), "B-2^31": (1, 2**31, 1, 4, 4, 4), "input-over-limit": (1, 1, 1, 2**20, 4, 4),
    "hidden-over-limit": (1, 1, 1, 4, 2**31, 4), "negative-T": (-1, 1, 1, 4, 4, 4),
}


@needs_c
@pytest.mark.parametrize("dims", INT8_HUGE.values(), ids=INT8_HUGE.keys())
def test_int8_binding_huge_dims_raise(dims):
    tiny = torch.zeros(64)
    b = _ext.buf(tiny)
    Tn, Bn, Dn, In, Hn, Pn = dims
    with pytest.raises(ValueError):
        _ext._C.int8_lstm_fwd(b, b, b, b, b, b, b, (0, 0), (0, 0), (0, 0), b, b, b, (0, 0), b, b, b,
                              Tn, Bn, Dn, In, Hn, Pn, 1)
    with pytest.raises(ValueError):
        _ext._C.int8_pack_weights(b, b, b, 2**40, 4)
