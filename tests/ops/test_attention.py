"""fastlstm::sparse_attention and fastlstm.ops.sparse_attention against the dense reference."""

import pytest
import torch

import fastlstm
from fastlstm import _ext, reference
from fastlstm.ops import sparse_attention
from fastlstm.testing import assert_parity, within_error_rule

needs_cpu = pytest.mark.skipif("cpu" not in fastlstm.available_backends("cpu"), reason="fastlstm._C not built")

# name: (B, H, Tq, Tk, D, Dv, window, global_tokens, padded)
CASES = {
    "causal": (2, 3, 37, 37, 8, 8, (5, 0), 0, False),
    "symmetric": (2, 2, 50, 50, 16, 16, (3, 3), 0, False),
    "asymmetric": (1, 2, 41, 41, 5, 7, (6, 1), 0, True),
    "global": (2, 2, 45, 45, 8, 8, (2, 2), 3, True),
    "global-causal": (1, 2, 30, 30, 32, 32, (4, 0), 5, False),
    "dense": (2, 2, 21, 21, 8, 12, None, 0, True),
    "window-wider-than-T": (1, 2, 13, 13, 4, 4, (100, 100), 0, False),
    "zero-window": (2, 1, 9, 9, 3, 3, (0, 0), 0, True),
    "T1": (2, 2, 1, 1, 4, 4, (3, 3), 0, False),
    "cross-lengths": (1, 2, 19, 23, 6, 6, (2, 5), 1, True),
    "T-not-tile-multiple": (1, 1, 67, 67, 33, 17, (16, 15), 2, False),
    # Few slices and T > 64: the CPU kernel cuts queries into chunks and sums
    # the chunks' dK/dV (global keys and window overlap chunks; a global row).
    "chunked": (1, 2, 200, 200, 8, 8, (20, 5), 3, True),
    "chunked-cross-lengths": (1, 1, 150, 131, 4, 6, (10, 30), 2, True),
    "chunked-dense": (1, 1, 130, 140, 4, 4, None, 0, False),
    # B*H >= 8: whole slices per task.
    "many-slices": (4, 2, 100, 100, 8, 8, (7, 7), 1, True),
}


def _inputs(B, H, Tq, Tk, D, Dv, window, G, padded, dtype=torch.float64, requires_grad=True):
    def r(*shape):
        return torch.randn(*shape, dtype=dtype).requires_grad_(requires_grad)

    kpm = None
    if padded:
        kpm = torch.rand(B, Tk) < 0.3
        kpm[0, -min(3, Tk):] = True
    return r(B, H, Tq, D), r(B, H, Tk, D), r(B, H, Tk, Dv), window, G, kpm


def _loss(out):
    return (out * torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape).cos()).sum()


def _check_lse(lse, ref_lse):
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    finite = torch.isfinite(ref_lse)
    assert_parity(lse[finite], ref_lse[finite], name="lse")


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_matches_reference(case, dtype):
    q, k, v, window, G, kpm = _inputs(*case, dtype=dtype)
    out, lse = sparse_attention(q, k, v, window, G, key_padding_mask=kpm, backend="cpu")
    ref, ref_lse = reference.sparse_attention(q, k, v, window, G, key_padding_mask=kpm)
    assert_parity(out, ref, name="out")
    _check_lse(lse, ref_lse)
    grads = torch.autograd.grad(_loss(out), (q, k, v))
    ref_grads = torch.autograd.grad(_loss(ref), (q, k, v))
    for name, a, b in zip("qkv", grads, ref_grads):
        assert_parity(a, b, name=f"d{name}")


