"""fastlstm/ops/_fixed_order.py: the fixed-order GEMM against float64 torch,
bit for bit across thread counts and ISA levels."""

from __future__ import annotations

import pytest
import torch

from fastlstm import _ext
from fastlstm.ops import _fixed_order
from fastlstm.testing import within_error_rule

SHAPES = [  # (M, N, K): odd sizes, tile and vector edges, K across block edges
    (1, 1, 1), (6, 64, 192), (5, 7, 3), (13, 33, 255), (50, 65, 257), (9, 200, 600), (3, 17, 0),
]
LEVELS = [lvl for lvl in ("scalar", "avx2", "avx512") if _ext._CAPABILITIES.index(lvl)
          <= _ext._CAPABILITIES.index(_ext._C.detected_cpu_capability())]


def _ids(shape):
    return "x".join(map(str, shape))


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture
def capability():
    before = _ext._C.cpu_capability()
    yield _ext._C.set_cpu_capability
    _ext._C.set_cpu_capability(before)


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_fp32_within_error_rule_and_fp64_matches_torch(shape):
    M, N, K = shape
    a, b = torch.randn(K, M, dtype=torch.float64), torch.randn(K, N, dtype=torch.float64)
    ref = a.t() @ b
    torch.testing.assert_close(_fixed_order.mm_tn(a, b), ref, rtol=1e-12, atol=1e-12)
    fused = _fixed_order.mm_tn(a.float(), b.float())
    ok, err, peer = within_error_rule(fused, a.float().t() @ b.float(), ref)
    assert ok, f"error {err:.3g} against fp64, torch's fp32 {peer:.3g}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_bitwise_identical_for_1_to_4_threads(shape, dtype, threads):
    M, N, K = shape
    a, b = torch.randn(K, M, dtype=dtype), torch.randn(K, N, dtype=dtype)
    results = []
    for n in (1, 2, 3, 4):
        threads(n)
        results.append((_fixed_order.mm_tn(a, b), _fixed_order.mm(b.t(), a), _fixed_order.colsum(b)))
    for got in results[1:]:
        for x, y in zip(got, results[0]):
            assert torch.equal(x, y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_every_isa_level_gives_the_scalar_bits(shape, dtype, capability):
    M, N, K = shape
    a, b = torch.randn(K, M, dtype=dtype), torch.randn(K, N, dtype=dtype)
    results = {}
    for level in LEVELS:
        assert capability(level) == level
        results[level] = (_fixed_order.mm_tn(a, b), _fixed_order.colsum(b))
    for level, got in results.items():
        for x, y in zip(got, results["scalar"]):
            assert torch.equal(x, y), f"{level} differs from scalar"


def test_strided_views_of_dgates_accumulate_and_zero_k():
    T, B, D, G, P = 7, 3, 2, 20, 5
    dgates = torch.randn(T, B, D, G, dtype=torch.float64)
    y = torch.randn(T, B, D, P, dtype=torch.float64)
    acc = torch.randn(P, G, dtype=torch.float64)
    for d in range(D):
        dg, hy = dgates[:, :, d].reshape(T * B, G), y[:, :, d].reshape(T * B, P)
        assert dg.stride(0) == D * G  # read in place, not copied
        torch.testing.assert_close(_fixed_order.mm_tn(hy, dg, acc), acc + hy.t() @ dg, rtol=1e-12, atol=1e-12)
    empty, acc = torch.empty(0, 4, dtype=torch.float64), acc[:4, :6]
    assert torch.equal(_fixed_order.mm_tn(empty, torch.empty(0, 6, dtype=torch.float64)), torch.zeros(4, 6, dtype=torch.float64))
    assert torch.equal(_fixed_order.mm_tn(empty, torch.empty(0, 6, dtype=torch.float64), acc), acc)
    assert torch.equal(_fixed_order.colsum(torch.empty(0, 3)), torch.zeros(3))


@pytest.mark.parametrize("rows", [31, 33, 5000, 20001])
def test_colsum_within_error_rule(rows):
    b = torch.randn(rows, 37, dtype=torch.float64) + 1
    ok, err, peer = within_error_rule(_fixed_order.colsum(b.float()), b.float().sum(0), b.sum(0))
    assert ok, f"error {err:.3g} against fp64, torch's fp32 {peer:.3g}"


def test_bad_input_raises():
    with pytest.raises(ValueError, match="a \\(M, K\\)"):
        _fixed_order.mm(torch.randn(3, 4), torch.randn(5, 2))
    with pytest.raises(TypeError, match="dtype"):
        _fixed_order.mm(torch.randn(3, 4), torch.randn(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="acc"):
        _fixed_order.mm(torch.randn(3, 4), torch.randn(4, 2), torch.randn(2, 3))
    with pytest.raises(ValueError, match="elements"):
        a, b, c = torch.randn(4), torch.randn(4), torch.randn(4)
        _ext._C.fixed_order_gemm("float32", _ext.strided_buf(a), 1, 1, _ext.strided_buf(b), 2,
                                 _ext.strided_buf(c), 2, 2, 2, 3, False, 1)
    with pytest.raises(ValueError, match="byte elements"):
        a, b, c = torch.randn(4, dtype=torch.float64), torch.randn(4), torch.randn(4)
        _ext._C.fixed_order_gemm("float32", _ext.strided_buf(a), 2, 1, _ext.strided_buf(b), 2,
                                 _ext.strided_buf(c), 2, 2, 2, 2, False, 1)


def test_opcheck_and_gradcheck():
    a, b, acc = (torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in ((4, 6), (6, 3), (4, 3)))
    torch.library.opcheck(torch.ops.fastlstm.fixed_order_mm, (a, b, acc))
    torch.library.opcheck(torch.ops.fastlstm.fixed_order_mm, (a, b, None))
    torch.library.opcheck(torch.ops.fastlstm.fixed_order_colsum, (b,))
    assert torch.autograd.gradcheck(lambda a, b, c: _fixed_order.mm(a, b, c), (a, b, acc))
    assert torch.autograd.gradcheck(_fixed_order.colsum, (b,))
