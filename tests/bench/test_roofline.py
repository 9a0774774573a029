"""The roofline line: bytes of W_hh per step, the cache level they live in,
and the bound time at the measured bandwidth."""

import pytest

from fastlstm.bench import core, report, roofline

BW = {"l2_bytes_per_core": 2 << 20, "l3_bytes": 32 << 20, "threads": 2, "probe": "test",
      "l2": {"working_set_bytes": 1 << 20, "gbps": 200.0}, "l3": {"working_set_bytes": 16 << 20, "gbps": 50.0}}


def test_s1_weights_live_in_l2():
    r = roofline.lstm_case_roofline({"T": 288, "H": 128, "L": 2, "bidirectional": True, "dtype": "float32"},
                                    "inference", BW, 2)
    assert r["weights_bytes_per_step"] == 2 * 2 * 4 * 128 * 128 * 4 and r["level"] == "l2"
    assert r["bound_s"] == pytest.approx(288 * r["weights_bytes_per_step"] / 200e9)


def test_s5_weights_spill_to_l3_and_training_streams_twice():
    params = {"T": 128, "H": 512, "L": 1, "bidirectional": False, "dtype": "float32"}
    inf = roofline.lstm_case_roofline(params, "inference", BW, 2)
    train = roofline.lstm_case_roofline(params, "training", BW, 2)
    assert inf["level"] == "l3" and train["weights_bytes_per_step"] == 2 * inf["weights_bytes_per_step"]


def test_int8_counts_one_byte_per_weight():
    r = roofline.lstm_case_roofline({"T": 64, "H": 256, "L": 1, "bidirectional": False,
                                     "dtype": "int8 weights, fp32 activations"}, "inference", BW, 2)
    assert r["weights_bytes_per_step"] == 4 * 256 * 256


def test_fill_and_report_line():
    case = core.Case("lstm", "S4", "inference", {"T": 64, "H": 256, "L": 1, "bidirectional": False})
    case.measurements = [core.Measurement("fastlstm:cpu", True, core.OK, median_s=1e-3),
                         core.Measurement("torch", False, core.OK, median_s=2e-3)]
    roofline.fill(case, BW, 2)
    bound = case.roofline["bound_s"]
    assert case.measurements[0].extra["roofline_fraction"] == pytest.approx(bound / 1e-3)
    lines = report.roofline_lines({"bandwidth": BW, "cases": [case.to_json()]})
    assert len(lines) == 2 and "lstm/S4/inference" in lines[1] and "fastlstm:cpu" in lines[1] and "torch" in lines[1]


def test_measured_bandwidth_is_positive():
    bw = roofline.bandwidth(1, min_time=0.01)
    assert bw["l2"]["gbps"] > 0 and bw["l3"]["gbps"] > 0 and bw["l3"]["working_set_bytes"] > bw["l2"]["working_set_bytes"]