@needs_cpu
@pytest.mark.parametrize("case", ["global", "asymmetric", "T-not-tile-multiple"])
def test_fp32_error_rule(case):
    """fp32 kernel error vs an fp64 reference is within 2x the fp32 reference's error."""
    q, k, v, window, G, kpm = _inputs(*CASES[case], dtype=torch.float64)
    ref64 = reference.sparse_attention(q, k, v, window, G, key_padding_mask=kpm)[0]
    g64 = torch.autograd.grad(_loss(ref64), (q, k, v))
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    fused = sparse_attention(q32, k32, v32, window, G, key_padding_mask=kpm, backend="cpu")[0]
    peer = reference.sparse_attention(q32, k32, v32, window, G, key_padding_mask=kpm)[0]
    ok, fe, pe = within_error_rule(fused, peer, ref64)
    assert ok, f"output: fused error {fe:.3g} vs fp32 reference {pe:.3g}"
    gf = torch.autograd.grad(_loss(fused), (q32, k32, v32))
    gp = torch.autograd.grad(_loss(peer), (q32, k32, v32))
    for name, a, b, c in zip("qkv", gf, gp, g64):
        ok, fe, pe = within_error_rule(a, b, c, floor=1e-5)
        assert ok, f"d{name}: fused error {fe:.3g} vs fp32 reference {pe:.3g}"


@needs_cpu
@pytest.mark.parametrize("case", ["causal", "global", "dense", "cross-lengths"])
def test_gradcheck_fp64(case):
    B, H, Tq, Tk, D, Dv, window, G, padded = CASES[case]
    q, k, v, window, G, kpm = _inputs(B, 1, min(Tq, 9), min(Tk, 11), 3, 2, window, G, padded)

    def fn(q, k, v):
        return sparse_attention(q, k, v, window, G, key_padding_mask=kpm, backend="cpu")[0]

    assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-7)


@needs_cpu
@pytest.mark.filterwarnings("ignore:Input #:UserWarning")
def test_gradcheck_fp32():
    q, k, v, window, G, kpm = _inputs(1, 1, 7, 7, 3, 2, (2, 1), 1, True, dtype=torch.float32)

    def fn(q, k, v):
        return sparse_attention(q, k, v, window, G, key_padding_mask=kpm, backend="cpu")[0]

    assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-2, atol=5e-3, rtol=1e-2, fast_mode=True)


@needs_cpu
def test_fully_padded_rows_give_zero():
    q, k, v, _, _, _ = _inputs(2, 2, 6, 6, 4, 4, None, 0, False)
    kpm = torch.zeros(2, 6, dtype=torch.bool)
    kpm[1] = True  # batch 1 has no key at all
    out, lse = sparse_attention(q, k, v, (1, 1), key_padding_mask=kpm, backend="cpu")
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert torch.isneginf(lse[1]).all() and torch.isfinite(lse[0]).all()
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    for g in grads:
        assert torch.isfinite(g).all()
        assert torch.equal(g[1], torch.zeros_like(g[1]))
    ref, _ = reference.sparse_attention(q, k, v, (1, 1), key_padding_mask=kpm)
    assert_parity(out, ref)


@needs_cpu
def test_independent_of_thread_count():
    q, k, v, window, G, kpm = _inputs(3, 2, 40, 40, 8, 8, (4, 2), 2, True, dtype=torch.float32)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            out, lse = sparse_attention(q, k, v, window, G, key_padding_mask=kpm, backend="cpu")
            results.append((out, lse, *torch.autograd.grad(out.sum(), (q, k, v))))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@needs_cpu
@pytest.mark.parametrize("level", ["scalar", "avx2", "avx512"])
def test_every_isa_level(level):
    if _ext._C.set_cpu_capability(level) != level:
        _ext._C.set_cpu_capability(_ext._C.detected_cpu_capability())
        pytest.skip(f"this CPU does not support {level}")
    try:
        q, k, v, window, G, kpm = _inputs(*CASES["global"], dtype=torch.float32)
        out, lse = sparse_attention(q, k, v, window, G, key_padding_mask=kpm, backend="cpu")
        ref, ref_lse = reference.sparse_attention(q, k, v, window, G, key_padding_mask=kpm)
        assert_parity(out, ref)
        _check_lse(lse, ref_lse)
        for a, b in zip(torch.autograd.grad(out.sum(), (q, k, v)), torch.autograd.grad(ref.sum(), (q, k, v))):
            assert_parity(a, b)
    finally:
        _ext._C.set_cpu_capability(_ext._C.detected_cpu_capability())


