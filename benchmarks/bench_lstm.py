"""pytest-benchmark suite: CPU LSTM inference and training (forward + backward
of a sum loss) at the issue's shapes S1-S5, fastlstm against torch.nn.LSTM
(oneDNN) and ONNX Runtime's CPU LSTM (the same nn.LSTM exported to ONNX).

Run: ``PYTHONPATH=. pytest benchmarks/bench_lstm.py --benchmark-only
--benchmark-group-by=param:shape,param:mode -p no:logging``.
Threads: FASTLSTM_BENCH_THREADS (default 2) for torch, fastlstm and ORT.
Speed is reported, never asserted; correctness lives in tests/.
"""

from __future__ import annotations

import io
import os
import warnings

import pytest
import torch

import fastlstm

THREADS = int(os.environ.get("FASTLSTM_BENCH_THREADS", "2"))

# name: (batch, seq_len, input_size, hidden_size, num_layers, bidirectional), batch_first
SHAPES = {
    "S1": (1, 288, 32, 128, 2, True),
    "S2": (1, 1440, 32, 128, 2, True),
    "S3": (64, 288, 32, 128, 2, True),
    "S4": (1, 64, 256, 256, 1, False),
    "S5": (32, 128, 256, 512, 1, False),
}


@pytest.fixture(scope="module", autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


def _models(shape):
    B, T, I, H, L, bi = SHAPES[shape]
    torch.manual_seed(0)
    peer = torch.nn.LSTM(I, H, L, batch_first=True, bidirectional=bi)
    fused = fastlstm.LSTM(I, H, L, batch_first=True, bidirectional=bi, backend="cpu")
    fused.load_state_dict(peer.state_dict())
    return peer, fused, torch.randn(B, T, I)


def _ort_session(model, x):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, input_names=["x"], output_names=["y"], dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    return ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("impl", ["fastlstm", "torch", "onnxruntime"])
@pytest.mark.parametrize("mode", ["inference"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_inference(benchmark, shape, mode, impl):
    peer, fused, x = _models(shape)
    benchmark.group = f"{shape} {mode}"
    if impl == "onnxruntime":
        session = _ort_session(peer, x)
        feed = {"x": x.numpy()}
        benchmark(session.run, None, feed)
        return
    model = fused if impl == "fastlstm" else peer

    def run():
        with torch.no_grad():
            return model(x)

    benchmark(run)


@pytest.mark.parametrize("impl", ["fastlstm", "torch"])
@pytest.mark.parametrize("mode", ["training"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_training(benchmark, shape, mode, impl):
    peer, fused, x = _models(shape)
    benchmark.group = f"{shape} {mode}"
    model = fused if impl == "fastlstm" else peer
    x = x.requires_grad_(True)

    def step():
        model.zero_grad(set_to_none=True)
        x.grad = None
        model(x)[0].sum().backward()

    benchmark(step)
