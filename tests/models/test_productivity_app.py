"""The desktop app on the torch-free runtime (fastlstm.runtime.ProductivityApp), checked
against the torch ProductivityLSTM on the same file."""

import numpy as np
import pytest
import torch

import fastlstm
import fastlstm.runtime as rt
from fastlstm._ext import _C
from fastlstm.models import ActivityEncoder, ProductivityLSTM, synthetic_activity_log

pytestmark = pytest.mark.skipif(_C is None, reason="needs fastlstm._C")


@pytest.fixture(scope="module")
def log():
    return synthetic_activity_log(days=3, seed=4)


def _model(log, window=(6, 4), global_tokens=0):
    torch.manual_seed(0)
    enc = ActivityEncoder().fit(log.events)
    model = ProductivityLSTM(enc.input_dim, 16, (16, 8), output_dim=5, attention_window=window,
                             global_tokens=global_tokens).eval()
    model.encoder = enc
    return model


@pytest.mark.parametrize("window,global_tokens", [((6, 4), 0), (None, 0), ((3, 3), 2)], ids=["window", "dense", "global"])
def test_app_predict_matches_the_torch_model(tmp_path, log, window, global_tokens):
    model = _model(log, window, global_tokens)
    path = tmp_path / "p.safetensors"
    model.save_pretrained(path)
    app = rt.ProductivityApp.load(path)
    events = log.days()[0].events
    ours, ref = app.predict(events, need_weights=True), model.predict(events)
    np.testing.assert_allclose(ours.pattern_probs, ref.pattern_probs, atol=1e-5)
    np.testing.assert_allclose(ours.anomaly_scores, ref.anomaly_scores, atol=1e-5)
    np.testing.assert_allclose(ours.forecast_features, ref.forecast_features, atol=1e-5)
    np.testing.assert_allclose(ours.attention, ref.attention, atol=1e-5)
    assert ours.patterns == ref.patterns and ours.forecast == pytest.approx(ref.forecast, abs=1e-5)
    assert [(s.start, s.end) for s in ours.anomalies] == [(s.start, s.end) for s in ref.anomalies]


def test_int8_file_stays_close(tmp_path, log):
    model = _model(log)
    model.save_pretrained(tmp_path / "q.safetensors", dtype="int8")
    app = rt.ProductivityApp.load(tmp_path / "q.safetensors")
    events = log.days()[1].events
    np.testing.assert_allclose(app.predict(events).pattern_probs, model.predict(events).pattern_probs, atol=3e-2)