@needs_cpu
@pytest.mark.parametrize("case", ["global", "dense", "cross-lengths"])
def test_opcheck(case):
    q, k, v, window, G, kpm = _inputs(*CASES[case])
    left, right = window if window is not None else (-1, -1)
    scale = q.shape[-1] ** -0.5
    torch.library.opcheck(torch.ops.fastlstm.sparse_attention.default, (q, k, v, left, right, G, scale, kpm))
    out, lse = torch.ops.fastlstm.sparse_attention(q, k, v, left, right, G, scale, kpm)
    dout = torch.randn_like(out)
    args = (q.detach(), k.detach(), v.detach(), out.detach(), lse.detach(), dout, left, right, G, scale, kpm)
    torch.library.opcheck(torch.ops.fastlstm.sparse_attention_backward.default, args)


@needs_cpu
def test_compile_fullgraph():
    q, k, v, window, G, kpm = _inputs(*CASES["global"], dtype=torch.float32)

    def fn(q, k, v, kpm):
        out, lse = sparse_attention(q, k, v, window, G, key_padding_mask=kpm, backend="cpu")
        return out * 2

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    out = compiled(q, k, v, kpm)
    expected = fn(q, k, v, kpm)
    assert_parity(out, expected)
    g = torch.autograd.grad(out.sum(), (q, k, v))
    ge = torch.autograd.grad(expected.sum(), (q, k, v))
    for a, b in zip(g, ge):
        assert_parity(a, b)


def test_reference_backend_is_the_reference():
    q, k, v, window, G, kpm = _inputs(*CASES["global"])
    out, lse = sparse_attention(q, k, v, window, G, key_padding_mask=kpm, backend="reference")
    ref, ref_lse = reference.sparse_attention(q, k, v, window, G, key_padding_mask=kpm)
    assert torch.equal(out, ref) and torch.equal(lse, ref_lse)


