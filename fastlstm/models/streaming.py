"""Incremental inference for the productivity model: new events are appended
to a user's day without recomputing the whole day.

What is cached and what is recomputed on each :meth:`StreamingProductivity.append`
of k events to a day of n events (``window`` = W):

* embeddings and the forward direction of the first LSTM layer: cached; only
  the k new steps run, from the cached state. Exact.
* every reverse direction, and the forward direction of layers after the
  first (their input contains reverse outputs, which depend on the future):
  recomputed over the trailing window ``[b, n)``, where ``b`` is the frozen
  boundary (at most W + k steps). Reverse directions start from zero state at
  the newest event; later forward directions start from their state cached at
  ``b``.
* attention: queries ``[b, n)`` against all n keys; heads for those steps.
  Outputs of steps before ``b`` are kept as they were last computed.

After the update ``b`` moves to ``max(b, n - W)``. While W covers the day
(n <= W) nothing is frozen and the outputs equal a full recompute (up to
float rounding; the tests check 1e-5). Beyond that it is an approximation:
frozen steps do not see events that arrived after they left the window, so
their reverse-direction features, and their pattern / anomaly outputs, are
those of a shorter future (at least W events of look-ahead); the forecast and
the newest W steps use all cached history. Cost per append: k + O(W) LSTM
steps and W x n attention scores instead of O(n) steps and n x n scores.

>>> stream = StreamingProductivity(model, encoder, window=128)
>>> result = stream.append("alice", new_events)   # result.prediction covers alice's day so far
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fastlstm.models.activity import ActivityEncoder, ActivityEvent, read_log
from fastlstm.models.productivity import ProductivityLSTM, ProductivityPrediction, _allowed, _prediction
from fastlstm.nn import LSTM
from fastlstm.ops.lstm import lstm as lstm_op


@dataclass
class _UserState:
    day: date | None = None
    last_event: ActivityEvent | None = None
    timestamps: list = field(default_factory=list)
    emb: Tensor | None = None     # (n, E) embeddings
    fwd0: Tensor | None = None    # (n, H0) first layer, forward direction (exact)
    state0: tuple | None = None   # its (h, c) after step n
    frozen: list = field(default_factory=list)  # per later layer: forward (h, c) at step b, or None
    lstm_out: Tensor | None = None  # (n, 2*H_last)
    pattern: Tensor | None = None   # (n, C)
    anomaly: Tensor | None = None   # (n,)
    forecast: Tensor | None = None  # (input_dim,)
    boundary: int = 0


@dataclass
class StreamingResult:
    prediction: ProductivityPrediction  # the whole day so far (attention: None)
    recomputed_from: int                # first step whose outputs this append recomputed
    attention_rows: np.ndarray          # (n - recomputed_from, n) head-averaged weights of those steps


def _run_direction(lstm, x: Tensor, state, reverse: bool):
    """One direction of a single-layer bidirectional fastlstm.LSTM over x (T, I)."""
    suffix = "_reverse" if reverse else ""
    weights = [getattr(lstm, f"{n}_l0{suffix}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    inp = (x.flip(0) if reverse else x).unsqueeze(1)
    hx = None if state is None else (state[0].view(1, 1, -1), state[1].view(1, 1, -1))
    out, h_n, c_n = lstm_op(inp, hx, weights, num_layers=1, bidirectional=False, backend=lstm.backend)
    out = out[:, 0]
    return (out.flip(0) if reverse else out), (h_n[0, 0], c_n[0, 0])


class StreamingProductivity:
    """Per-user cached state for :class:`ProductivityLSTM` inference on live logs.

    ``window``: the trailing number of steps whose reverse direction and
    attention are recomputed on each append (see the module docstring for
    what is exact and what is approximated). ``reset_daily``: a new calendar
    day starts a new sequence.

    >>> stream = StreamingProductivity(model, encoder, window=256)
    >>> stream.append("alice", [("2026-01-05T09:00", "vscode", 600, 0.9)]).prediction.patterns
    """

    def __init__(self, model: ProductivityLSTM, encoder: ActivityEncoder | None = None, *, window: int = 256,
                 reset_daily: bool = True, threshold: float = 0.5):
        if not isinstance(model, ProductivityLSTM):
            raise TypeError(f"StreamingProductivity needs a fastlstm.models.ProductivityLSTM, got {type(model).__name__}")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, got {window!r}")
        if any(type(lstm) is not LSTM for lstm in model.lstm):
            raise TypeError("StreamingProductivity needs the model's fastlstm.LSTM layers (not swapped modules)")
        self.model = model.eval()
        self.encoder = encoder or model.encoder
        if self.encoder is None:
            raise ValueError("StreamingProductivity needs an ActivityEncoder (encoder= or model.encoder)")
        if self.encoder.input_dim != model.input_dim:
            raise ValueError(f"encoder gives {self.encoder.input_dim} features, model expects {model.input_dim}")
        self.window, self.reset_daily, self.threshold = window, reset_daily, threshold
        self._users: dict = {}

    def users(self) -> list:
        return list(self._users)

    def reset(self, user) -> None:
        self._users.pop(user, None)

    def outputs(self, user) -> tuple[Tensor, Tensor, Tensor]:
        """Raw (pattern (n, C), forecast (input_dim,), anomaly logits (n, 1)) of the user's day."""
        s = self._users[user]
        return s.pattern, s.forecast, s.anomaly.unsqueeze(-1)

    @torch.no_grad()
    def append(self, user, events) -> StreamingResult:
        """Add events (records in time order, as :func:`read_log` accepts) to the user's day."""
        events = read_log(events, self.encoder.score_range)
        if not events:
            raise ValueError("append: no events")
        s = self._users.setdefault(user, _UserState())
        if s.last_event is not None and events[0].timestamp < s.last_event.timestamp:
            raise ValueError(f"append: event at {events[0].timestamp} is earlier than the user's last event "
                             f"{s.last_event.timestamp}")
        rows = None
        start = 0
        for i in range(1, len(events) + 1):  # split at midnight when days reset
            if i == len(events) or (self.reset_daily and events[i].timestamp.date() != events[start].timestamp.date()):
                chunk = events[start:i]
                if self.reset_daily and s.day is not None and chunk[0].timestamp.date() != s.day:
                    s = self._users[user] = _UserState()
                first, rows = self._update(s, chunk)
                start = i
        pred = _prediction(s.pattern, s.forecast, s.anomaly, None, s.timestamps, self.encoder,
                           self.threshold)
        return StreamingResult(pred, first, rows.cpu().numpy())

    def _update(self, s: _UserState, events: list[ActivityEvent]):
        model = self.model
        p = model.embedding.weight
        x = self.encoder.encode_events(events, s.last_event).to(p.device, p.dtype)
        s.day = events[0].timestamp.date()
        s.last_event = events[-1]
        s.timestamps.extend(e.timestamp for e in events)
        emb_new = model.embedding(x)
        s.emb = emb_new if s.emb is None else torch.cat([s.emb, emb_new])
        layers = model.lstm
        fwd_new, s.state0 = _run_direction(layers[0], emb_new, s.state0, reverse=False)
        s.fwd0 = fwd_new if s.fwd0 is None else torch.cat([s.fwd0, fwd_new])
        if not s.frozen:
            s.frozen = [None] * (len(layers) - 1)
        n, b = s.emb.shape[0], s.boundary
        b_new = max(b, n - self.window)
        rev, _ = _run_direction(layers[0], s.emb[b:n], None, reverse=True)
        inp = torch.cat([s.fwd0[b:n], rev], dim=-1)
        for layer in range(1, len(layers)):
            inp = model.lstm_dropout(inp)
            lstm, state = layers[layer], s.frozen[layer - 1]
            split = b_new - b
            if split > 0:  # the part that freezes now: its end state is the new boundary state
                y1, state_b = _run_direction(lstm, inp[:split], state, reverse=False)
                y2, _ = _run_direction(lstm, inp[split:], state_b, reverse=False)
                fwd = torch.cat([y1, y2])
                s.frozen[layer - 1] = state_b
            else:
                fwd, _ = _run_direction(lstm, inp, state, reverse=False)
            rev, _ = _run_direction(lstm, inp, None, reverse=True)
            inp = torch.cat([fwd, rev], dim=-1)
        s.lstm_out = inp if b == 0 else torch.cat([s.lstm_out[:b], inp])
        attn_out, rows = self._attention(s.lstm_out, b)
        pattern = model.pattern_classifier(attn_out)
        anomaly = model.anomaly_detector(attn_out)[:, 0]
        s.pattern = pattern if b == 0 else torch.cat([s.pattern[:b], pattern])
        s.anomaly = anomaly if b == 0 else torch.cat([s.anomaly[:b], anomaly])
        s.forecast = model.forecaster(attn_out[-1])
        s.boundary = b_new
        return b, rows

    def _attention(self, z: Tensor, first: int) -> tuple[Tensor, Tensor]:
        """Self-attention outputs of queries ``z[first:]`` over keys ``z`` (eval
        mode), with the model's sparse pattern; also the head-averaged weights."""
        attn = self.model.attention
        heads = attn.num_heads
        E = z.shape[-1]
        d = E // heads
        w, bias = attn.in_proj_weight, attn.in_proj_bias
        q = F.linear(z[first:], w[:E], None if bias is None else bias[:E])
        k = F.linear(z, w[E:2 * E], None if bias is None else bias[E:2 * E])
        v = F.linear(z, w[2 * E:], None if bias is None else bias[2 * E:])
        Tq, Tk = q.shape[0], k.shape[0]
        q = q.view(Tq, heads, d).transpose(0, 1)
        k = k.view(Tk, heads, d).transpose(0, 1)
        v = v.view(Tk, heads, d).transpose(0, 1)
        scores = torch.matmul(q, k.transpose(1, 2)) / math.sqrt(d)
        model = self.model
        if model.attention_window is not None or model.global_tokens:
            allowed = _allowed(Tq, Tk, model.attention_window, model.global_tokens, q_offset=first, device=z.device)
            scores = scores.masked_fill(~allowed, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        out = torch.matmul(weights, v).transpose(0, 1).reshape(Tq, E)
        return F.linear(out, attn.out_proj.weight, attn.out_proj.bias), weights.mean(0)


