"""torch.onnx.export on models holding fastlstm modules (the export hook in
fastlstm/nn/lstm.py), with both of torch's exporters, checked in ONNX Runtime."""

from __future__ import annotations

import io
import warnings

import pytest
import torch

import fastlstm

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install fastlstm[peers])")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install fastlstm[peers])")

EXPORTERS = [pytest.param(True, id="dynamo"), pytest.param(False, id="torchscript")]
CONFIGS = [
    pytest.param(dict(batch_first=False), False, id="uni"),
    pytest.param(dict(batch_first=True, bidirectional=True, num_layers=2), False, id="bi-2layer-batch_first"),
    pytest.param(dict(bidirectional=True, num_layers=2), True, id="bi-2layer-hx"),
]


class _Wrap(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, *args):
        out = self.inner(*args)
        return (out[0], *out[1]) if isinstance(out[1], tuple) else out


def _export_and_run(model: torch.nn.Module, args: tuple, dynamo: bool):
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, f, dynamo=dynamo)
    graph = onnx.load_from_string(f.getvalue()).graph
    sess = ort.InferenceSession(f.getvalue())
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)}
    return graph, [torch.from_numpy(o) for o in sess.run(None, feeds)]


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("cfg, with_hx", CONFIGS)
def test_lstm_exports_as_onnx_lstm_and_matches(cfg, with_hx, dynamo):
    model = _Wrap(fastlstm.LSTM(5, 7, **cfg)).eval()
    rows = (2 if cfg.get("bidirectional") else 1) * cfg.get("num_layers", 1)
    x = torch.randn(2, 4, 5) if cfg.get("batch_first") else torch.randn(4, 2, 5)
    args = (x, (torch.randn(rows, 2, 7), torch.randn(rows, 2, 7))) if with_hx else (x,)
    flat_args = (x, *args[1]) if with_hx else args
    if with_hx:
        model = _Wrap(_HxAsArgs(model.inner)).eval()
    graph, got = _export_and_run(model, flat_args, dynamo)
    assert sum(n.op_type == "LSTM" for n in graph.node) == cfg.get("num_layers", 1)
    assert not any(n.domain.startswith("fastlstm") for n in graph.node)
    expected = model(*flat_args)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e.detach(), atol=1e-5, rtol=1e-5)


class _HxAsArgs(torch.nn.Module):
    def __init__(self, lstm: torch.nn.Module):
        super().__init__()
        self.lstm = lstm

    def forward(self, x, h0, c0):
        return self.lstm(x, (h0, c0))


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_lstm_cell_exports_and_matches(dynamo):
    model = _HxAsArgs(fastlstm.LSTMCell(5, 7)).eval()
    args = (torch.randn(3, 5), torch.randn(3, 7), torch.randn(3, 7))
    graph, got = _export_and_run(model, args, dynamo)
    assert not any(n.domain.startswith("fastlstm") for n in graph.node)
    for g, e in zip(got, model(*args)):
        torch.testing.assert_close(g, e.detach(), atol=1e-5, rtol=1e-5)


def test_forward_outside_export_still_runs_fastlstm_kernels():
    assert not torch.onnx.is_in_onnx_export()
    m = fastlstm.LSTM(5, 7)
    assert m(torch.randn(4, 2, 5))[0].shape == (4, 2, 7)
