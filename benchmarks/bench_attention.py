"""Sparse attention (embed 128, 4 heads, window (64, 64)), forward and forward+backward: fastlstm op vs masked SDPA, fastlstm.SparseAttention vs nn.MultiheadAttention."""

import pytest

from fastlstm.bench.pytest_support import cells, make_context, run_cell

CTX = make_context()


@pytest.mark.parametrize("case,impl", cells("attention", CTX))
def test_attention(benchmark, case, impl):
    run_cell(benchmark, case, impl, CTX)
