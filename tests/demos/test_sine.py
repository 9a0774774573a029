"""``fastlstm demo sine`` with a reduced step count: both models learn, PNGs are written."""

import argparse

import pytest

from fastlstm.demos import demo_names, sine

MSE_BOUND = 0.1  # predicting 0 scores ~0.5; the noise floor is 0.01


def test_sine_demo_learns_and_writes_pngs(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert "sine" in demo_names()
    parser = argparse.ArgumentParser()
    sine.configure(parser)
    args = parser.parse_args(["--steps", "50", "--hidden", "16", "--window", "20", "--out", str(tmp_path)])
    assert sine.run(args) == 0
    text = capsys.readouterr().out
    mse = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
           if line.split() and line.split()[0] in ("fastlstm", "torch")}
    assert set(mse) == {"fastlstm", "torch"}
    assert mse["torch"] < MSE_BOUND, "the bound must be one the torch model meets"
    assert mse["fastlstm"] < MSE_BOUND
    # Same initial weights, same batches: the two runs stay close.
    assert abs(mse["fastlstm"] - mse["torch"]) <= 0.25 * mse["torch"]
    for name in ("sine_predictions.png", "sine_gates.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000


def test_data_split_and_shapes():
    data = sine.make_data(n_train=100, n_test=50, seed=3)
    assert data.train.shape == (100,) and data.test.shape == (50,) and data.test_clean.shape == (50,)
    assert sine.make_data(n_train=100, n_test=50, seed=3).train.equal(data.train)
