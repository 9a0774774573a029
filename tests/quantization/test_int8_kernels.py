"""int8 kernels (csrc/cpu/int8_*): SIMD variants bit-exact on int32 accumulators
against the scalar reference, and every binding's size checks."""

import numpy as np
import pytest

from fastlstm._ext import _C, buf

LEVELS = ["scalar", "avx2", "avx512", "avx512_vnni"]
pytestmark = pytest.mark.skipif(_C is None, reason="needs fastlstm._C")


def available_levels():
    top = LEVELS.index(_C.detected_cpu_capability())
    return LEVELS[: top + 1]


@pytest.fixture
def level():
    saved = _C.cpu_capability()
    yield lambda name: _C.set_cpu_capability(name)
    _C.set_cpu_capability(saved)
    _C.int8_set_amx(True)


def amx_available() -> bool:
    """The AMX int8 kernels can run here (AVX-512 VNNI level, CPU and OS allow)."""
    saved = _C.cpu_capability()
    try:
        _C.set_cpu_capability(_C.detected_cpu_capability())
        return _C.int8_set_amx(True)
    finally:
        _C.set_cpu_capability(saved)


def pack(w):
    n, k = w.shape
    packed = np.empty(_C.int8_packed_size(n, k), np.int8)
    rowsum = np.empty(n, np.int32)
    _C.int8_pack_weights(buf(w), buf(packed), buf(rowsum), n, k)
    return packed, rowsum


def matmul_s32(x, packed, rowsum, n, qmax):
    rows, k = x.shape
    acc = np.full((rows, n), -12345, np.int32)
    xs = np.full(rows, np.nan, np.float32)
    _C.int8_matmul_s32(buf(x), buf(packed), buf(rowsum), buf(acc), buf(xs), rows, k, n, qmax)
    return acc, xs


@pytest.mark.parametrize("rows,k,n", [(1, 1, 1), (3, 5, 17), (9, 45, 37), (13, 130, 64), (8, 256, 16), (6, 33, 200), (2, 64, 130),
                          (40, 200, 50), (33, 64, 33), (16, 128, 32)],
                         ids=lambda v: str(v))
