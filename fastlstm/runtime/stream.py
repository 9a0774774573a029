"""Incremental inference of one user's day on the torch-free runtime (the same
scheme as ``fastlstm.models.StreamingProductivity``, on the runtime's layers).

On each :meth:`ActivityStream.append` of k events to a day of n events, with
the window W:

* features, embeddings, the first Bi-LSTM layer's forward direction and the
  attention keys/values of frozen steps are cached; only new steps run. Exact.
* every reverse direction, later layers' forward directions (from their state
  cached at the boundary ``b``), attention queries ``[b, n)`` and the heads are
  recomputed over the trailing ``n - b <= W + k`` steps.

``b`` then moves to ``max(b, n - W)``. While the day fits in W the result
equals a full recompute (float rounding; tested to 1e-4). Beyond it, steps
before ``b`` keep the outputs they had when they left the window (at least W
events of look-ahead). Cost per append: k + O(W) LSTM steps; attention
O(W x (W + window)) scores with a windowed model, O(W x n) with dense attention.
The returned prediction covers the whole day, so assembling it (softmax, spans)
is O(n) array work on top, no model work.

>>> stream = fastlstm.runtime.ProductivityApp.load(path).stream(window=256)
>>> pred = stream.append([("2026-01-05T09:00", "vscode", 600, 0.9)])
"""

from __future__ import annotations

import numpy as np

from fastlstm.runtime.app import ProductivityPrediction, make_prediction
from fastlstm.runtime.productivity import _allowed


class _Rows:
    """A growable (n, width) float32 array: appending k rows costs O(k) amortised."""

    def __init__(self, width: int) -> None:
        self.data = np.empty((16, width), np.float32)
        self.n = 0

    def truncate(self, n: int) -> "_Rows":
        self.n = min(self.n, n)
        return self

    def extend(self, rows: np.ndarray) -> None:
        k = rows.shape[0]
        if self.n + k > self.data.shape[0]:
            grown = np.empty((max(2 * self.data.shape[0], self.n + k), self.data.shape[1]), np.float32)
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        self.data[self.n : self.n + k] = rows
        self.n += k

    def view(self, start: int = 0) -> np.ndarray:
        return self.data[start : self.n]