def test_reference_mask_pattern():
    allowed = reference.attention_mask(6, 6, (1, 0), global_tokens=1)
    expected = torch.tensor(
        [
            [1, 1, 1, 1, 1, 1],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 0, 1, 1, 0, 0],
            [1, 0, 0, 1, 1, 0],
            [1, 0, 0, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(allowed, expected)


@pytest.mark.parametrize(
    "change, exc, match",
    [
        (lambda a: {**a, "q": a["q"][0]}, ValueError, "q must be 4-D"),
        (lambda a: {**a, "k": a["k"].double()}, TypeError, "share a dtype"),
        (lambda a: {**a, "v": a["v"][:, :, :-1]}, ValueError, "v has"),
        (lambda a: {**a, "k": a["k"][..., :-1]}, ValueError, "head_dim"),
        (lambda a: {**a, "window": (-1, 2)}, ValueError, "window left"),
        (lambda a: {**a, "window": (1.5, 2)}, TypeError, "window left"),
        (lambda a: {**a, "window": "wide"}, TypeError, "window"),
        (lambda a: {**a, "global_tokens": -1}, ValueError, "global_tokens"),
        (lambda a: {**a, "key_padding_mask": torch.zeros(2, 5, dtype=torch.bool)}, ValueError, "key_padding_mask"),
        (lambda a: {**a, "key_padding_mask": torch.zeros(2, 8)}, TypeError, "key_padding_mask"),
        (lambda a: {**a, "backend": "fastest"}, ValueError, "backend"),
    ],
    ids=["q-3d", "dtype-mismatch", "v-length", "head-dim", "negative-window", "float-window", "string-window",
         "negative-global", "mask-shape", "mask-dtype", "unknown-backend"],
)
def test_bad_input_raises(change, exc, match):
    args = dict(q=torch.randn(2, 2, 8, 4), k=torch.randn(2, 2, 8, 4), v=torch.randn(2, 2, 8, 4), window=(2, 2))
    with pytest.raises(exc, match=match):
        sparse_attention(**change(args))


@needs_cpu
def test_binding_checks_sizes():
    q = torch.randn(1, 1, 4, 2)
    out = torch.empty(1, 1, 4, 2)
    lse = torch.empty(1, 1, 4)
    buf = _ext.buf
    with pytest.raises(ValueError, match="k has 8 elements, expected 10"):
        _ext._C.sparse_attention_fwd("float32", buf(q), buf(q), buf(q), (0, 0), buf(out), buf(lse),
                                     1, 1, 4, 5, 2, 2, 1, 1, 0, 1.0, 1)
    with pytest.raises(TypeError, match="dtype"):
        _ext._C.sparse_attention_fwd("float16", buf(q), buf(q), buf(q), (0, 0), buf(out), buf(lse),
                                     1, 1, 4, 4, 2, 2, 1, 1, 0, 1.0, 1)


@needs_cpu
def test_opcheck_noncontiguous_inputs():
    # (B, T, H, D) storage seen as (B, H, T, D), as modules produce it.
    q, k, v = (torch.randn(2, 10, 3, 4, dtype=torch.float64).transpose(1, 2).requires_grad_() for _ in range(3))
    torch.library.opcheck(torch.ops.fastlstm.sparse_attention.default, (q, k, v, 2, 1, 1, 0.5, None))
    out, lse = torch.ops.fastlstm.sparse_attention(q, k, v, 2, 1, 1, 0.5, None)
    args = (q.detach(), k.detach(), v.detach(), out.detach(), lse.detach(), torch.randn_like(out), 2, 1, 1, 0.5, None)
    torch.library.opcheck(torch.ops.fastlstm.sparse_attention_backward.default, args)


@needs_cpu
def test_op_checks_raw_arguments():
    q = torch.randn(1, 1, 4, 2)
    with pytest.raises(TypeError, match="share a dtype"):
        torch.ops.fastlstm.sparse_attention(q, q.double(), q, 1, 1, 0, 1.0, None)
    with pytest.raises(TypeError, match="key_padding_mask"):
        torch.ops.fastlstm.sparse_attention(q, q, q, 1, 1, 0, 1.0, torch.zeros(1, 4, dtype=torch.uint8))
    out, lse = torch.ops.fastlstm.sparse_attention(q, q, q, 1, 1, 0, 1.0, None)
    with pytest.raises(ValueError, match="dout"):
        torch.ops.fastlstm.sparse_attention_backward(q, q, q, out, lse, out[..., :1], 1, 1, 0, 1.0, None)


# fastlstm::sparse_attention_banded: output plus each query's window weights.
BANDED_CASES = ["causal", "symmetric", "asymmetric", "window-wider-than-T", "zero-window", "T1", "chunked",
                "many-slices"]


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("case", BANDED_CASES)
def test_banded_weights_match_dense_reference(case, dtype):
    q, k, v, window, _, kpm = _inputs(*CASES[case], dtype=dtype, requires_grad=False)
    left, right = window
    Tq, Tk = q.shape[2], k.shape[2]
    out, band = torch.ops.fastlstm.sparse_attention_banded(q, k, v, left, right, q.shape[-1] ** -0.5, kpm)
    allowed = reference.attention_mask(Tq, Tk, window, 0, kpm).expand(q.shape[0], q.shape[1], Tq, Tk)
    scores = (q.double() @ k.double().transpose(-1, -2)) * q.shape[-1] ** -0.5
    dense = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1).nan_to_num(0.0)
    keys = torch.arange(Tq).unsqueeze(1) - left + torch.arange(left + right + 1)  # (Tq, span)
    inside = (keys >= 0) & (keys < Tk)
    want = torch.gather(dense, 3, keys.clamp(0, Tk - 1).expand(*dense.shape[:2], -1, -1)) * inside
    torch.testing.assert_close(band.double(), want, atol=1e-6 if dtype == torch.float32 else 1e-12, rtol=0)
    ref_out, _ = reference.sparse_attention(q, k, v, window, 0, None, kpm)
    assert_parity(out, ref_out.to(dtype))


@needs_cpu
def test_banded_opcheck_and_bad_window():
    q, k, v, window, _, kpm = _inputs(*CASES["asymmetric"], requires_grad=False)
    torch.library.opcheck(torch.ops.fastlstm.sparse_attention_banded.default, (q, k, v, *window, 0.3, kpm))
    with pytest.raises(ValueError, match="bounded"):
        torch.ops.fastlstm.sparse_attention_banded(q, k, v, -1, 2, 0.3, None)
    out = torch.empty(*q.shape[:3], v.shape[3], dtype=q.dtype)
    with pytest.raises(ValueError, match="band"):  # the binding checks the band's size too
        _ext._C.sparse_attention_fwd("float64", _ext.buf(q), _ext.buf(k), _ext.buf(v), _ext.buf(None),
                                     _ext.buf(out), _ext.buf(torch.empty(q.shape[:3], dtype=q.dtype)),
                                     *q.shape[:3], k.shape[2], q.shape[3], v.shape[3], 6, 1, 0, 0.3, 1,
                                     band=_ext.buf(torch.empty(3, dtype=q.dtype)))


# (B, H, T, D, window, padded)
STRIDED_CASES = {"symmetric": (2, 2, 50, 16, (3, 3), False), "causal-padded": (1, 4, 97, 8, (20, 0), True),
                 "wide-window": (1, 3, 40, 12, (64, 64), True), "T1": (2, 2, 1, 16, (4, 4), False)}


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("case", STRIDED_CASES.values(), ids=STRIDED_CASES.keys())
def test_banded_reads_strided_views_in_place(case, dtype):
    """q, k, v as views of one packed (B, T, 3, H, D) projection (the productivity
    model's layout) give the same bits as dense copies; the output is laid out
    (B, T, H, D) in memory."""
    B, H, T, D, window, padded = case
    torch.manual_seed(7)
    packed = torch.randn(B, T, 3, H, D, dtype=dtype).permute(2, 0, 3, 1, 4)
    q, k, v = packed[0], packed[1], packed[2]
    kpm = torch.rand(B, T) < 0.2 if padded else None
    out, band = torch.ops.fastlstm.sparse_attention_banded(q, k, v, *window, 0.3, kpm)
    dense_out, dense_band = torch.ops.fastlstm.sparse_attention_banded(
        q.contiguous(), k.contiguous(), v.contiguous(), *window, 0.3, kpm)
    assert torch.equal(out, dense_out) and torch.equal(band, dense_band)
    assert out.transpose(1, 2).is_contiguous()
    ref_out, _ = reference.sparse_attention(q, k, v, window, 0, 0.3, kpm)
    assert_parity(out, ref_out)


@needs_cpu
def test_forward_strides_checked_by_binding():
    B, H, T, D = 1, 2, 6, 4
    x = torch.randn(B, T, 3, H, D)  # q, k, v of every head interleaved, as a packed projection writes them
    row = (T * 3 * H * D, D, 3 * H * D)  # (batch, head, row) strides of q in x
    extent = (H - 1) * D + (T - 1) * 3 * H * D + D
    view = (x.data_ptr(), extent, 4, x)
    out, lse = torch.empty(B, T, H, D), torch.empty(B, H, T)
    out_rows = (T * H * D, D, H * D)

    def call(q=view, out_buf=_ext.buf(out), **strides):
        kwargs = dict(q_strides=row, k_strides=row, v_strides=row, out_strides=out_rows)
        kwargs.update(strides)
        _ext._C.sparse_attention_fwd("float32", q, view, view, (0, 0), out_buf, _ext.buf(lse),
                                     B, H, T, T, D, D, 1, 1, 0, 0.5, 1, **kwargs)

    call()
    with pytest.raises(ValueError, match="q has"):
        call(q=(x.data_ptr(), extent + 1, 4, x))
    with pytest.raises(ValueError, match="k has"):  # k given as dense: the buffer spans 3x its elements
        call(k_strides=(0, 0, 0))
    with pytest.raises(ValueError, match="overlap"):  # two heads written to one place
        call(out_buf=(out.data_ptr(), (T - 1) * H * D + D, 4, out), out_strides=(T * H * D, 0, H * D))
    with pytest.raises(ValueError, match=">= 0"):
        call(q_strides=(0, -1, 4))


# fastlstm::sparse_attention_dropout: training with attention dropout in the kernel.
DROPOUT_CASES = {"window-padded": (2, 3, 50, 8, (5, 3), 0, True, 0.3), "dense": (1, 2, 33, 16, None, 0, False, 0.1),
                 "global": (1, 2, 40, 8, (4, 4), 3, True, 0.5), "chunked": (1, 1, 300, 8, (70, 70), 0, False, 0.2)}


@needs_cpu
@pytest.mark.parametrize("case", DROPOUT_CASES.values(), ids=DROPOUT_CASES.keys())
def test_dropout_matches_reference_with_the_kernels_mask(case):
    """Output and every gradient equal the dense reference computed with the
    kernel's own keep mask (fp64); the mask keeps about 1 - p of the weights."""
    from fastlstm.ops.attention import dropout_mask

    B, H, T, D, window, G, padded, p = case
    torch.manual_seed(1)
    q, k, v = (torch.randn(B, H, T, D, dtype=torch.float64, requires_grad=True) for _ in range(3))
    kpm = torch.rand(B, T) < 0.2 if padded else None
    left, right = window if window is not None else (-1, -1)
    seed = 987654321
    out, lse = torch.ops.fastlstm.sparse_attention_dropout(q, k, v, left, right, G, 0.3, kpm, p, seed)
    keep = dropout_mask(p, seed, B, H, T, T)
    assert abs(keep.double().mean().item() - (1 - p)) < 0.03
    allowed = reference.attention_mask(T, T, window, G, kpm)
    weights = torch.softmax((q @ k.transpose(-1, -2) * 0.3).masked_fill(~allowed, float("-inf")), -1).nan_to_num(0.0)
    want = (weights * keep / (1 - p)) @ v
    torch.testing.assert_close(out, want, atol=1e-12, rtol=0)
    g = torch.randn_like(out)
    for name, a, b in zip("qkv", torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(want, (q, k, v), g)):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=0, msg=f"d{name}")


