import pytest

from fastlstm.bench.shapes import LSTM_SHAPES, LSTMShape, attention_flops, lstm_flops, parse_shape


@pytest.mark.parametrize("text,expected", [
    ("1,288,32,128,2,yes", (1, 288, 32, 128, 2, True)),
    ("32, 128, 256, 512, 1, no", (32, 128, 256, 512, 1, False)),
    ("2,3,4,5,1,bi", (2, 3, 4, 5, 1, True)),
    ("2,3,4,5,1,0", (2, 3, 4, 5, 1, False)),
], ids=["yes", "spaces-no", "bi", "zero"])
def test_parse_shape(text, expected):
    s = parse_shape(text)
    assert (s.B, s.T, s.I, s.H, s.L, s.bi) == expected
    assert parse_shape(s.label()) == s  # the label round-trips


@pytest.mark.parametrize("text,match", [
    ("1,2,3,4,5", "6 comma-separated"),
    ("1,2,x,4,5,yes", "I must be an integer"),
    ("1,0,3,4,5,yes", "T must be positive"),
    ("1,2,3,4,5,maybe", "bi must be yes or no"),
], ids=["five-fields", "not-int", "zero", "bad-flag"])
def test_parse_shape_rejects(text, match):
    with pytest.raises(ValueError, match=match):
        parse_shape(text)


def test_issue_shapes():
    assert [s.name for s in LSTM_SHAPES] == ["S1", "S2", "S3", "S4", "S5"]
    assert LSTM_SHAPES[1] == LSTMShape("S2", 1, 1440, 32, 128, 2, True)


def test_lstm_flops_formula():
    # one layer, one direction: 2 * B * T * 4H * (I + H)
    s = LSTMShape("x", 2, 3, 4, 5, 1, False)
    assert lstm_flops(s, "inference") == 2 * 2 * 3 * 20 * 9
    assert lstm_flops(s, "training") == 3 * lstm_flops(s, "inference")
    # second bidirectional layer sees 2H inputs
    b = LSTMShape("y", 1, 1, 4, 5, 2, True)
    assert lstm_flops(b, "inference") == 2 * (2 * 20 * 9) + 2 * (2 * 20 * 15)


def test_attention_flops_counts_window_pairs():
    # T=4, window (1, 1): pairs per query 2, 3, 3, 2
    assert attention_flops(1, 4, 1, 8, (1, 1)) == 4 * 8 * 10
    assert attention_flops(1, 4, 1, 8, None) == 4 * 8 * 16


def test_quick_suite_has_the_train_small_group():
    from fastlstm.bench import core, runner
    from fastlstm.bench.suites import lstm as lstm_suite

    ctx = runner.Context(method=core.METHODS["quick"], threads=2, quick=True)
    keys = [case.key for case in lstm_suite.plan(ctx)]
    assert [k for k in keys if "train-small" in k] == [
        "lstm/train-small-TS1/training", "lstm/train-small-TS2/training", "lstm/train-small-TS3/training"]
