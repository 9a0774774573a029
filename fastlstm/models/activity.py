"""Activity logs for the productivity model: parsing, features, windows and a
seeded synthetic log generator.

An event log is a sequence of rows ``(timestamp, app, duration, score)``:
when an application or website became active, which one, how long it stayed
active (seconds) and the user's productivity score for it. Logs come from a
CSV file (header ``timestamp,app,duration,score``) or a list of records
(dicts, tuples or :class:`ActivityEvent`). A bad row raises
:class:`ActivityLogError` naming the row (1-based, header excluded) and field.

Features per event (``ActivityEncoder.feature_names``): app one-hot with an
unknown bucket, normalised duration, time of day and day of week as sine and
cosine, the score, and the previous activity's context (gap since it ended,
whether the app switched, its score and duration).

>>> log = synthetic_activity_log(days=7, seed=0)
>>> enc = ActivityEncoder().fit(log.events); x = enc.encode(log.events)  # (T, enc.input_dim)
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_sequence

FIELDS = ("timestamp", "app", "duration", "score")
PATTERNS = ("focused", "meeting", "communication", "distracted", "break")


class ActivityLogError(ValueError):
    """A row of an activity log is invalid; ``row`` (1-based) and ``field`` say where."""

    def __init__(self, row: int, field: str, message: str, line: int | None = None):
        where = f"row {row}" + (f" (line {line})" if line is not None else "")
        super().__init__(f"activity log {where}, field {field!r}: {message}")
        self.row, self.field, self.line = row, field, line


@dataclass(frozen=True)
class ActivityEvent:
    timestamp: datetime
    app: str
    duration: float  # seconds the app stayed active
    score: float     # the user's productivity score for this activity


def _parse_timestamp(value, row, line) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ActivityLogError(row, "timestamp", f"not a finite number: {value!r}", line)
        return datetime.fromtimestamp(float(value), tz=timezone.utc).replace(tzinfo=None)
    if isinstance(value, str):
        text = value.strip()
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            try:
                return _parse_timestamp(float(text), row, line)
            except ValueError:
                pass
        raise ActivityLogError(row, "timestamp", f"not an ISO date-time or epoch seconds: {value!r}", line)
    raise ActivityLogError(row, "timestamp", f"expected a datetime, ISO string or number, got {type(value).__name__}", line)


def _parse_number(value, name, row, line) -> float:
    if isinstance(value, bool):
        raise ActivityLogError(row, name, "expected a number, got bool", line)
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ActivityLogError(row, name, f"not a number: {value!r}", line) from None
    if not math.isfinite(number):
        raise ActivityLogError(row, name, f"not a finite number: {value!r}", line)
    return number


def _parse_row(values: dict, row: int, line: int | None, score_range, previous: ActivityEvent | None) -> ActivityEvent:
    for name in FIELDS:
        if name not in values or values[name] is None or (isinstance(values[name], str) and not values[name].strip()):
            raise ActivityLogError(row, name, "missing", line)
    ts = _parse_timestamp(values["timestamp"], row, line)
    app = values["app"]
    if not isinstance(app, str):
        raise ActivityLogError(row, "app", f"expected a string id, got {type(app).__name__}", line)
    duration = _parse_number(values["duration"], "duration", row, line)
    if duration < 0:
        raise ActivityLogError(row, "duration", f"must be >= 0 seconds, got {duration}", line)
    score = _parse_number(values["score"], "score", row, line)
    lo, hi = score_range
    if not lo <= score <= hi:
        raise ActivityLogError(row, "score", f"must be within [{lo}, {hi}], got {score}", line)
    if previous is not None and ts < previous.timestamp:
        raise ActivityLogError(row, "timestamp", f"{ts.isoformat()} is earlier than the previous row's "
                               f"{previous.timestamp.isoformat()} (logs must be in time order)", line)
    return ActivityEvent(ts, app.strip(), duration, score)


def read_log(source, score_range: tuple[float, float] = (0.0, 1.0)) -> list[ActivityEvent]:
    """Parse and validate a log: a CSV path / text stream, or a list of records.

    Records may be :class:`ActivityEvent`, dicts with the four fields, or
    4-tuples in field order. Raises :class:`ActivityLogError` on the first bad row.

    >>> read_log([{"timestamp": "2026-01-05T09:00", "app": "vscode", "duration": 600, "score": 0.9}])
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, newline="") as f:
            return _read_csv(f, score_range)
    if isinstance(source, io.IOBase) or hasattr(source, "read"):
        return _read_csv(source, score_range)
    if not isinstance(source, Iterable):
        raise TypeError(f"log must be a CSV path, a text stream or a list of records, got {type(source).__name__}")
    events: list[ActivityEvent] = []
    for i, record in enumerate(source, start=1):
        if isinstance(record, ActivityEvent):
            values = {name: getattr(record, name) for name in FIELDS}
        elif isinstance(record, dict):
            values = record
        elif isinstance(record, (tuple, list)):
            if len(record) != 4:
                raise ActivityLogError(i, "record", f"expected 4 values {FIELDS}, got {len(record)}")
            values = dict(zip(FIELDS, record))
        else:
            raise ActivityLogError(i, "record", f"expected a dict, tuple or ActivityEvent, got {type(record).__name__}")
        events.append(_parse_row(values, i, None, score_range, events[-1] if events else None))
    return events


