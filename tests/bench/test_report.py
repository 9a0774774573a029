"""The report: JSON schema, compare logic, markdown writer, verdicts, chart."""

import json

import pytest

from fastlstm.bench import report


def test_valid_report_round_trips(tmp_path, fake):
    r = fake.report()
    path = tmp_path / "r.json"
    report.save(r, path)
    assert report.load(path) == json.loads(path.read_text())


@pytest.mark.parametrize("mutate,match", [
    (lambda r: r.pop("machine"), r"report\.machine"),
    (lambda r: r.update(schema="other/9"), r"report\.schema"),
    (lambda r: r["machine"].pop("isa"), r"machine\.isa"),
    (lambda r: r["cases"][0]["measurements"][0].update(status="fast"), "status"),
    (lambda r: r["cases"][0]["measurements"][0].update(status="FAIL"), "must not carry a time"),
    (lambda r: r["cases"][0]["measurements"][1].update(median_s=None), "positive"),
    (lambda r: r["cases"][0]["measurements"][1].update(min_s=1.0), "min_s <= median_s"),
    (lambda r: r["cases"][0]["measurements"][1].pop("max_error"), r"max_error: missing"),
    (lambda r: r["sgemm"].pop("peak_gflops"), "peak_gflops"),
], ids=["no-machine", "schema", "no-isa", "bad-status", "fail-with-time", "ok-without-time", "min-above-median",
        "no-error-field", "no-peak"])
def test_schema_rejects(fake, mutate, match):
    r = fake.report()
    mutate(r)
    with pytest.raises(ValueError, match=match):
        report.validate(r)


def test_load_rejects_non_json(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("not json")
    with pytest.raises(ValueError, match="not a JSON file"):
        report.load(p)


def test_speedup_and_verdict(fake):
    c = fake.case("S1", fast=0.002, peer=0.005)
    assert report.speedup(c, c["measurements"][1]) == pytest.approx(2.5)
    assert report.verdict(c) == "fastlstm:cpu fastest, 2.50x ahead of torch"
    slow = fake.case("S2", fast=0.004, peer=0.002)
    assert report.verdict(slow) == "torch fastest, 2.00x ahead of fastlstm:cpu"


def test_failed_cell_has_no_speedup(fake):
    c = fake.case("S1", fast=None, peer=0.004, fast_status="FAIL")
    assert report.speedup(c, c["measurements"][1]) is None
    assert report.verdict(c) == "only torch timed"
    row = report.rows(fake.report([c]))[0]
    assert row["median"] == "-" and row["status"].startswith("FAIL")


def test_compare_verdicts(fake):
    old = fake.report([fake.case("S1", 0.010, 0.020), fake.case("S2", 0.010, 0.020),
                       fake.case("S3", 0.010, 0.020), fake.case("S4", 0.010, 0.020)])
    new = fake.report([fake.case("S1", 0.005, 0.020), fake.case("S2", 0.020, 0.0201),
                       fake.case("S3", None, 0.020, fast_status="FAIL"), fake.case("S5", 0.01, 0.02)])
    rows = {(r["case"], r["impl"]): r for r in report.compare(old, new, threshold=0.05)}
    assert rows[("lstm/S1/inference", "fastlstm:cpu")]["verdict"] == "faster"
    assert rows[("lstm/S1/inference", "fastlstm:cpu")]["ratio"] == pytest.approx(0.5)
    assert rows[("lstm/S2/inference", "fastlstm:cpu")]["verdict"] == "slower"
    assert rows[("lstm/S2/inference", "torch")]["verdict"] == "same"
    assert rows[("lstm/S3/inference", "fastlstm:cpu")]["verdict"] == "now FAIL"
    assert rows[("lstm/S4/inference", "torch")]["verdict"] == "gone"
    assert rows[("lstm/S5/inference", "torch")]["verdict"] == "new"
    # a failed cell that becomes ok again says so
    back = {(r["case"], r["impl"]): r for r in report.compare(new, old)}
    assert back[("lstm/S3/inference", "fastlstm:cpu")]["verdict"] == "now ok (was FAIL)"


def test_markdown_names_machine_date_and_cells(fake):
    r = fake.report([fake.case("S1", 0.002, 0.005), fake.case("S2", None, 0.004, fast_status="FAIL")])
    md = report.markdown(r)
    assert "Test CPU" in md and "2026-11-22" in md and "avx2" in md
    lines = [line for line in md.splitlines() if line.startswith("| S")]
    assert lines[0].split(" | ")[2:5] == ["2", "5", "2.50x"]
    assert "| FAIL |" in lines[1] and "only torch timed" in lines[1]
    assert sum(line.startswith("|---") for line in md.splitlines()) == 1  # one table for the one suite


def test_print_report_plain_lists_missing_and_failing(fake, capsys):
    c = fake.case("S1", None, None, fast_status="FAIL", peer_status="missing")
    c["measurements"][1]["note"] = "onnxruntime is not installed"
    report.print_report(fake.report([c]), plain=True)
    out = capsys.readouterr().out
    assert "missing: onnxruntime is not installed" in out
    assert "FAILING: lstm/S1/inference fastlstm:cpu" in out


def test_plot_writes_png(tmp_path, fake):
    pytest.importorskip("matplotlib")
    path = tmp_path / "chart.png"
    report.plot(fake.report([fake.case("S1", 0.002, 0.005), fake.case("S2", None, 0.004, fast_status="FAIL")]),
                path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_int8_peers_compare_with_fastlstm_int8(fake):
    c = fake.case("T", fast=0.010, peer=0.020)
    c["measurements"] += [fake.meas("fastlstm int8", True, t=0.004), fake.meas("torch-int8", False, t=0.012)]
    by = {m["impl"]: m for m in c["measurements"]}
    assert report.speedup(c, by["torch"]) == pytest.approx(2.0)
    assert report.speedup(c, by["torch-int8"]) == pytest.approx(3.0)


def test_machine_info_and_header_name_the_cpu_model_and_vendor(fake):
    from fastlstm.bench import core

    info = core.machine_info(threads=1, device="cpu")
    assert info["cpu_model"] and info["cpu_vendor"]
    with open("/proc/cpuinfo") as f:
        text = f.read()
    if "model name" in text:
        assert info["cpu_model"] in text and info["cpu_vendor"].split()[0] in text
    r = fake.report()
    r["machine"].update(cpu_model=info["cpu_model"], cpu_vendor=info["cpu_vendor"])
    header = report.header_lines(r)[0]
    assert info["cpu_model"] in header and info["cpu_vendor"] in header
