"""fastlstm.models.activity: log parsing and validation, features, windows, packing, synthetic logs."""

import io
import math
from datetime import datetime

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from fastlstm.models import PATTERNS, ActivityEncoder, ActivityEvent, ActivityLogError, read_log, synthetic_activity_log
from fastlstm.models.activity import write_csv

GOOD = [
    {"timestamp": "2026-01-05T09:00:00", "app": "vscode", "duration": 600, "score": 0.9},
    {"timestamp": "2026-01-05T09:12:00", "app": "slack", "duration": 120, "score": 0.5},
    {"timestamp": "2026-01-05T09:15:00", "app": "tiktok", "duration": 60, "score": 0.1},
]


def _with(row_index, **change):
    rows = [dict(r) for r in GOOD]
    rows[row_index].update(change)
    return rows


BAD = {
    "missing-app": (_with(1, app=None), 2, "app"),
    "bad-timestamp": (_with(0, timestamp="yesterday"), 1, "timestamp"),
    "negative-duration": (_with(2, duration=-5), 3, "duration"),
    "nan-duration": (_with(1, duration=float("nan")), 2, "duration"),
    "text-score": (_with(2, score="high"), 3, "score"),
    "score-out-of-range": (_with(0, score=1.5), 1, "score"),
    "out-of-order": (_with(2, timestamp="2026-01-05T08:00:00"), 3, "timestamp"),
    "app-not-string": (_with(1, app=7), 2, "app"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_record_names_row_and_field(case):
    rows, row, field = BAD[case]
    with pytest.raises(ActivityLogError) as info:
        read_log(rows)
    assert info.value.row == row and info.value.field == field
    assert f"row {row}" in str(info.value) and repr(field) in str(info.value)


def test_bad_csv_row_names_row_line_and_field():
    text = "timestamp,app,duration,score\n2026-01-05T09:00,vscode,600,0.9\n2026-01-05T09:10,slack,abc,0.5\n"
    with pytest.raises(ActivityLogError, match=r"row 2 \(line 3\), field 'duration'"):
        read_log(io.StringIO(text))


def test_csv_missing_column():
    with pytest.raises(ActivityLogError, match="score"):
        read_log(io.StringIO("timestamp,app,duration\n2026-01-05T09:00,vscode,600\n"))


def test_tuple_with_wrong_arity():
    with pytest.raises(ActivityLogError, match="row 1"):
        read_log([("2026-01-05T09:00", "vscode", 600)])


def test_csv_roundtrip(tmp_path):
    log = synthetic_activity_log(days=3, seed=2)
    path = tmp_path / "log.csv"
    write_csv(log.events, path)
    events = read_log(str(path))
    assert [e.app for e in events] == [e.app for e in log.events]
    enc = ActivityEncoder().fit(log.events)
    torch.testing.assert_close(enc.encode(str(path)), enc.encode(log.events), atol=1e-4, rtol=0)


def test_features():
    enc = ActivityEncoder(apps=["vscode", "slack"])
    x = enc.encode(GOOD)
    names = enc.feature_names
    assert x.shape == (3, enc.input_dim) and len(names) == enc.input_dim
    col = {n: i for i, n in enumerate(names)}
    # one-hot with the unknown bucket for "tiktok"
    assert x[0, col["app=vscode"]] == 1 and x[1, col["app=slack"]] == 1 and x[2, col["app=<unknown>"]] == 1
    assert torch.all(x[:, : len(enc.apps) + 1].sum(1) == 1)
    # 09:00 -> angle 2*pi*9/24; Monday -> day 0
    assert math.isclose(x[0, col["tod_sin"]].item(), math.sin(2 * math.pi * 9 / 24), abs_tol=1e-6)
    assert math.isclose(x[0, col["dow_cos"]].item(), 1.0, abs_tol=1e-6)
    assert math.isclose(x[0, enc.score_index].item(), 0.9, abs_tol=1e-6)
    # previous-activity context: vscode 09:00 + 600 s ends 09:10; slack starts 09:12 -> gap 120 s
    assert x[0, col["prev_gap"]] == 0 and x[0, col["prev_switched"]] == 0
    assert math.isclose(x[1, col["prev_gap"]].item(), math.log1p(120) / math.log1p(4 * 3600), rel_tol=1e-5)
    assert x[1, col["prev_switched"]] == 1 and math.isclose(x[1, col["prev_score"]].item(), 0.9, abs_tol=1e-6)


def test_score_range_normalised():
    enc = ActivityEncoder(apps=["vscode"], score_range=(-2, 2))
    x = enc.encode([("2026-01-05T09:00", "vscode", 60, 1.0)])
    assert math.isclose(x[0, enc.score_index].item(), 0.75, abs_tol=1e-6)
    assert enc.score_from_feature(0.75) == 1.0


def test_encoder_needs_vocabulary():
    with pytest.raises(RuntimeError, match="fit"):
        ActivityEncoder().encode(GOOD)


def test_windows_cover_every_event():
    x = torch.arange(10.0).unsqueeze(1)
    w = ActivityEncoder.windows(x, 4, stride=4)  # starts 0, 4 and the end-aligned 6
    assert w.shape == (3, 4, 1)
    assert w[:, 0, 0].tolist() == [0, 4, 6] and w[-1, -1, 0] == 9
    with pytest.raises(ValueError, match="fewer than"):
        ActivityEncoder.windows(x, 11)


def test_pack_variable_length_days():
    log = synthetic_activity_log(days=4, seed=3)
    days = log.days()
    assert len(days) == 4
    enc = ActivityEncoder().fit(log.events)
    packed = enc.pack([d.events for d in days])
    assert isinstance(packed, PackedSequence)
    padded, lengths = pad_packed_sequence(packed, batch_first=True)
    assert lengths.tolist() == [len(d.events) for d in days]
    for i, d in enumerate(days):
        torch.testing.assert_close(padded[i, : lengths[i]], enc.encode(d.events))


def test_synthetic_log_is_seeded_and_realistic():
    a, b = synthetic_activity_log(days=14, seed=5), synthetic_activity_log(days=14, seed=5)
    assert [(e.timestamp, e.app) for e in a.events] == [(e.timestamp, e.app) for e in b.events]
    assert a.events != synthetic_activity_log(days=14, seed=6).events
    ts = [e.timestamp for e in a.events]
    assert ts == sorted(ts)
    assert a.anomalies.any() and a.planted
    assert set(np.unique(a.patterns)) <= set(range(len(PATTERNS)))
    weekday = [e for e in a.events if e.timestamp.weekday() < 5 and not a.anomalies[a.events.index(e)]]
    assert all(7 <= e.timestamp.hour <= 18 for e in weekday)
    # the habit: social media right after most meetings
    after = [a.events[i + 1].app for i in range(len(a.events) - 1)
             if a.patterns[i] == PATTERNS.index("meeting") and a.patterns[i + 1] != PATTERNS.index("meeting")]
    assert sum(app in ("twitter", "reddit") for app in after) >= len(after) // 2
    assert isinstance(a.events[0], ActivityEvent) and a.events[0].timestamp >= datetime(2026, 1, 5)
