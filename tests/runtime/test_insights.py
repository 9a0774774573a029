"""Habit detection, the per-user anomaly baseline and focus-time suggestions on planted patterns."""

from datetime import datetime, timedelta

import numpy as np
import pytest

from fastlstm.runtime.app import make_prediction
from fastlstm.runtime.events import PATTERNS
from fastlstm.runtime.insights import AnomalyBaseline, detect_habits, suggest_focus_times


def _day(day: int, plan, anomaly=None, rng=None):
    """A prediction whose labels follow ``plan`` [(hour, pattern, steps)], one step per 10 min."""
    rng = rng or np.random.default_rng(day)
    stamps, labels = [], []
    for hour, pattern, steps in plan:
        t0 = datetime(2026, 1, 5) + timedelta(days=day, hours=hour)
        for s in range(steps):
            stamps.append(t0 + timedelta(minutes=10 * s))
            labels.append(PATTERNS.index(pattern))
    logits = np.full((len(labels), len(PATTERNS)), -4.0, np.float32)
    logits[np.arange(len(labels)), labels] = 4.0
    scores = rng.normal(0.1, 0.01, len(labels)) if anomaly is None else anomaly
    anomaly_logits = np.log(np.clip(scores, 1e-4, 1 - 1e-4) / (1 - np.clip(scores, 1e-4, 1 - 1e-4)))
    return make_prediction(logits, np.zeros(5), anomaly_logits, None, stamps, None, 0.5)


def _workday(day, social_after_meeting):
    plan = [(9, "focused", 6), (10, "meeting", 2)]
    if social_after_meeting:
        plan.append((10.34, "distracted", 1))
    plan += [(11, "focused", 6), (12, "break", 3), (14, "communication", 3)]
    return _day(day, plan)


def test_planted_habit_is_found_with_its_support():
    days = [_workday(d, social_after_meeting=d % 4 != 3) for d in range(8)]  # 6 of 8 days
    habits = detect_habits(days, min_support=0.6)
    after = {(h.after, h.pattern): h for h in habits if h.kind == "after"}
    assert ("meeting", "distracted") in after
    assert after["meeting", "distracted"].support == pytest.approx(6 / 8)
    assert after["meeting", "distracted"].days == 6
    at = {(h.pattern, h.hour) for h in habits if h.kind == "at"}
    assert ("focused", 9) in at and ("break", 12) in at
    # below the planted rate it is not reported
    assert ("meeting", "distracted") not in {(h.after, h.pattern) for h in detect_habits(days, min_support=0.8)}


def test_no_habit_in_shuffled_days():
    rng = np.random.default_rng(0)
    days = []
    for d in range(6):
        plan = [(h, PATTERNS[rng.integers(len(PATTERNS))], 1) for h in range(8, 18)]
        days.append(_day(d, plan))
    assert not [h for h in detect_habits(days, min_support=0.9, min_days=5) if h.kind == "after"]


def test_baseline_is_per_user():
    calm = [_day(d, [(9, "focused", 30)], anomaly=np.full(30, 0.1) + np.random.default_rng(d).normal(0, .01, 30))
            for d in range(5)]
    busy = [_day(d, [(9, "focused", 30)], anomaly=np.full(30, 0.6) + np.random.default_rng(d).normal(0, .01, 30))
            for d in range(5)]
    today_scores = np.full(30, 0.6)
    today_scores[10:14] = 0.95
    today = _day(9, [(9, "focused", 30)], anomaly=today_scores)
    calm_alerts = AnomalyBaseline().fit(calm).alerts(today)
    busy_alerts = AnomalyBaseline().fit(busy).alerts(today)
    assert [(s.start, s.end) for s in calm_alerts] == [(0, 29)]       # 0.6 is unusual for the calm user
    assert [(s.start, s.end) for s in busy_alerts] == [(10, 13)]      # only the planted spike is, for the busy one
    restored = AnomalyBaseline.from_dict(AnomalyBaseline().fit(busy).to_dict())
    assert [(s.start, s.end) for s in restored.alerts(today)] == [(10, 13)]
    with pytest.raises(ValueError, match="no history"):
        AnomalyBaseline().alerts(today)


def test_focus_suggestions_find_the_planted_block():
    days = [_day(d, [(8, "communication", 6), (9, "focused", 6), (10, "focused", 6), (11, "meeting", 6),
                     (13, "focused", 6), (14, "distracted", 6)]) for d in range(5)]
    best = suggest_focus_times(days, hours=2, top=2)
    assert (best[0].start_hour, best[0].end_hour) == (9, 11) and best[0].days == 5
    assert best[0].score > 0.99 and best[1].score < best[0].score
    assert all(b.end_hour <= best[0].start_hour or b.start_hour >= best[0].end_hour for b in best[1:])
    with pytest.raises(ValueError, match="unknown pattern"):
        suggest_focus_times(days, pattern="napping")
