"""Activity events and their features, torch-free: what the desktop app feeds the
runtime. ``fastlstm.models.activity`` builds on these (its encoder returns tensors).

An event log is a sequence of rows ``(timestamp, app, duration, score)``:
when an application or website became active, which one, how long it stayed
active (seconds) and the user's productivity score for it. Logs come from a
CSV file (header ``timestamp,app,duration,score``), a list of records (dicts,
tuples or :class:`ActivityEvent`) or columns (:func:`events_from_columns`). A
bad row raises :class:`ActivityLogError` naming the row (1-based) and field.

>>> enc = FeatureEncoder(apps=["vscode", "slack"])
>>> x = enc.encode([("2026-01-05T09:00", "vscode", 600, 0.9)])  # numpy (1, enc.input_dim)
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable, Sequence

import numpy as np

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


def events_from_columns(timestamps, apps, durations, scores,
                        score_range: tuple[float, float] = (0.0, 1.0)) -> list[ActivityEvent]:
    """Events from four equally long columns (timestamps as datetimes, ISO strings or epoch
    seconds; app ids; durations in seconds; scores), validated like :func:`read_log`.

    >>> events_from_columns([1767600000, 1767600600], ["vscode", "slack"], [600, 60], [0.9, 0.5])
    """
    columns = [list(c) for c in (timestamps, apps, durations, scores)]
    if len({len(c) for c in columns}) != 1:
        raise ValueError(f"events_from_columns: columns have different lengths {[len(c) for c in columns]}")
    return read_log(list(zip(*columns)), score_range)


_MAX_APPS = 1 << 16


def _plain_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class FeatureEncoder:
    """Turns event logs into model features.

    ``apps``: the known app vocabulary (else learnt by :meth:`fit`, the
    ``max_apps`` most frequent). ``score_range``: the user's score scale,
    mapped to [0, 1]. ``duration_scale``: seconds that map to duration 1.0
    (log scale). ``encode`` returns ``(T, input_dim)`` float32.

    >>> enc = FeatureEncoder(apps=["vscode", "slack"])
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
        self.window: int | None = None  # the streaming window stored with an exported model

    # -- vocabulary --------------------------------------------------------

    def fit(self, log) -> "FeatureEncoder":
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
    def from_dict(cls, d: dict) -> "FeatureEncoder":
        return cls(d["apps"], max_apps=d["max_apps"], score_range=tuple(d["score_range"]),
                   duration_scale=d["duration_scale"])


    # -- the exported file's ``encoder`` field --------------------------------

    _CONFIG_KEYS = {"apps", "max_apps", "score_range", "duration_scale", "window"}

    def to_config(self) -> dict:
        """The JSON stored with an exported model (``window``: the streaming window in steps, or None)."""
        return dict(self.to_dict(), window=self.window)

    @classmethod
    def from_config(cls, config) -> "FeatureEncoder":
        """The encoder of an exported file (untrusted input): every field checked, ValueError naming it."""
        where = "runtime model: config field 'encoder"
        if not isinstance(config, dict) or set(config) != cls._CONFIG_KEYS:
            got = sorted(config) if isinstance(config, dict) else type(config).__name__
            raise ValueError(f"{where}' must hold exactly {sorted(cls._CONFIG_KEYS)}, got {got}"[:300])
        apps = config["apps"]
        if (not isinstance(apps, list) or len(apps) > _MAX_APPS or len(set(map(str, apps))) != len(apps)
                or not all(isinstance(a, str) and 0 < len(a) <= 256 for a in apps)):
            raise ValueError(f"{where}.apps' must be a list of at most {_MAX_APPS} distinct non-empty strings")
        max_apps, window = config["max_apps"], config["window"]
        if not _plain_int(max_apps) or not len(apps) <= max_apps <= _MAX_APPS:
            raise ValueError(f"{where}.max_apps' must be an int in [{len(apps)}, {_MAX_APPS}], got {max_apps!r}")
        if window is not None and (not _plain_int(window) or not 1 <= window <= 1 << 20):
            raise ValueError(f"{where}.window' must be null or an int in [1, 2**20], got {window!r}"[:300])
        rng, scale = config["score_range"], config["duration_scale"]
        if (not isinstance(rng, list) or len(rng) != 2 or not all(_finite(v) for v in rng) or not rng[1] > rng[0]):
            raise ValueError(f"{where}.score_range' must be [low, high] finite numbers, high > low, got {rng!r}"[:300])
        if not _finite(scale) or not scale > 0:
            raise ValueError(f"{where}.duration_scale' must be a finite number > 0, got {scale!r}"[:300])
        enc = cls(apps, max_apps=max_apps, score_range=tuple(rng), duration_scale=scale)
        enc.window = window
        return enc

    # -- features ------------------------------------------------------------

    def _duration(self, seconds: float) -> float:
        return math.log1p(max(seconds, 0.0)) / math.log1p(self.duration_scale)

    def encode_events(self, events: Sequence[ActivityEvent], previous: ActivityEvent | None = None) -> np.ndarray:
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
        return out

    def encode(self, log) -> np.ndarray:
        """(T, input_dim) float32 features of a log (CSV path, stream or records)."""
        return self.encode_events(read_log(log, self.score_range))
