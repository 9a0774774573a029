"""fastlstm.models.ProductivityLSTM against the document's reference model;
predict, streaming, training helpers and the demo."""

import argparse
import warnings

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

from fastlstm.models import ActivityEncoder, ProductivityLSTM, StreamingProductivity, synthetic_activity_log
from fastlstm.models import reference
from fastlstm.models.productivity import dense_attention_weights
from fastlstm.models.productivity_training import ActivityData, fine_tune, focal_loss, multitask_loss, train
from fastlstm.testing import assert_parity

F32 = torch.float32
NAMES = ("pattern", "forecast", "anomaly", "attn_weights")


def _pair(hidden=16, layers=2, input_dim=11, emb=12, out=5, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dropout with one layer warns, as in the document
        ref = reference.ProductivityLSTM(input_dim, emb, hidden, layers, out).eval()
    return ref, ProductivityLSTM.from_reference(ref, **kwargs).eval()


@pytest.fixture(scope="module")
def day_setup():
    log = synthetic_activity_log(days=3, seed=4)
    enc = ActivityEncoder().fit(log.events)
    torch.manual_seed(1)
    model = ProductivityLSTM(enc.input_dim, 16, (24, 16), output_dim=5).eval()
    model.encoder = enc
    return log, enc, model


# -- reference parity ------------------------------------------------------------

SHAPES = {"B2-T30": (2, 30), "B1-T1": (1, 1), "B6-T6": (6, 6)}  # B == T catches a missed transpose


@pytest.mark.parametrize("layers", [1, 2, 3], ids=lambda n: f"{n}layer")
@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_reference_parity(shape, layers):
    B, T = SHAPES[shape]
    ref, fast = _pair(layers=layers)
    x = torch.randn(B, T, 11)
    with torch.no_grad():
        for name, a, b in zip(NAMES, fast(x), ref(x)):
            assert_parity(a, b, F32, name=name)


def test_reference_parity_packed_and_initial_state():
    ref, fast = _pair(hidden=8)
    seqs = [torch.randn(n, 11) for n in (9, 4, 13)]
    packed = pack_sequence(seqs, enforce_sorted=False)
    with torch.no_grad():
        for name, a, b in zip(NAMES, fast(packed), ref(packed)):
            assert_parity(a, b, F32, name=f"packed {name}")
        # the forecast comes from each sequence's last real step, not from padding
        single = fast(seqs[1].unsqueeze(0))[1][0]
        assert_parity(fast(packed)[1][1], single, F32, name="forecast of the short sequence")
        h0, c0 = torch.randn(4, 2, 8), torch.randn(4, 2, 8)
        x = torch.randn(2, 7, 11)
        for name, a, b in zip(NAMES, fast(x, (h0, c0)), ref(x, (h0, c0))):
            assert_parity(a, b, F32, name=f"hidden {name}")


def test_reference_parity_gradients():
    ref, fast = _pair(hidden=8)
    x = torch.randn(3, 10, 11)
    target = torch.randint(0, 5, (3, 10))
    grads = []
    for model in (ref, fast):
        model.zero_grad()
        loss, _ = multitask_loss(model(x, need_weights=False), target, torch.randn(3, 11, generator=torch.Generator().manual_seed(0)),
                                 (target == 0).float())
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert_parity(grads[1]["embedding.weight"], grads[0]["embedding.weight"], F32, name="d embedding")
    assert_parity(grads[1]["lstm.1.weight_hh_l0_reverse"], grads[0]["lstm.weight_hh_l1_reverse"], F32, name="d w_hh")
    assert_parity(grads[1]["attention.in_proj_weight"], grads[0]["attention.in_proj_weight"], F32, name="d in_proj")


def test_swapped_lstm_modules_run_through_their_forward():
    # quantize_dynamic-style swaps replace model.lstm[i]; the model must call the module, not the op
    ref, fast = _pair(hidden=8)
    for i, lstm in enumerate(fast.lstm):
        fast.lstm[i] = lstm.to_torch()
    x = torch.randn(2, 9, 11)
    packed = pack_sequence([torch.randn(n, 11) for n in (5, 8)], enforce_sorted=False)
    with torch.no_grad():
        for inp in (x, packed):
            for name, a, b in zip(NAMES, fast(inp), ref(inp)):
                assert_parity(a, b, F32, name=name)


def test_from_reference_rejects_other_modules():
    with pytest.raises(TypeError, match="reference.ProductivityLSTM"):
        ProductivityLSTM.from_reference(torch.nn.LSTM(3, 4))


# -- the architecture in words -------------------------------------------------------


def test_described_architecture():
    model = ProductivityLSTM(input_dim=35, embedding_dim=64, hidden_dim=(128, 64), output_dim=5)
    assert [lstm.hidden_size for lstm in model.lstm] == [128, 64]
    assert [lstm.input_size for lstm in model.lstm] == [64, 256]
    assert all(lstm.bidirectional for lstm in model.lstm)
    assert model.lstm_dropout.p == 0.2
    assert model.attention.num_heads == 4 and model.attention.embed_dim == 128 and model.attention.dropout == 0.1
    pattern, forecast, anomaly, attn = model.eval()(torch.randn(2, 20, 35))
    assert pattern.shape == (2, 20, 5) and forecast.shape == (2, 35) and anomaly.shape == (2, 20, 1)
    assert attn.shape == (2, 20, 20)


def test_document_constructor_positional():
    model = ProductivityLSTM(35, 64, 128, 2, 5)
    assert [lstm.hidden_size for lstm in model.lstm] == [128, 128]


@pytest.mark.parametrize("window", [2, (3, 0)], ids=["sym2", "causal3"])
def test_sparse_attention_pattern(window):
    torch.manual_seed(0)
    model = ProductivityLSTM(6, 8, (8, 8), output_dim=3, attention_window=window).eval()
    left, right = (window, window) if isinstance(window, int) else window
    x = torch.randn(1, 12, 6)
    with torch.no_grad():
        _, _, _, attn = model(x)
        attn = dense_attention_weights(attn, model.attention_window, 12)  # banded from SparseAttention
        i, j = torch.arange(12).unsqueeze(1), torch.arange(12).unsqueeze(0)
        outside = (j < i - left) | (j > i + right)
        assert attn[0][outside].abs().max() == 0
        assert torch.allclose(attn[0].sum(-1), torch.ones(12))
        # a window covering the whole sequence is dense attention
        wide = ProductivityLSTM(6, 8, (8, 8), output_dim=3, attention_window=12).eval()
        dense = ProductivityLSTM(6, 8, (8, 8), output_dim=3).eval()
        wide.load_state_dict(model.state_dict())
        dense.load_state_dict(model.state_dict())
        got, want = list(wide(x)), dense(x)
        got[3] = dense_attention_weights(got[3], wide.attention_window, 12)
        for name, a, b in zip(NAMES, got, want):
            assert_parity(a, b, F32, name=name)


def test_sparse_model_trains_with_attention_dropout():
    model = ProductivityLSTM(6, 8, (8, 8), output_dim=3, attention_window=2).train()
    x = torch.randn(3, 10, 6)
    loss, _ = multitask_loss(model(x), torch.randint(0, 3, (3, 10)), torch.randn(3, 6), torch.zeros(3, 10))
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.attention.in_proj_weight.grad.abs().sum() > 0


BAD_INPUT = {
    "features": (torch.randn(1, 5, 7), "input_dim"),
    "2d": (torch.randn(5, 6), "B, T, input_dim"),
    "empty": (torch.randn(1, 0, 6), "empty"),
}


@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_input(case):
    x, match = BAD_INPUT[case]
    with pytest.raises(ValueError, match=match):
        ProductivityLSTM(6, 8, (8, 8), output_dim=3)(x)


def test_bad_config():
    with pytest.raises(ValueError, match="num_heads"):
        ProductivityLSTM(6, 8, (8, 7), output_dim=3)
    with pytest.raises(ValueError, match="num_layers"):
        ProductivityLSTM(6, 8, (8, 8), 3, 3)


# -- predict ---------------------------------------------------------------------------


def test_predict_outputs(day_setup):
    log, enc, model = day_setup
    events = log.days()[0].events
    pred = model.predict(events, threshold=0.0)  # every step flagged: one span over the day
    T = len(events)
    assert len(pred.patterns) == T and pred.pattern_probs.shape == (T, 5) and pred.pattern_ids.shape == (T,)
    np.testing.assert_allclose(pred.pattern_probs.sum(1), 1, rtol=1e-5)
    assert pred.attention.shape == (T, T)
    assert 0.0 <= pred.forecast <= 1.0 and pred.forecast_features.shape == (enc.input_dim,)
    assert ((pred.anomaly_scores > 0) & (pred.anomaly_scores < 1)).all()
    assert len(pred.anomalies) == 1 and (pred.anomalies[0].start, pred.anomalies[0].end) == (0, T - 1)
    assert pred.anomalies[0].start_time == events[0].timestamp
    with torch.no_grad():
        pattern, forecast, anomaly, _ = model(enc.encode_events(events).unsqueeze(0))
    assert pred.pattern_ids.tolist() == pattern[0].argmax(-1).tolist()
    np.testing.assert_allclose(pred.anomaly_scores, torch.sigmoid(anomaly[0, :, 0]).numpy(), rtol=1e-6)
    assert model.predict(events, threshold=1.01).anomalies == []


def test_predict_spans():
    from fastlstm.runtime.app import anomaly_spans as _spans

    spans = _spans(np.array([0.1, 0.7, 0.9, 0.2, 0.6]), 0.5, [])
    assert [(s.start, s.end) for s in spans] == [(1, 2), (4, 4)] and spans[0].peak == pytest.approx(0.9)


def test_predict_needs_encoder():
    with pytest.raises(ValueError, match="encoder"):
        ProductivityLSTM(6, 8, (8, 8), output_dim=3).predict([("2026-01-05T09:00", "a", 1, 0.5)])


# -- streaming --------------------------------------------------------------------------


def _full(model, enc, events):
    with torch.no_grad():
        pattern, forecast, anomaly, _ = model(enc.encode_events(events).unsqueeze(0))
    return pattern[0], forecast[0], anomaly[0]


@pytest.mark.parametrize("attention_window", [None, 3], ids=["dense", "sparse3"])
@pytest.mark.parametrize("chunk", [1, 5], ids=lambda c: f"chunk{c}")
def test_streaming_equals_full_recompute(day_setup, chunk, attention_window):
    log, enc, model = day_setup
    model = ProductivityLSTM(enc.input_dim, 16, (24, 16), output_dim=5, attention_window=attention_window).eval()
    model.load_state_dict(day_setup[2].state_dict())
    events = log.days()[1].events
    stream = StreamingProductivity(model, enc, window=len(events))
    for i in range(0, len(events), chunk):
        result = stream.append("alice", events[i:i + chunk])
        assert result.recomputed_from == 0
        for name, a, b in zip(NAMES, stream.outputs("alice"), _full(model, enc, events[:i + chunk])):
            assert_parity(a, b, F32, name=f"{name} after {i + chunk} events")
    assert result.prediction.patterns == model.predict(events, enc).patterns


def test_streaming_bounded_window(day_setup):
    log, enc, model = day_setup
    events = log.days()[0].events
    stream = StreamingProductivity(model, enc, window=8)
    starts = [stream.append("bob", events[i:i + 4]).recomputed_from for i in range(0, len(events), 4)]
    # the recomputed range never exceeds window + chunk, and only moves forward
    assert starts == sorted(starts) and starts[-1] >= len(events) - 8 - 4
    pattern, forecast, anomaly = stream.outputs("bob")
    assert pattern.shape[0] == len(events) and torch.isfinite(pattern).all() and torch.isfinite(forecast).all()
    full = _full(model, enc, events)
    # the newest step sees the whole cached history; documented approximation elsewhere
    assert (pattern - full[0]).abs().max() < 1.0


def test_streaming_users_and_days(day_setup):
    log, enc, model = day_setup
    day0, day1 = log.days()[0].events, log.days()[1].events
    stream = StreamingProductivity(model, enc, window=1000)
    stream.append("a", day0[:5])
    stream.append("b", day1[:3])
    stream.append("a", day0[5:] + day1[:4])  # crosses midnight: a new day starts
    assert stream.outputs("a")[0].shape[0] == 4 and stream.outputs("b")[0].shape[0] == 3
    assert_parity(stream.outputs("a")[0], _full(model, enc, day1[:4])[0], F32, name="new day")
    with pytest.raises(ValueError, match="earlier"):
        stream.append("a", day0[:1])
    stream.reset("a")
    assert stream.users() == ["b"]


# -- training helpers ---------------------------------------------------------------------


def test_focal_loss_formula():
    logits, targets = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 0.0])
    p = torch.sigmoid(logits)
    p_t = torch.where(targets == 1, p, 1 - p)
    alpha = torch.where(targets == 1, 0.25, 0.75)
    expected = (-alpha * (1 - p_t) ** 2 * torch.log(p_t)).mean()
    torch.testing.assert_close(focal_loss(logits, targets), expected)