def test_one_file_round_trips_model_and_encoder(tmp_path, log):
    model = _model(log)
    path = tmp_path / "p.safetensors"
    model.save_pretrained(path, window=64)
    again = ProductivityLSTM.from_pretrained(path)
    assert again.encoder.apps == model.encoder.apps and again.encoder.window == 64
    assert rt.ProductivityApp.load(path).encoder.apps == model.encoder.apps
    x = model.encoder.encode(log.events)[None]
    with torch.no_grad():
        for a, b in zip(model(x), again(x)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    model.save_pretrained(tmp_path / "q.safetensors", dtype="int8")
    with pytest.raises(ValueError, match="int8"):
        ProductivityLSTM.from_pretrained(tmp_path / "q.safetensors")
    model.encoder = None
    with pytest.raises(ValueError, match="no encoder"):
        model.save_pretrained(tmp_path / "x.safetensors")


def test_a_file_without_encoder_is_refused_by_the_app(tmp_path, log):
    model = _model(log)
    model.encoder = None
    fastlstm.export(model, tmp_path / "bare.safetensors")
    with pytest.raises(ValueError, match="no encoder"):
        rt.ProductivityApp.load(tmp_path / "bare.safetensors")


@pytest.mark.parametrize("window,global_tokens", [((6, 4), 0), (None, 0), ((3, 3), 2)], ids=["window", "dense", "global"])
@pytest.mark.parametrize("chunk", [1, 7])
def test_stream_equals_full_recompute_while_the_day_fits(tmp_path, log, window, global_tokens, chunk):
    model = _model(log, window, global_tokens)
    model.save_pretrained(tmp_path / "p.safetensors")
    app = rt.ProductivityApp.load(tmp_path / "p.safetensors")
    events = log.days()[0].events[:40]
    stream = app.stream(window=64)
    for i in range(0, len(events), chunk):
        got = stream.append(events[i:i + chunk])
        full = app.predict(events[:i + chunk])
        np.testing.assert_allclose(got.pattern_probs, full.pattern_probs, atol=1e-4)
        np.testing.assert_allclose(got.anomaly_scores, full.anomaly_scores, atol=1e-4)
        np.testing.assert_allclose(got.forecast_features, full.forecast_features, atol=1e-4)
    assert stream.recomputed_from == 0


def test_stream_recomputes_only_the_trailing_window(tmp_path, log):
    model = _model(log)
    model.save_pretrained(tmp_path / "p.safetensors")
    app = rt.ProductivityApp.load(tmp_path / "p.safetensors")
    events = log.days()[0].events
    W, k = 8, 3
    stream = app.stream(window=W)
    for i in range(0, len(events), k):
        pred = stream.append(events[i:i + k])
        n = len(stream)
        assert n - stream.recomputed_from <= W + k
        assert len(pred.patterns) == n == min(i + k, len(events))
    full = app.predict(events)
    # the newest steps saw the whole past: they match the full recompute closely
    np.testing.assert_allclose(pred.forecast_features, full.forecast_features, atol=1e-4)


def test_stream_starts_a_new_day(tmp_path, log):
    model = _model(log)
    model.save_pretrained(tmp_path / "p.safetensors")
    app = rt.ProductivityApp.load(tmp_path / "p.safetensors")
    day0, day1 = log.days()[:2]
    stream = app.stream(window=512)
    stream.append(day0.events)
    pred = stream.append(day1.events[:5])
    assert len(pred.patterns) == 5
    np.testing.assert_allclose(pred.pattern_probs, app.predict(day1.events[:5]).pattern_probs, atol=1e-4)
    with pytest.raises(ValueError, match="earlier"):
        stream.append(day0.events[:1])


def test_variable_length_days_match_the_torch_model_with_lengths(tmp_path, log):
    model = _model(log)
    model.save_pretrained(tmp_path / "p.safetensors")
    app = rt.ProductivityApp.load(tmp_path / "p.safetensors")
    days = [d.events for d in log.days()]
    feats = [app.features(d) for d in days]
    T = max(f.shape[0] for f in feats)
    batch = np.zeros((len(feats), T, feats[0].shape[1]), np.float32)
    for b, f in enumerate(feats):
        batch[b, :len(f)] = f
    lengths = np.array([len(f) for f in feats])
    pattern, forecast, anomaly, _ = app.outputs(batch, lengths)
    with torch.no_grad():
        tp, tf, ta, _ = model(torch.from_numpy(batch), lengths=torch.from_numpy(lengths))
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(pattern[b, :n], tp[b, :n].numpy(), atol=1e-5)
        np.testing.assert_allclose(anomaly[b, :n], ta[b, :n, 0].numpy(), atol=1e-5)
        np.testing.assert_allclose(forecast[b], tf[b].numpy(), atol=1e-5)
        assert not pattern[b, n:].any()
    with pytest.raises(ValueError, match="lengths"):
        app.outputs(batch, lengths + 1000)


def test_events_from_columns(tmp_path, log):
    events = log.events[:5]
    cols = rt.events_from_columns([e.timestamp.isoformat() for e in events], [e.app for e in events],
                                  [e.duration for e in events], [e.score for e in events])
    assert cols == events
    with pytest.raises(ValueError, match="different lengths"):
        rt.events_from_columns([1, 2], ["a"], [1, 2], [0.1, 0.2])


def test_the_app_runs_without_torch_in_the_process(tmp_path, log, python_subprocess):
    model = _model(log)
    path = tmp_path / "p.safetensors"
    model.save_pretrained(path, dtype="int8")
    rows = [(e.timestamp.isoformat(), e.app, e.duration, e.score) for e in log.days()[0].events[:30]]
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any import of torch now fails\n"
        "import fastlstm.runtime as rt\n"
        f"app = rt.ProductivityApp.load({str(path)!r})\n"
        f"rows = {rows!r}\n"
        "pred = app.predict(rows)\n"
        "stream = app.stream()\n"
        "for i in range(0, 30, 10): s = stream.append(rows[i:i + 10])\n"
        "assert len(pred.patterns) == 30 and len(s.patterns) == 30 and pred.forecast is not None\n"
        "assert abs(s.anomaly_scores - pred.anomaly_scores).max() < 1e-4\n"
        "import fastlstm\n"
        "try:\n"
        "    fastlstm.LSTM\n"
        "except ImportError as exc:\n"
        "    assert 'needs torch' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('fastlstm.LSTM without torch did not raise')\n"
        "assert sys.modules['torch'] is None\n"
        "print('ok')\n"
    )
    res = python_subprocess(code)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_the_app_does_not_import_torch(tmp_path, log, python_subprocess):
    model = _model(log)
    path = tmp_path / "p.safetensors"
    model.save_pretrained(path)
    rows = [(e.timestamp.isoformat(), e.app, e.duration, e.score) for e in log.days()[0].events[:20]]
    code = (
        "import sys, fastlstm.runtime as rt\n"
        f"app = rt.ProductivityApp.load({str(path)!r})\n"
        f"app.predict({rows!r}); app.stream().append({rows!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    res = python_subprocess(code)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