def _read_csv(stream, score_range) -> list[ActivityEvent]:
    reader = csv.DictReader(stream)
    missing = [name for name in FIELDS if name not in (reader.fieldnames or [])]
    if missing:
        raise ActivityLogError(0, missing[0], f"CSV header lacks column(s) {missing}; got {reader.fieldnames}", 1)
    events: list[ActivityEvent] = []
    for i, values in enumerate(reader, start=1):
        events.append(_parse_row(values, i, reader.line_num, score_range, events[-1] if events else None))
    return events


def write_csv(events: Sequence[ActivityEvent], path) -> None:
    """Write events as a CSV log readable by :func:`read_log`."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        for e in events:
            w.writerow([e.timestamp.isoformat(), e.app, f"{e.duration:.1f}", f"{e.score:.4f}"])


class ActivityEncoder:
    """Turns event logs into model features.

    ``apps``: the known app vocabulary (else learnt by :meth:`fit`, the
    ``max_apps`` most frequent). ``score_range``: the user's score scale,
    mapped to [0, 1]. ``duration_scale``: seconds that map to duration 1.0
    (log scale). ``encode`` returns ``(T, input_dim)`` float32.

    >>> enc = ActivityEncoder(apps=["vscode", "slack"])
    >>> enc.encode([("2026-01-05T09:00", "vscode", 600, 0.9)]).shape  # (1, enc.input_dim)
    """

    CONTEXT = ("duration", "tod_sin", "tod_cos", "dow_sin", "dow_cos", "score",
               "prev_gap", "prev_switched", "prev_score", "prev_duration")

    def __init__(self, apps: Sequence[str] | None = None, *, max_apps: int = 32,
                 score_range: tuple[float, float] = (0.0, 1.0), duration_scale: float = 4 * 3600.0):
        lo, hi = score_range
        if not hi > lo:
            raise ValueError(f"score_range must be (low, high) with high > low, got {score_range}")
        if duration_scale <= 0:
            raise ValueError(f"duration_scale must be > 0, got {duration_scale}")
        self.apps = list(apps) if apps is not None else None
        self.max_apps = max_apps
        self.score_range = (float(lo), float(hi))
        self.duration_scale = float(duration_scale)

    # -- vocabulary --------------------------------------------------------

    def fit(self, log) -> "ActivityEncoder":
        """Learn the app vocabulary from a log (most frequent first)."""
        events = read_log(log, self.score_range)
        counts: dict[str, int] = {}
        for e in events:
            counts[e.app] = counts.get(e.app, 0) + 1
        self.apps = sorted(counts, key=lambda a: (-counts[a], a))[: self.max_apps]
        return self

    def _vocab(self) -> dict[str, int]:
        if self.apps is None:
            raise RuntimeError("ActivityEncoder has no app vocabulary: pass apps= or call fit(log) first")
        return {a: i for i, a in enumerate(self.apps)}

    @property
    def input_dim(self) -> int:
        return len(self._vocab()) + 1 + len(self.CONTEXT)

    @property
    def feature_names(self) -> list[str]:
        return [f"app={a}" for a in self._vocab()] + ["app=<unknown>"] + list(self.CONTEXT)

    @property
    def score_index(self) -> int:
        return len(self._vocab()) + 1 + self.CONTEXT.index("score")

    def score_from_feature(self, value: float) -> float:
        lo, hi = self.score_range
        return lo + float(value) * (hi - lo)

    def to_dict(self) -> dict:
        return dict(apps=list(self._vocab()), max_apps=self.max_apps, score_range=list(self.score_range),
                    duration_scale=self.duration_scale)

    @classmethod
    def from_dict(cls, d: dict) -> "ActivityEncoder":
        return cls(d["apps"], max_apps=d["max_apps"], score_range=tuple(d["score_range"]),
                   duration_scale=d["duration_scale"])

    # -- features ------------------------------------------------------------

    def _duration(self, seconds: float) -> float:
        return math.log1p(max(seconds, 0.0)) / math.log1p(self.duration_scale)

    def encode_events(self, events: Sequence[ActivityEvent], previous: ActivityEvent | None = None) -> Tensor:
        """Features of already-parsed events; ``previous`` is the event before
        the first one (its context), or None at the start of a log."""
        vocab = self._vocab()
        V = len(vocab)
        lo, hi = self.score_range
        out = np.zeros((len(events), V + 1 + len(self.CONTEXT)), dtype=np.float32)
        for t, e in enumerate(events):
            out[t, vocab.get(e.app, V)] = 1.0
            seconds = e.timestamp.hour * 3600 + e.timestamp.minute * 60 + e.timestamp.second
            tod = 2 * math.pi * seconds / 86400.0
            dow = 2 * math.pi * e.timestamp.weekday() / 7.0
            score = (e.score - lo) / (hi - lo)
            ctx = [self._duration(e.duration), math.sin(tod), math.cos(tod), math.sin(dow), math.cos(dow), score,
                   0.0, 0.0, 0.0, 0.0]
            if previous is not None:
                end = previous.timestamp + timedelta(seconds=previous.duration)
                gap = (e.timestamp - end).total_seconds()
                ctx[6:] = [self._duration(max(gap, 0.0)), float(e.app != previous.app),
                           (previous.score - lo) / (hi - lo), self._duration(previous.duration)]
            out[t, V + 1:] = ctx
            previous = e
        return torch.from_numpy(out)

    def encode(self, log) -> Tensor:
        """(T, input_dim) float32 features of a log (CSV path, stream or records)."""
        return self.encode_events(read_log(log, self.score_range))

    @staticmethod
    def windows(features: Tensor, length: int, stride: int | None = None) -> Tensor:
        """Sliding windows ``(N, length, F)`` over ``(T, F)`` features (the last
        window is aligned to the end so no event is dropped)."""
        if length <= 0:
            raise ValueError(f"window length must be > 0, got {length}")
        stride = stride or length
        if stride <= 0:
            raise ValueError(f"stride must be > 0, got {stride}")
        T = features.shape[0]
        if T < length:
            raise ValueError(f"log has {T} events, fewer than the window length {length}")
        starts = list(range(0, T - length + 1, stride))
        if starts[-1] != T - length:
            starts.append(T - length)
        return torch.stack([features[s:s + length] for s in starts])

    def pack(self, logs: Sequence) -> PackedSequence:
        """Variable-length logs (e.g. one per day) as a PackedSequence, batch order kept."""
        seqs = [self.encode(log) for log in logs]
        if any(s.shape[0] == 0 for s in seqs):
            raise ValueError("cannot pack an empty log")
        return pack_sequence(seqs, enforce_sorted=False)


# --------------------------------------------------------------------------
# Synthetic logs
# --------------------------------------------------------------------------

_APPS = {
    "focused": (["vscode", "terminal", "docs", "figma"], 0.85),
    "meeting": (["zoom", "calendar"], 0.6),
    "communication": (["slack", "email"], 0.5),
    "distracted": (["twitter", "youtube", "reddit", "news"], 0.1),
    "break": (["idle"], 0.3),
}


@dataclass
class SyntheticLog:
    """A generated log with its ground truth: per-event pattern label (index
    into PATTERNS) and planted-anomaly flag, plus a description of each anomaly."""

    events: list[ActivityEvent]
    patterns: np.ndarray
    anomalies: np.ndarray
    planted: list[str] = field(default_factory=list)

    def days(self) -> list["SyntheticLog"]:
        """The log split per calendar day."""
        out, start = [], 0
        for i in range(1, len(self.events) + 1):
            if i == len(self.events) or self.events[i].timestamp.date() != self.events[start].timestamp.date():
                out.append(SyntheticLog(self.events[start:i], self.patterns[start:i], self.anomalies[start:i]))
                start = i
        return out


def synthetic_activity_log(days: int = 14, *, seed: int = 0, start: datetime | None = None,
                           anomalies: int | None = None) -> SyntheticLog:
    """A realistic, seeded activity log of one user.

    Weekdays follow a routine (email first, focus blocks, a 10:00 stand-up,
    lunch, meetings on Tuesday and Thursday afternoons, wrap-up); habits such as
    social media after meetings (70 %) and a distracted slump after lunch;
    weekends are short and leisurely. ``anomalies`` (default one per 5 days)
    are planted: late-night work, a video binge in a focus block, a long
    session in an app never seen before.

    >>> log = synthetic_activity_log(days=14, seed=1)
    >>> len(log.events), int(log.anomalies.sum())
    """
    rng = np.random.default_rng(seed)
    start = start or datetime(2026, 1, 5)  # a Monday
    n_anomalies = max(1, days // 5) if anomalies is None else anomalies
    anomaly_days = set(rng.choice(np.arange(days), size=min(n_anomalies, days), replace=False).tolist())
    events, labels, flags, planted = [], [], [], []

    def block(t: datetime, until: datetime, kind: str, anomalous: bool = False, apps=None) -> datetime:
        names, base = _APPS[kind]
        names = apps or names
        while t < until:
            dur = float(min(rng.uniform(4, 20) * 60, (until - t).total_seconds()))
            if dur < 30:
                break
            score = float(np.clip(base + rng.normal(0, 0.05), 0.0, 1.0))
            events.append(ActivityEvent(t, str(rng.choice(names)), round(dur, 1), round(score, 4)))
            labels.append(PATTERNS.index(kind))
            flags.append(anomalous)
            t = t + timedelta(seconds=dur + float(rng.uniform(0, 90)))
        return t

    def at(day: datetime, hour: float) -> datetime:
        return day + timedelta(hours=hour + float(rng.normal(0, 0.08)))

    for d in range(days):
        day = start + timedelta(days=d)
        weekday = day.weekday() < 5
        special = rng.choice(3) if d in anomaly_days else None
        if special == 0:  # late-night work the night before
            n0 = len(events)
            block(day + timedelta(hours=2, minutes=int(rng.integers(0, 40))), day + timedelta(hours=4), "focused", True)
            planted.append(f"{day.date()} 02:00 late-night work ({len(events) - n0} events)")
        if weekday:
            t = at(day, 8.75)
            t = block(t, max(t, at(day, 9.2)), "communication")
            if special == 1:  # a video binge instead of the morning focus block
                n0 = len(events)
                t = block(t, at(day, 10.0), "distracted", True, apps=["youtube"])
                planted.append(f"{day.date()} 09:15 video binge ({len(events) - n0} events)")
            else:
                t = block(t, at(day, 10.0), "focused")
            t = block(max(t, at(day, 10.0)), at(day, 10.3), "meeting")
            if rng.random() < 0.7:  # habit: social media after meetings
                t = block(t, t + timedelta(minutes=float(rng.uniform(8, 20))), "distracted", apps=["twitter", "reddit"])
            t = block(t, at(day, 12.0), "focused")
            t = block(max(t, at(day, 12.0)), at(day, 13.0), "break")
            if rng.random() < 0.5:  # post-lunch slump
                t = block(t, t + timedelta(minutes=float(rng.uniform(10, 25))), "distracted")
            if day.weekday() in (1, 3):
                t = block(max(t, at(day, 14.0)), at(day, 15.0), "meeting")
                if rng.random() < 0.7:
                    t = block(t, t + timedelta(minutes=float(rng.uniform(8, 20))), "distracted", apps=["twitter", "reddit"])
            if special == 2:  # hours in an app never seen before
                n0 = len(events)
                t = block(t, t + timedelta(hours=1.5), "distracted", True, apps=["crypto-trader"])
                planted.append(f"{day.date()} afternoon unknown app ({len(events) - n0} events)")
            t = block(t, at(day, 16.5), "focused")
            t = block(max(t, at(day, 16.5)), at(day, 17.5), "communication")
        else:
            t = at(day, 10.5)
            t = block(t, at(day, 11.5), "distracted")
            t = block(t, at(day, 12.0), "communication")
            t = block(max(t, at(day, 20.0)), at(day, 21.0), "distracted")
    return SyntheticLog(events, np.asarray(labels, dtype=np.int64), np.asarray(flags, dtype=bool), planted)
