"""fastlstm.nn.Dropout against torch.nn.Dropout."""

import pytest
import torch

import fastlstm
from fastlstm.nn import Dropout

needs_cpu = pytest.mark.skipif("cpu" not in fastlstm.available_backends("cpu"), reason="fastlstm._C not built")


@needs_cpu
def test_drop_in_for_nn_dropout():
    ours, theirs = Dropout(0.3), torch.nn.Dropout(0.3)
    assert isinstance(ours, torch.nn.Dropout) and repr(ours) == repr(theirs)
    assert ours.state_dict() == {} and list(ours.parameters()) == []
    x = torch.rand(64, 500) + 0.5
    ours.eval()
    assert ours(x) is x or torch.equal(ours(x), x)
    ours.train()
    y = ours(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.01
    torch.testing.assert_close(y[kept], x[kept] / 0.7)
    torch.manual_seed(1)
    a = ours(x)
    torch.manual_seed(1)
    assert torch.equal(a, ours(x))


@needs_cpu
def test_inplace_keeps_torchs_dropout():
    x = torch.ones(1000)
    out = Dropout(0.5, inplace=True).train()(x)
    assert out.data_ptr() == x.data_ptr() and set(x.unique().tolist()) <= {0.0, 2.0}