def test_train_and_fine_tune(day_setup):
    log, enc, _ = day_setup
    torch.manual_seed(0)
    model = ProductivityLSTM(enc.input_dim, 16, (16, 8), output_dim=5)
    data = ActivityData.from_synthetic(log, enc)
    history = train(model, data, epochs=4, batch_size=16, lr=3e-3, curriculum=(8, 16), progress=False)
    assert [h["length"] for h in history] == [8, 8, 16, 16]
    assert history[-1]["pattern_ce"] < history[0]["pattern_ce"]
    frozen = model.lstm[0].weight_hh_l0.detach().clone()
    head = model.pattern_classifier.weight.detach().clone()
    fine_tune(model, data, epochs=1, batch_size=16, curriculum=(8,), progress=False)
    assert torch.equal(model.lstm[0].weight_hh_l0, frozen)
    assert not torch.equal(model.pattern_classifier.weight, head)
    assert all(p.requires_grad for p in model.parameters())


# -- demo -------------------------------------------------------------------------------------


def test_demo_writes_pngs(tmp_path):
    from fastlstm.demos import productivity as demo

    parser = argparse.ArgumentParser()
    demo.configure(parser)
    args = parser.parse_args(["--days", "3", "--epochs", "1", "--seconds", "0", "--out", str(tmp_path)])
    assert demo.run(args) == 0
    for name in ("patterns_heatmap.png", "anomalies.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


# -- desktop deployment: int8 and the torch-free runtime -----------------------------------------

EXPORT_CASES = {"dense": dict(), "window4": dict(attention_window=4), "window3-global2": dict(attention_window=(3, 1), global_tokens=2)}


@pytest.mark.parametrize("case", EXPORT_CASES, ids=list(EXPORT_CASES))
def test_runtime_fp32_matches_torch(tmp_path, case):
    import fastlstm
    import fastlstm.runtime as rt

    model = ProductivityLSTM(11, 12, (16, 8), output_dim=5, **EXPORT_CASES[case]).eval()
    x = torch.randn(2, 150, 11)  # more queries than the runtime's block of 128
    with torch.no_grad():
        expected = list(model(x))  # weights banded for a window without global tokens, as the runtime's
    path = tmp_path / "model.safetensors"
    fastlstm.export(model, path)
    loaded = rt.load(path)
    for name, got, want in zip(NAMES, loaded(x.numpy()), expected):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=0, err_msg=name)
    for name, got, want in zip(NAMES, loaded(x[1].numpy()), expected):  # unbatched (T, F)
        np.testing.assert_allclose(got, want[1].numpy(), atol=1e-5, rtol=0, err_msg=f"unbatched {name}")
    loaded.layers[-1].need_weights = False
    assert loaded(x[0].numpy())[3] is None