@needs_cpu
def test_dropout_output_laid_out_for_the_out_projection_and_backward_reads_it_in_place():
    B, H, T, D = 2, 3, 40, 8
    torch.manual_seed(2)
    q, k, v = (torch.randn(B, H, T, D) for _ in range(3))
    out, lse = torch.ops.fastlstm.sparse_attention_dropout(q, k, v, 5, 5, 0, 0.3, None, 0.2, 77)
    assert out.shape == (B, H, T, D) and out.transpose(1, 2).is_contiguous()  # (B, T, H, D) memory
    dout = torch.randn(B, T, H, D).transpose(1, 2)  # the gradient an out-projection hands back
    args = (q, k, v, 5, 5, 0, 0.3, None, 0.2, 77)
    strided = torch.ops.fastlstm.sparse_attention_dropout_backward(q, k, v, out, lse, dout, *args[3:])
    dense = torch.ops.fastlstm.sparse_attention_dropout_backward(
        q, k, v, out.contiguous(), lse, dout.contiguous(), *args[3:])
    assert all(torch.equal(a, b) for a, b in zip(strided, dense))
    # The binding checks the strided reads' spans and signs.
    d = [torch.empty(B, H, T, D) for _ in range(3)]
    rows = (T * H * D, D, H * D)

    def call(dout_buf=_ext.strided_buf(dout), **strides):
        _ext._C.sparse_attention_bwd("float32", _ext.buf(q), _ext.buf(k), _ext.buf(v), _ext.strided_buf(out), _ext.buf(lse),
                                     dout_buf, (0, 0), *map(_ext.buf, d), B, H, T, T, D, D, 5, 5, 0, 0.3, 1,
                                     **strides)

    call(out_strides=rows, dout_strides=rows)
    with pytest.raises(ValueError, match="dout has"):
        call(dout_buf=(dout.data_ptr(), dout.numel() - 1, 4, dout), out_strides=rows, dout_strides=rows)
    with pytest.raises(ValueError, match=">= 0"):
        call(out_strides=(0, -1, 4), dout_strides=rows)


@needs_cpu
def test_dropout_mask_independent_of_threads_and_checked():
    q = k = v = torch.randn(2, 2, 200, 16)
    runs = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            runs.append(torch.ops.fastlstm.sparse_attention_dropout(q, k, v, 40, 40, 0, 0.25, None, 0.2, 7)[0])
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(runs[0], r) for r in runs[1:])
    with pytest.raises(ValueError, match="dropout_p"):
        torch.ops.fastlstm.sparse_attention_dropout(q, k, v, 4, 4, 0, 0.25, None, 1.0, 7)
    with pytest.raises(ValueError, match="dropout_p"):
        sparse_attention(q, k, v, (4, 4), dropout_p=-0.1)
    torch.library.opcheck(torch.ops.fastlstm.sparse_attention_dropout.default,
                          (q[:1, :1, :20].double().requires_grad_(), k[:1, :1, :20].double(), v[:1, :1, :20].double(),
                           3, 3, 0, 0.25, None, 0.3, 11))
