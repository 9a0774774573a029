"""int8 LSTM inference, S1-S5: fastlstm int8 vs torch dynamic int8 vs ONNX Runtime int8 (max error vs fp32 is checked first)."""

import pytest

from fastlstm.bench.pytest_support import cells, make_context, run_cell

CTX = make_context()


@pytest.mark.parametrize("case,impl", cells("int8", CTX))
def test_int8(benchmark, case, impl):
    run_cell(benchmark, case, impl, CTX)
