"""The desktop app's API, torch-free: raw activity events -> features -> model
outputs -> pattern labels, anomaly spans and the next period's forecast.

A file from ``ProductivityLSTM.save_pretrained`` (or ``fastlstm.export`` of a
model with an ``encoder``) holds the model and its encoder (app vocabulary,
score range, duration scale, streaming window), so the app needs nothing else:

>>> app = fastlstm.runtime.ProductivityApp.load("productivity.safetensors")
>>> pred = app.predict([("2026-01-05T09:00", "vscode", 600, 0.9), ...])
>>> pred.patterns[:3], pred.forecast, pred.anomalies
>>> stream = app.stream(); stream.append(new_events)   # incremental, see fastlstm.runtime.stream
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from fastlstm.runtime.events import PATTERNS, ActivityEvent, FeatureEncoder, read_log
from fastlstm.runtime.layers import Linear, LSTMStack
from fastlstm.runtime.model import Model, load
from fastlstm.runtime.productivity import ProductivityHead


@dataclass
class AnomalySpan:
    start: int          # first step (inclusive)
    end: int            # last step (inclusive)
    peak: float         # highest anomaly probability in the span
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass
class ProductivityPrediction:
    """What ``predict`` returns for one log of T events (torch model and runtime alike)."""

    timestamps: list            # T datetimes (empty when features were given)
    patterns: list[str]         # T pattern labels
    pattern_ids: np.ndarray     # (T,) int
    pattern_probs: np.ndarray   # (T, output_dim)
    forecast: float | None      # next period's productivity, in the encoder's score units
    forecast_features: np.ndarray  # (input_dim,) the forecaster's raw output
    anomaly_scores: np.ndarray  # (T,) probabilities
    anomalies: list[AnomalySpan]
    attention: np.ndarray | None  # (T, T) head-averaged weights (row: query step)


def anomaly_spans(scores: np.ndarray, threshold: float, timestamps=()) -> list[AnomalySpan]:
    """Maximal runs of steps whose anomaly probability is >= ``threshold``."""
    spans, start = [], None
    for t, flagged in enumerate(list(np.asarray(scores) >= threshold) + [False]):
        if flagged and start is None:
            start = t
        elif not flagged and start is not None:
            span = AnomalySpan(start, t - 1, float(np.max(scores[start:t])))
            if timestamps:
                span.start_time, span.end_time = timestamps[start], timestamps[t - 1]
            spans.append(span)
            start = None
    return spans


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


def make_prediction(pattern, forecast, anomaly, attention, timestamps, encoder: FeatureEncoder | None,
                    threshold: float) -> ProductivityPrediction:
    """Labels, spans and the forecast from raw outputs: pattern logits (T, C), forecast (F,),
    anomaly logits (T,), attention (T, T) or None."""
    pattern = np.asarray(pattern, dtype=np.float32)
    z = pattern - pattern.max(axis=-1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=-1, keepdims=True)
    ids = probs.argmax(-1)
    names = [PATTERNS[i] if i < len(PATTERNS) else f"pattern{i}" for i in ids]
    scores = _sigmoid(np.asarray(anomaly, dtype=np.float32).reshape(-1))
    fvec = np.asarray(forecast, dtype=np.float32)
    value = None
    if encoder is not None and fvec.shape[0] == encoder.input_dim:
        value = encoder.score_from_feature(float(np.clip(fvec[encoder.score_index], 0.0, 1.0)))
    return ProductivityPrediction(
        timestamps=list(timestamps), patterns=names, pattern_ids=ids, pattern_probs=probs, forecast=value,
        forecast_features=fvec, anomaly_scores=scores, anomalies=anomaly_spans(scores, threshold, timestamps),
        attention=None if attention is None else np.asarray(attention, dtype=np.float32),
    )


def dense_weights(band: np.ndarray | None, window, T: int) -> np.ndarray | None:
    """(T, T) weights from the head's banded (T, left + right + 1) ones (``window`` = its
    ``band_window(T)``); dense weights come back as they are."""
    if band is None or window is None:
        return band
    left, right = window
    rows = np.arange(T)[:, None]
    cols = rows - left + np.arange(left + right + 1)[None, :]
    ok = (cols >= 0) & (cols < T)
    out = np.zeros((T, T), np.float32)
    out[np.broadcast_to(rows, cols.shape)[ok], cols[ok]] = band[ok]
    return out


class ProductivityApp:
    """A loaded productivity model with its encoder; numpy and ``fastlstm._C`` only.

    ``threshold``: anomaly probability at which steps are flagged.
    """

    def __init__(self, model: Model, *, threshold: float = 0.5) -> None:
        layers = model.layers
        if (len(layers) < 3 or not isinstance(layers[0], Linear) or not isinstance(layers[-1], ProductivityHead)
                or not all(isinstance(lstm, LSTMStack) and lstm.num_layers == 1 and lstm.bidirectional
                           and not lstm.proj_size for lstm in layers[1:-1])):
            raise ValueError("ProductivityApp: the file does not hold a ProductivityLSTM export "
                             "(linear, one-layer Bi-LSTMs, productivity_head)")
        if model.encoder is None:
            raise ValueError("ProductivityApp: the file holds no encoder; save it with "
                             "ProductivityLSTM.save_pretrained or export a model with an encoder")
        self.model, self.encoder, self.threshold = model, model.encoder, float(threshold)
        self.embedding, self.lstms, self.head = layers[0], layers[1:-1], layers[-1]

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs) -> "ProductivityApp":
        return cls(load(path), **kwargs)

    def events(self, log) -> list[ActivityEvent]:
        """Parsed, validated events (CSV path or stream, records; see ``read_log``)."""
        return read_log(log, self.encoder.score_range)

    def features(self, log) -> np.ndarray:
        """(T, input_dim) float32 features of a log."""
        return self.encoder.encode_events(self.events(log))

    def outputs(self, features: np.ndarray, lengths=None, *, need_weights: bool = False):
        """Raw outputs of ``(T, F)`` or a padded batch ``(B, T, F)`` with ``lengths`` (B,) (variable-length
        days; each sequence runs on its own length, outputs past it are zero). Returns pattern logits,
        forecast (from each sequence's last real step), anomaly logits and (dense) attention or None."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim == 2:
            if lengths is not None:
                raise ValueError("outputs: lengths needs a batch (B, T, F)")
            return self._one(x, need_weights)
        if x.ndim != 3 or x.shape[-1] != self.encoder.input_dim:
            raise ValueError(f"outputs: features must be (T, {self.encoder.input_dim}) or (B, T, "
                             f"{self.encoder.input_dim}), got {x.shape}")
        B, T = x.shape[:2]
        lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
        if lengths.shape != (B,) or lengths.dtype.kind not in "iu" or (B and not 1 <= lengths.min() <= lengths.max() <= T):
            raise ValueError(f"outputs: lengths must be ({B},) ints in [1, {T}], got {lengths!r}"[:300])
        C = self.head.config["output_dim"]
        pattern = np.zeros((B, T, C), np.float32)
        forecast = np.zeros((B, self.head.config["forecast_dim"]), np.float32)
        anomaly = np.zeros((B, T), np.float32)
        attn = np.zeros((B, T, T), np.float32) if need_weights else None
        for b in range(B):
            n = int(lengths[b])
            p, f, a, w = self._one(x[b, :n], need_weights)
            pattern[b, :n], forecast[b], anomaly[b, :n] = p, f, a
            if need_weights:
                attn[b, :n, :n] = w
        return pattern, forecast, anomaly, attn

    def _one(self, x: np.ndarray, need_weights: bool):
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"outputs: expected (T > 0, input_dim) features, got {x.shape}")
        h, _ = self.embedding.run(x)
        for lstm in self.lstms:
            h, _ = lstm.run(h)
        pattern, forecast, anomaly, attn = self.head.outputs(np.ascontiguousarray(h), need_weights)
        return pattern, forecast, anomaly[:, 0], dense_weights(attn, self.head.band_window(x.shape[0]), x.shape[0])

    def predict(self, log, *, need_weights: bool = False) -> ProductivityPrediction:
        """Pattern labels, anomaly spans and the forecast for one log (events as ``read_log`` takes,
        or ``(T, input_dim)`` features)."""
        if isinstance(log, np.ndarray):
            timestamps, x = [], log
        else:
            events = self.events(log)
            if not events:
                raise ValueError("predict: the log has no events")
            timestamps, x = [e.timestamp for e in events], self.encoder.encode_events(events)
        pattern, forecast, anomaly, attn = self.outputs(x, need_weights=need_weights)
        return make_prediction(pattern, forecast, anomaly, attn, timestamps, self.encoder, self.threshold)

    def stream(self, *, window: int | None = None, reset_daily: bool = True):
        """An incremental predictor of one user's day (:class:`fastlstm.runtime.stream.ActivityStream`);
        ``window`` defaults to the file's (else 256)."""
        from fastlstm.runtime.stream import ActivityStream

        return ActivityStream(self, window=window or self.encoder.window or 256, reset_daily=reset_daily)
