"""The consumer models: the productivity model (T = 288 and 1440, batch 1) against the
design document's model in torch fp32/int8 and ONNX Runtime, and the chat encoder
(64 texts) against the same encoder on torch.nn.LSTM."""

import pytest

from fastlstm.bench.pytest_support import cells, make_context, run_cell

CTX = make_context()


@pytest.mark.parametrize("case,impl", cells("productivity", CTX))
def test_productivity(benchmark, case, impl):
    run_cell(benchmark, case, impl, CTX)


@pytest.mark.parametrize("case,impl", cells("chat", CTX))
def test_chat_encoder(benchmark, case, impl):
    run_cell(benchmark, case, impl, CTX)
