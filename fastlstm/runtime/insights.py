"""Product features over the model's outputs (torch-free): habit detection,
a per-user anomaly baseline and optimal-focus-time suggestions.

Each works on what ``predict`` returns (:class:`ProductivityPrediction`: per-event
timestamps, pattern labels and probabilities, anomaly probabilities), one per day,
from the runtime app or the torch model alike.

>>> days = [app.predict(day_events) for day_events in history]
>>> detect_habits(days)                     # e.g. Habit('distracted' after 'meeting', support 0.7)
>>> baseline = AnomalyBaseline().fit(days); baseline.alerts(app.predict(today))
>>> suggest_focus_times(days)               # the hours the user is most reliably focused
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from fastlstm.runtime.app import AnomalySpan, ProductivityPrediction
from fastlstm.runtime.events import PATTERNS


@dataclass(frozen=True)
class Habit:
    """``pattern`` recurs ``after`` another pattern (kind "after"), or at an hour of the day (kind "at").

    ``support``: for "after", the share of ``after`` segments followed by ``pattern``; for "at", the
    share of active days with ``pattern`` in that hour. ``days``: days on which it occurred."""

    kind: str
    pattern: str
    after: str | None
    hour: int | None
    support: float
    days: int


def _segments(labels) -> list[tuple[str, int]]:
    """Runs of equal labels as (label, first index)."""
    out = []
    for i, label in enumerate(labels):
        if not out or out[-1][0] != label:
            out.append((label, i))
    return out


def detect_habits(days: list[ProductivityPrediction], *, min_support: float = 0.5, min_days: int = 3) -> list[Habit]:
    """Recurring behaviours across ``days`` (one prediction per day), strongest first.

    "after" habits: pattern B directly follows a segment of pattern A in at least ``min_support``
    of A's segments, on at least ``min_days`` days ("social media after meetings"). "at" habits:
    a pattern occurs in the same hour of the day on at least ``min_support`` of the days active in
    that hour, and on at least ``min_days`` days.
    """
    if not 0 < min_support <= 1 or min_days < 1:
        raise ValueError(f"detect_habits: min_support in (0, 1] and min_days >= 1, got {min_support}, {min_days}")
    follows, seen = defaultdict(int), defaultdict(int)
    follow_days, slot_days, active_days = defaultdict(set), defaultdict(set), defaultdict(set)
    for d, pred in enumerate(days):
        segs = _segments(pred.patterns)
        for (a, _), (b, _) in zip(segs, segs[1:]):
            follows[a, b] += 1
            follow_days[a, b].add(d)
        for a, _ in segs[:-1]:
            seen[a] += 1
        for t, label in zip(pred.timestamps, pred.patterns):
            slot_days[label, t.hour].add(d)
            active_days[t.hour].add(d)
    habits = [Habit("after", b, a, None, count / seen[a], len(follow_days[a, b]))
              for (a, b), count in follows.items() if count / seen[a] >= min_support and len(follow_days[a, b]) >= min_days]
    habits += [Habit("at", label, None, hour, len(ds) / len(active_days[hour]), len(ds))
               for (label, hour), ds in slot_days.items()
               if len(ds) / len(active_days[hour]) >= min_support and len(ds) >= min_days]
    return sorted(habits, key=lambda h: (-h.support, -h.days, h.kind, h.pattern, h.after or "", h.hour or 0))


class AnomalyBaseline:
    """One user's normal anomaly scores, per hour of the day: robust centre (median) and spread
    (MAD, floored at ``min_spread``). A step is unusual for this user when its score exceeds
    ``median + k * spread`` of its hour (the whole history's where the hour has < ``min_samples``).

    >>> baseline = AnomalyBaseline(k=4).fit(history_predictions)
    >>> baseline.alerts(today_prediction)      # AnomalySpans unusual for this user
    """

    def __init__(self, *, k: float = 4.0, min_spread: float = 0.02, min_samples: int = 20, min_steps: int = 1):
        if not k > 0 or not min_spread > 0 or min_samples < 1 or min_steps < 1:
            raise ValueError("AnomalyBaseline: k and min_spread must be > 0, min_samples and min_steps >= 1")
        self.k, self.min_spread, self.min_samples, self.min_steps = k, min_spread, min_samples, min_steps
        self.scores: dict[int, list[float]] = defaultdict(list)

    def update(self, pred: ProductivityPrediction) -> "AnomalyBaseline":
        """Adds a day's scores to the history (call after the day, e.g. at midnight)."""
        if len(pred.timestamps) != len(pred.anomaly_scores):
            raise ValueError("AnomalyBaseline: the prediction needs timestamps (predict from events)")
        for t, s in zip(pred.timestamps, pred.anomaly_scores):
            self.scores[t.hour].append(float(s))
        return self

    def fit(self, days: list[ProductivityPrediction]) -> "AnomalyBaseline":
        for pred in days:
            self.update(pred)
        return self

    def _stats(self, values) -> tuple[float, float]:
        v = np.asarray(values, dtype=np.float64)
        med = float(np.median(v))
        return med, max(float(np.median(np.abs(v - med))) * 1.4826, self.min_spread)

    def thresholds(self) -> dict[int, float]:
        """Per hour (0-23): the score above which a step is unusual for this user."""
        every = [s for values in self.scores.values() for s in values]
        if not every:
            raise ValueError("AnomalyBaseline: no history yet (fit or update first)")
        overall = self._stats(every)
        out = {}
        for hour in range(24):
            med, spread = self._stats(self.scores[hour]) if len(self.scores.get(hour, ())) >= self.min_samples else overall
            out[hour] = med + self.k * spread
        return out

    def alerts(self, pred: ProductivityPrediction) -> list[AnomalySpan]:
        """Runs of at least ``min_steps`` steps whose score is above their hour's threshold."""
        limit = self.thresholds()
        flags = np.array([s > limit[t.hour] for t, s in zip(pred.timestamps, pred.anomaly_scores)] + [False])
        spans, start = [], None
        for i, flagged in enumerate(flags):
            if flagged and start is None:
                start = i
            elif not flagged and start is not None:
                if i - start >= self.min_steps:
                    spans.append(AnomalySpan(start, i - 1, float(np.max(pred.anomaly_scores[start:i])),
                                             pred.timestamps[start], pred.timestamps[i - 1]))
                start = None
        return spans

    def to_dict(self) -> dict:
        return dict(k=self.k, min_spread=self.min_spread, min_samples=self.min_samples, min_steps=self.min_steps,
                    scores={str(h): list(v) for h, v in self.scores.items()})

    @classmethod
    def from_dict(cls, d: dict) -> "AnomalyBaseline":
        out = cls(k=d["k"], min_spread=d["min_spread"], min_samples=d["min_samples"], min_steps=d["min_steps"])
        for hour, values in d["scores"].items():
            out.scores[int(hour)] = [float(v) for v in values]
        return out


@dataclass(frozen=True)
class FocusSuggestion:
    start_hour: int
    end_hour: int       # exclusive
    score: float        # mean probability of the focus pattern in those hours, over the days
    days: int           # days with activity in every hour of the block


def suggest_focus_times(days: list[ProductivityPrediction], *, pattern: str = "focused", hours: int = 2,
                        top: int = 3, weekdays: set[int] | None = None) -> list[FocusSuggestion]:
    """The ``top`` non-overlapping blocks of ``hours`` consecutive hours where the model finds the
    user most reliably in ``pattern`` (mean per-hour probability over the days, each day counted
    once per hour). ``weekdays``: only those days (0 = Monday)."""
    if hours < 1 or hours > 24 or top < 1:
        raise ValueError(f"suggest_focus_times: hours in [1, 24] and top >= 1, got {hours}, {top}")
    if pattern not in PATTERNS:
        raise ValueError(f"suggest_focus_times: unknown pattern {pattern!r}; one of {PATTERNS}")
    column = PATTERNS.index(pattern)
    per_hour = defaultdict(list)
    for pred in days:
        by_hour = defaultdict(list)
        for t, p in zip(pred.timestamps, pred.pattern_probs[:, column]):
            if weekdays is None or t.weekday() in weekdays:
                by_hour[t.hour].append(float(p))
        for hour, ps in by_hour.items():
            per_hour[hour].append(float(np.mean(ps)))
    blocks = []
    for start in range(0, 25 - hours):
        span = range(start, start + hours)
        if all(per_hour.get(h) for h in span):
            blocks.append(FocusSuggestion(start, start + hours, float(np.mean([np.mean(per_hour[h]) for h in span])),
                                          min(len(per_hour[h]) for h in span)))
    chosen: list[FocusSuggestion] = []
    for block in sorted(blocks, key=lambda b: (-b.score, b.start_hour)):
        if all(block.end_hour <= c.start_hour or block.start_hour >= c.end_hour for c in chosen):
            chosen.append(block)
        if len(chosen) == top:
            break
    return chosen
