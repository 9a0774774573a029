"""fastlstm.inspect: gates recorded from the fused kernels equal the reference's."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fastlstm
from fastlstm import reference
from fastlstm.inspect import GateRecord, plot_gates, record_gates
from fastlstm.testing import assert_parity

BACKENDS = fastlstm.available_backends("cpu")


def _reference_gates(m, x_tm, lengths=None):
    """Per (layer, direction): dict of (B, T, H) from the reference recurrence."""
    D = 2 if m.bidirectional else 1
    H = m.hidden_size
    out = {}
    layer_input = x_tm
    T, B = x_tm.shape[:2]
    per_dir = len(m._flat_weights) // (m.num_layers * D)
    w = list(m._flat_weights)
    for layer in range(m.num_layers):
        dirs = [w[(layer * D + d) * per_dir:(layer * D + d + 1) * per_dir] for d in range(D)]
        gx = torch.stack([layer_input @ d_[0].t() + d_[2] + d_[3] for d_ in dirs], dim=2)
        w_hh = torch.stack([d_[1] for d_ in dirs])
        h0 = x_tm.new_zeros(D, B, H)
        y, _, _, gates, cells = reference.lstm_recurrence(gx, w_hh, None, h0, h0.clone(), lengths)
        for d in range(D):
            g = gates[:, :, d].transpose(0, 1)
            out[layer, d] = dict(input=g[..., :H], forget=g[..., H:2 * H], candidate=g[..., 2 * H:3 * H],
                                 output=g[..., 3 * H:], cell=cells[:, :, d].transpose(0, 1))
        layer_input = y.reshape(T, B, D * H)
    return out


def _compare(record, expected):
    for (layer, d), names in expected.items():
        got = record[layer, d]
        for name, value in names.items():
            assert_parity(getattr(got, name), value, name=f"l{layer} d{d} {name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", [dict(), dict(num_layers=2, bidirectional=True)], ids=["uni", "bi-2layer"])
def test_recorded_gates_equal_reference(cfg, backend):
    m = fastlstm.LSTM(4, 6, batch_first=True, backend=backend, **cfg)
    x = torch.randn(3, 7, 4)
    with torch.no_grad(), record_gates(m) as rec:
        m(x)
    assert len(rec) == 1
    layer0 = rec.last[0, 0]
    assert layer0.forget.shape == (3, 7, 6)
    assert rec.last.num_layers == m.num_layers and rec.last.num_directions == (2 if m.bidirectional else 1)
    with torch.no_grad():
        _compare(rec.last, _reference_gates(m, x.transpose(0, 1)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_return_gates_and_packed_sequences(backend):
    m = fastlstm.LSTM(4, 5, bidirectional=True, backend=backend, return_gates=True)
    x = torch.randn(6, 3, 4)
    lengths = torch.tensor([6, 2, 4])
    out, (h, c), rec = m(pack_padded_sequence(x, lengths, enforce_sorted=False))
    assert isinstance(rec, GateRecord)
    with torch.no_grad():
        _compare(rec, _reference_gates(m, x, lengths))
    # Padding is zero and unpadded() trims it.
    assert (rec[0, 1].forget[1, 2:] == 0).all()
    assert rec[0, 1].unpadded(1)["cell"].shape == (2, 5)
    # The first output is the same as without return_gates.
    m.return_gates = False
    out2, _ = m(pack_padded_sequence(x, lengths, enforce_sorted=False))
    assert torch.equal(out.data, out2.data)


def test_no_recording_outside_block_and_nested_modules():
    model = torch.nn.Sequential()
    model.add_module("a", fastlstm.LSTM(3, 4))
    x = torch.randn(5, 2, 3)
    with record_gates(model) as rec:
        model.a(x)
        model.a(x[:3])
    model.a(x)
    assert len(rec) == 2 and rec.names == ["a", "a"]
    assert rec[1][0, 0].input.shape == (2, 3, 4)
    assert model.a._gate_recorders == []
    # Recording with gradients on keeps the model differentiable.
    with record_gates(model.a) as rec:
        out, _ = model.a(x.requires_grad_())
        out.sum().backward()
    assert x.grad is not None and len(rec) == 1


def test_record_gates_errors():
    with pytest.raises(ValueError, match="no fastlstm.LSTM"):
        with record_gates(torch.nn.LSTM(2, 3)):
            pass
    with pytest.raises(LookupError):
        with record_gates(fastlstm.LSTM(2, 3)) as rec:
            pass
        rec.last
    m = fastlstm.LSTM(2, 3, return_gates=True)
    _, _, rec = m(torch.randn(4, 1, 2))
    with pytest.raises(KeyError, match="layer 1"):
        rec[1, 0]


def test_plot_gates_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    m = fastlstm.LSTM(2, 8, num_layers=2, bidirectional=True)
    with record_gates(m) as rec:
        m(torch.randn(20, 2, 2))
    path = plot_gates(rec, layer=1, direction=1, path=str(tmp_path / "g.png"), batch=1)
    data = open(path, "rb").read()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