@pytest.mark.parametrize("qmax", [63, 127])
def test_accumulators_bit_exact_vs_scalar(level, rows, k, n, qmax):
    rng = np.random.default_rng(rows * 1000 + k)
    w = rng.integers(-127, 128, (n, k)).astype(np.int8)
    x = (rng.standard_normal((rows, k)) * rng.uniform(0.01, 10, (rows, 1))).astype(np.float32)
    x[0, :] = 0.0  # an all-zero row has scale 0 and products 0
    packed, rowsum = pack(w)
    assert np.array_equal(rowsum, w.astype(np.int32).sum(1))
    level("scalar")
    ref_acc, ref_xs = matmul_s32(x, packed, rowsum, n, qmax)
    # The scalar kernel itself against an independent numpy statement of the scheme.
    amax = np.abs(x).max(1, keepdims=True)
    inv = np.where(amax > 0, np.float32(qmax) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    xq = np.clip(np.rint(x * inv), -qmax, qmax).astype(np.int64)
    assert np.array_equal(ref_acc, xq @ w.T.astype(np.int64))
    assert np.array_equal(ref_xs, (amax[:, 0] / np.float32(qmax)).astype(np.float32))
    checked = 0
    for name in available_levels()[1:]:
        level(name)
        for amx in (False, True) if name == "avx512_vnni" else (False,):
            if _C.int8_set_amx(amx) != amx or _C.int8_kernel_info()[1] < qmax:
                continue
            acc, xs = matmul_s32(x, packed, rowsum, n, qmax)
            assert np.array_equal(acc, ref_acc), _C.int8_kernel_info()[0]
            assert np.array_equal(xs, ref_xs), _C.int8_kernel_info()[0]
            checked += 1
    if _C.detected_cpu_capability() == "avx512_vnni":
        # avx2, avx512 (AVX2 kernels), vnni, and amx where the CPU has it
        assert checked == (3 if qmax == 63 else 1) + amx_available()


def test_kernel_choice_follows_level(level):
    amx = amx_available()
    expected = {"scalar": ("scalar", 127), "avx2": ("avx2", 63), "avx512": ("avx2", 63),
                "avx512_vnni": ("amx" if amx else "avx512_vnni", 127)}
    for name in available_levels():
        level(name)
        assert _C.int8_kernel_info() == expected[name]
        assert _C.int8_set_amx(True) == (amx and name == "avx512_vnni")
    if "avx512_vnni" in available_levels():
        level("avx512_vnni")
        assert _C.int8_set_amx(False) is False
        assert _C.int8_kernel_info() == ("avx512_vnni", 127)


def test_avx2_rejects_8bit_activations(level):
    if "avx2" not in available_levels():
        pytest.skip("no AVX2 on this CPU")
    level("avx2")
    x = np.ones((1, 4), np.float32)
    packed, rowsum = pack(np.ones((1, 4), np.int8))
    with pytest.raises(ValueError, match="qmax must be in"):
        matmul_s32(x, packed, rowsum, 1, 127)


def _lstm_args(T=3, B=2, D=1, I=4, H=8):
    G = 4 * H
    a = dict(
        x=np.zeros((T, B, I), np.float32),
        w_ih=np.zeros((D, _C.int8_packed_size(G, I)), np.int8), w_ih_scale=np.zeros((D, G), np.float32),
        w_ih_rowsum=np.zeros((D, G), np.int32),
        w_hh=np.zeros((D, _C.int8_packed_size(G, H)), np.int8), w_hh_scale=np.zeros((D, G), np.float32),
        w_hh_rowsum=np.zeros((D, G), np.int32),
        bias=np.zeros((D, G), np.float32), h0=np.zeros((D, B, H), np.float32), c0=np.zeros((D, B, H), np.float32),
        y=np.zeros((T, B, D, H), np.float32), hn=np.zeros((D, B, H), np.float32), cn=np.zeros((D, B, H), np.float32),
    )
    return a, (T, B, D, I, H, H)


def _call_lstm(a, dims, lengths=None):
    n = (0, 0)
    _C.int8_lstm_fwd(buf(a["x"]), buf(a["w_ih"]), buf(a["w_ih_scale"]), buf(a["w_ih_rowsum"]), buf(a["w_hh"]),
                     buf(a["w_hh_scale"]), buf(a["w_hh_rowsum"]), n, n, n, buf(a["bias"]), buf(a["h0"]),
                     buf(a["c0"]), buf(lengths), buf(a["y"]), buf(a["hn"]), buf(a["cn"]), *dims, 2)


@pytest.mark.parametrize("name", ["x", "w_ih", "w_hh_scale", "w_hh_rowsum", "bias", "h0", "y", "cn"])
def test_lstm_binding_checks_sizes(name):
    a, dims = _lstm_args()
    _call_lstm(a, dims)  # the right sizes run
    a[name] = np.zeros(a[name].size - 1, a[name].dtype)
    with pytest.raises(ValueError, match=name):
        _call_lstm(a, dims)


def test_lstm_binding_checks_lengths_and_dims():
    a, dims = _lstm_args()
    with pytest.raises(ValueError, match="lengths"):
        _call_lstm(a, dims, np.array([1, 4], np.int64))
    with pytest.raises(ValueError, match="directions"):
        _call_lstm(a, (3, 2, 3, 4, 8, 8))
    with pytest.raises(ValueError, match="proj"):
        _call_lstm(a, (3, 2, 1, 4, 8, 4))


def test_pack_checks_sizes():
    w = np.zeros((5, 7), np.int8)
    with pytest.raises(ValueError, match="packed"):
        _C.int8_pack_weights(buf(w), buf(np.zeros(10, np.int8)), buf(np.zeros(5, np.int32)), 5, 7)
    with pytest.raises(ValueError, match="rowsum"):
        _C.int8_pack_weights(buf(w), buf(np.zeros(_C.int8_packed_size(5, 7), np.int8)),
                             buf(np.zeros(4, np.int32)), 5, 7)


@pytest.mark.parametrize("rows,k,n", [(1, 3, 5), (70, 33, 40), (200, 128, 96), (129, 64, 17)], ids=lambda v: str(v))
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_int8_linear_matches_its_parts(rows, k, n, with_bias, threads):
    """The fused linear (quantise, int32 products, dequantise, bias, rows over
    threads) against the products of int8_matmul_s32 dequantised in numpy."""
    rng = np.random.default_rng(rows + k + n)
    w = rng.integers(-127, 128, (n, k)).astype(np.int8)
    scale = rng.uniform(0.001, 0.1, n).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    x = rng.standard_normal((rows, k)).astype(np.float32)
    packed, rowsum = pack(w)
    acc, xs = matmul_s32(x, packed, rowsum, n, _C.int8_kernel_info()[1])
    want = acc.astype(np.float32) * scale * xs[:, None] + (0 if bias is None else bias)
    out = np.full((rows, n), np.nan, np.float32)
    _C.int8_linear(buf(x), buf(packed), buf(rowsum), buf(scale), buf(bias), buf(out), rows, k, n, threads)
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)


def test_int8_linear_checks_sizes():
    packed, rowsum = pack(np.ones((4, 8), np.int8))
    x, scale, out = np.ones((3, 8), np.float32), np.ones(4, np.float32), np.empty((3, 4), np.float32)
    with pytest.raises(ValueError, match="out has"):
        _C.int8_linear(buf(x), buf(packed), buf(rowsum), buf(scale), buf(None), buf(out[:2]), 3, 8, 4, 1)
    with pytest.raises(ValueError, match="w_scale"):
        _C.int8_linear(buf(x), buf(packed), buf(rowsum), buf(scale[:3]), buf(None), buf(out), 3, 8, 4, 1)
