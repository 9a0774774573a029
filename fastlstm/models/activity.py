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

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_sequence

from fastlstm.runtime.events import (  # noqa: F401  (re-exported: the parsing is torch-free)
    FIELDS, PATTERNS, ActivityEvent, ActivityLogError, FeatureEncoder, events_from_columns, read_log, write_csv,
)

class ActivityEncoder(FeatureEncoder):
    """:class:`fastlstm.runtime.events.FeatureEncoder` returning torch tensors, plus
    sliding windows and packing for training.

    >>> enc = ActivityEncoder(apps=["vscode", "slack"])
    >>> enc.encode([("2026-01-05T09:00", "vscode", 600, 0.9)]).shape  # (1, enc.input_dim)
    """

    def encode_events(self, events: Sequence[ActivityEvent], previous: ActivityEvent | None = None) -> Tensor:
        """Features of already-parsed events; ``previous`` is the event before
        the first one (its context), or None at the start of a log."""
        return torch.from_numpy(super().encode_events(events, previous))

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
