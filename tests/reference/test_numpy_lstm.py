"""fastlstm.reference.numpy_lstm: equal to the torch reference in float64, and
a second oracle for the fused CPU kernels."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import fastlstm
from fastlstm import reference
from fastlstm.reference import numpy_lstm
from fastlstm.testing import PARITY_TOLERANCE

CONFIGS = {
    "uni": dict(),
    "bias-off": dict(bias=False),
    "bi-2layer": dict(num_layers=2, bidirectional=True),
    "proj-bi": dict(bidirectional=True, proj_size=3),
    "3layer": dict(num_layers=3),
}


def _setup(cfg, dtype, T=9, B=3, I=5, H=6):
    m = torch.nn.LSTM(I, H, **cfg, dtype=dtype)
    x = torch.randn(T, B, I, dtype=dtype)
    D = 2 if m.bidirectional else 1
    P = m.proj_size or H
    h0 = torch.randn(m.num_layers * D, B, P, dtype=dtype)
    c0 = torch.randn(m.num_layers * D, B, H, dtype=dtype)
    kw = dict(num_layers=m.num_layers, bidirectional=m.bidirectional, has_bias=m.bias, proj_size=m.proj_size)
    return m, x, (h0, c0), kw


def _np(t):
    return t.detach().numpy()


@pytest.mark.parametrize("lengths", [None, [9, 4, 1]], ids=["full", "ragged"])
@pytest.mark.parametrize("name", CONFIGS)
def test_equals_torch_reference_float64(name, lengths):
    m, x, (h0, c0), kw = _setup(CONFIGS[name], torch.float64)
    lt = None if lengths is None else torch.tensor(lengths)
    expected = reference.lstm(x, (h0, c0), list(m._flat_weights), lengths=lt, **kw)
    got = numpy_lstm.lstm(_np(x), (_np(h0), _np(c0)), [_np(w) for w in m._flat_weights],
                          lengths=None if lengths is None else np.array(lengths), **kw)
    for a, b in zip(got, expected):
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, _np(b), atol=1e-12, rtol=0)


def test_cell_gates_match_torch_reference():
    m, x, (h0, c0), _ = _setup({}, torch.float64)
    w = [_np(p) for p in m._flat_weights]
    h, c, (i, f, g, o) = numpy_lstm.lstm_cell(_np(x[0]), _np(h0[0]), _np(c0[0]), *w, return_gates=True)
    h_ref, c_ref = reference.lstm_cell(x[0], h0[0], c0[0], *m._flat_weights)
    np.testing.assert_allclose(h, _np(h_ref), atol=1e-12, rtol=0)
    np.testing.assert_allclose(c, _np(c_ref), atol=1e-12, rtol=0)
    assert all(a.shape == (3, 6) for a in (i, f, g, o))
    assert (i > 0).all() and (i < 1).all() and (np.abs(g) < 1).all()


def test_sigmoid_saturates_without_nan():
    out = numpy_lstm.sigmoid(np.array([-1e4, 0.0, 1e4]))
    np.testing.assert_array_equal(out, [0.0, 0.5, 1.0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("name", CONFIGS)
def test_oracle_for_fused_cpu_kernels(name, dtype):
    if "cpu" not in fastlstm.available_backends("cpu"):
        pytest.skip("fastlstm._C not built")
    m, x, (h0, c0), kw = _setup(CONFIGS[name], dtype)
    lengths = torch.tensor([9, 5, 2])
    record = []
    fused = fastlstm.ops.lstm(x, (h0, c0), list(m._flat_weights), lengths=lengths, backend="cpu",
                              record=record, **kw)
    # The oracle runs in float64 from the same (rounded) weights.
    got = numpy_lstm.lstm(_np(x).astype(np.float64), (_np(h0).astype(np.float64), _np(c0).astype(np.float64)),
                          [_np(w).astype(np.float64) for w in m._flat_weights], lengths=lengths.numpy(),
                          return_gates=True, **kw)
    tol = PARITY_TOLERANCE[dtype]
    for a, b in zip(fused, got[:3]):
        np.testing.assert_allclose(_np(a), b, **tol)
    assert len(record) == len(got[3])
    for (layer, gates, cells), (layer_np, gates_np, cells_np) in zip(record, got[3]):
        assert layer == layer_np
        mask = (np.arange(9)[:, None] < lengths.numpy()[None, :])[:, :, None, None]
        np.testing.assert_allclose(np.where(mask, _np(gates), 0), gates_np, **tol)
        np.testing.assert_allclose(np.where(mask, _np(cells), 0), cells_np, **tol)


def test_module_does_not_import_torch():
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('n', "
            f"{numpy_lstm.__file__!r}); mod = importlib.util.module_from_spec(spec); "
            "spec.loader.exec_module(mod); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_weights_count_raises():
    with pytest.raises(ValueError, match="weights"):
        numpy_lstm.lstm(np.zeros((2, 1, 3)), None, [np.zeros((8, 3))], num_layers=1)


@pytest.mark.parametrize("cfg", [dict(), dict(num_layers=2, bidirectional=True), dict(proj_size=3, bidirectional=True)],
                         ids=["uni", "bi-2layer", "proj-bi"])
def test_oracle_for_torch_free_runtime(cfg):
    layers = pytest.importorskip("fastlstm.runtime.layers")
    if not fastlstm._ext.available():
        pytest.skip("fastlstm._C not built")
    config = dict(input_size=5, hidden_size=6, num_layers=1, bidirectional=False, proj_size=0, bias=True,
                  batch_first=False, dtype="float32")
    config.update(cfg)
    rng = np.random.default_rng(0)
    D = 2 if config["bidirectional"] else 1
    H, P = config["hidden_size"], config["proj_size"] or config["hidden_size"]
    weights = []
    for layer in range(config["num_layers"]):
        I = config["input_size"] if layer == 0 else D * P
        for _ in range(D):
            weights += [rng.uniform(-0.4, 0.4, (4 * H, I)), rng.uniform(-0.4, 0.4, (4 * H, P)),
                        rng.uniform(-0.4, 0.4, 4 * H), rng.uniform(-0.4, 0.4, 4 * H)]
            if config["proj_size"]:
                weights.append(rng.uniform(-0.4, 0.4, (P, H)))
    weights = [w.astype(np.float32) for w in weights]
    stack = layers.LSTMStack(config, layers.lstm_tensors_from_flat(weights, config, "float32"))
    x = rng.standard_normal((8, 3, 5)).astype(np.float32)
    lengths = np.array([8, 3, 5], dtype=np.int64)
    out, (h_n, c_n) = stack.run(x, None, lengths)
    expected = numpy_lstm.lstm(x.astype(np.float64), None, [w.astype(np.float64) for w in weights],
                               num_layers=config["num_layers"], bidirectional=config["bidirectional"],
                               proj_size=config["proj_size"], lengths=lengths)
    tol = PARITY_TOLERANCE[torch.float32]
    for a, b in zip((out, h_n, c_n), expected):
        np.testing.assert_allclose(a, b, **tol)