class ActivityStream:
    """One user's day, updated as events arrive; ``append`` returns the day's prediction.

    ``recomputed_from``: the first step the last append recomputed (steps before it were kept).
    """

    def __init__(self, app, *, window: int, reset_daily: bool = True) -> None:
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise ValueError(f"stream: window must be a positive int, got {window!r}")
        self.app, self.window, self.reset_daily = app, window, reset_daily
        self.recomputed_from = 0
        self.reset()

    def reset(self) -> None:
        app = self.app
        E, width = app.embedding.out_features, app.head.E
        self.day = self.last_event = None
        self.timestamps: list = []
        self.emb = _Rows(E)
        self.fwd0 = _Rows(app.lstms[0].P)
        self.state0 = None
        self.frozen = [None] * (len(app.lstms) - 1)
        self.lstm_out, self.keys, self.values = _Rows(width), _Rows(width), _Rows(width)
        self.pattern = _Rows(app.head.config["output_dim"])
        self.anomaly = _Rows(1)
        self.forecast = None
        self.boundary = 0

    def __len__(self) -> int:
        return self.emb.n

    def append(self, log) -> ProductivityPrediction:
        """Adds events (in time order, after the last one) and returns the prediction for the day so far."""
        events = self.app.events(log)
        if not events:
            raise ValueError("append: no events")
        if self.last_event is not None and events[0].timestamp < self.last_event.timestamp:
            raise ValueError(f"append: event at {events[0].timestamp} is earlier than the last event "
                             f"{self.last_event.timestamp}")
        start = 0
        for i in range(1, len(events) + 1):  # a new calendar day starts a new sequence
            if i == len(events) or (self.reset_daily and events[i].timestamp.date() != events[start].timestamp.date()):
                chunk = events[start:i]
                if self.reset_daily and self.day is not None and chunk[0].timestamp.date() != self.day:
                    self.reset()
                self._update(chunk)
                start = i
        return self.prediction()

    def prediction(self) -> ProductivityPrediction:
        if self.forecast is None:
            raise ValueError("stream: no events yet")
        return make_prediction(self.pattern.view(), self.forecast, self.anomaly.view()[:, 0], None,
                               self.timestamps, self.app.encoder, self.app.threshold)

    def _update(self, events) -> None:
        app = self.app
        x = app.encoder.encode_events(events, self.last_event)
        self.day, self.last_event = events[0].timestamp.date(), events[-1]
        self.timestamps.extend(e.timestamp for e in events)
        emb_new, _ = app.embedding.run(x)
        self.emb.extend(emb_new)
        first = app.lstms[0]
        fwd_new, self.state0 = first.run_direction(0, 0, emb_new, self.state0)
        self.fwd0.extend(fwd_new)
        n, b = self.emb.n, self.boundary
        b_new = max(b, n - self.window)
        rev, _ = first.run_direction(0, 1, self.emb.view(b), None, reverse=True)
        inp = np.concatenate([self.fwd0.view(b), rev], axis=1)
        for layer, lstm in enumerate(app.lstms[1:]):
            state, split = self.frozen[layer], b_new - b
            if split > 0:  # the part that freezes now: its end state is the new boundary's
                y1, state_b = lstm.run_direction(0, 0, inp[:split], state)
                y2, _ = lstm.run_direction(0, 0, inp[split:], state_b)  # split < len(inp): W >= 1
                fwd = np.concatenate([y1, y2])
                self.frozen[layer] = state_b
            else:
                fwd, _ = lstm.run_direction(0, 0, inp, state)
            rev, _ = lstm.run_direction(0, 1, inp, None, reverse=True)
            inp = np.concatenate([fwd, rev], axis=1)
        self.lstm_out.truncate(b).extend(inp)
        ctx = self._attention(inp, b)
        head = app.head
        heads = np.matmul(ctx, head._heads_w).sum(axis=0) + head._heads_b  # (n - b, C + 1)
        C = head.config["output_dim"]
        self.pattern.truncate(b).extend(heads[:, :C])
        self.anomaly.truncate(b).extend(heads[:, C:])
        self.forecast = np.matmul(ctx[:, -1:], head._forecast_w).sum(axis=0)[0] + head._forecast_b
        self.recomputed_from, self.boundary = b, b_new

    def _attention(self, z: np.ndarray, first: int) -> np.ndarray:
        """Per-head attention output (H, n - first, d) of queries ``z`` (steps ``first..n``)."""
        head = self.app.head
        E, H = head.E, head.heads
        d = E // H
        qkv, _ = head.linears["in_proj"].run(z)
        q = qkv[:, :E]
        self.keys.truncate(first).extend(qkv[:, E : 2 * E])
        self.values.truncate(first).extend(qkv[:, 2 * E :])
        n = self.keys.n
        k0 = 0
        if head.window is not None and not head.global_tokens:
            k0 = max(0, first - head.window[0])  # keys no query in [first, n) can reach are not read
        k, v = self.keys.view(k0), self.values.view(k0)
        qh = q.reshape(-1, H, d).transpose(1, 0, 2)
        kh = k.reshape(-1, H, d).transpose(1, 0, 2)
        vh = v.reshape(-1, H, d).transpose(1, 0, 2)
        scores = np.matmul(qh, kh.transpose(0, 2, 1)) * np.float32(1.0 / np.sqrt(d))
        if head.window is not None or head.global_tokens:
            allowed = _allowed(np.arange(first, n), np.arange(k0, n), head.window, head.global_tokens)
            scores[:, ~allowed] = -np.inf
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        return np.matmul(scores, vh)