def test_int8_quantize_and_runtime(tmp_path):
    import fastlstm
    import fastlstm.runtime as rt

    ref, fast = _pair(hidden=32, input_dim=11, emb=16)
    x = torch.randn(1, 200, 11)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = fast(x)
        peer = torch.ao.quantization.quantize_dynamic(ref, {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8)(x)
        qmodel = fastlstm.quantize_dynamic(fast, modules={torch.nn.LSTM, torch.nn.Linear})
        assert type(qmodel.lstm[0]).__name__ == "QuantizedLSTM"
        torch_int8 = qmodel(x)
    path = tmp_path / "int8.safetensors"
    fastlstm.export(qmodel, path)
    runtime_int8 = rt.load(path)(x[0].numpy())
    for i, name in enumerate(NAMES[:3]):
        want = expected[i][0].numpy()
        peer_err = float(np.abs(peer[i][0].numpy() - want).max())
        torch_err = float(np.abs(torch_int8[i][0].numpy() - want).max())
        rt_err = float(np.abs(runtime_int8[i] - want).max())
        # the int8 bounds: within 2e-2 and no worse than torch.ao's dynamic int8 of the reference
        # (2x: the runtime also quantises the attention projections torch.ao leaves in fp32)
        assert torch_err <= 2e-2 and torch_err <= 2 * peer_err + 1e-4, (name, torch_err, peer_err)
        assert rt_err <= 2e-2 and rt_err <= 2 * peer_err + 1e-4, (name, rt_err, peer_err)


def test_runtime_does_not_import_torch(tmp_path, python_subprocess):
    import fastlstm

    model = ProductivityLSTM(11, 12, (16, 8), output_dim=5, attention_window=4).eval()
    path = tmp_path / "m.safetensors"
    fastlstm.export(model, path, dtype="int8")
    code = ("import sys, numpy as np, fastlstm.runtime as rt\n"
            f"out = rt.load({str(path)!r})(np.zeros((40, 11), np.float32))\n"
            "assert out[0].shape == (40, 5) and out[1].shape == (11,) and out[3].shape == (40, 9)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = python_subprocess(code)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("T,window,lengths", [(50, (5, 3), None), (150, (64, 64), None), (37, (0, 4), [37, 20]),
                                              (130, (10, 10), [130, 64])])
def test_windowed_attention_fast_path_matches_sparse_attention(T, window, lengths):
    """Inference runs windowed attention through the fused kernel and rebuilds the banded
    weights from its log-sum-exp; SparseAttention's own forward is the reference."""
    from fastlstm.nn.attention import SparseAttention

    torch.manual_seed(3)
    model = ProductivityLSTM(7, 16, (16, 12), output_dim=3, attention_window=window).eval()
    B = 1 if lengths is None else len(lengths)
    x = torch.randn(B, T, 7)
    L = None if lengths is None else torch.tensor(lengths)
    with torch.no_grad():
        h = model.lstm_features(x, None, L)
        mask = None if L is None else torch.arange(T)[None] >= L[:, None]
        want_out, want_w = SparseAttention.forward(model.attention, h, h, h, key_padding_mask=mask)
        got_out, got_w = model.attention(h, h, h, key_padding_mask=mask)
        assert model.attention(h, h, h, key_padding_mask=mask, need_weights=False)[1] is None
    assert got_w.shape == (B, T, window[0] + window[1] + 1)
    torch.testing.assert_close(got_out, want_out, atol=1e-6, rtol=0)
    torch.testing.assert_close(got_w, want_w, atol=1e-6, rtol=0)
