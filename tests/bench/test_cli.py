"""`fastlstm bench` end to end on a tiny shape (the machinery, not the timings)."""

import json

import pytest

from fastlstm import cli
from fastlstm.bench import peers, report

TINY = ["--shapes", "1,6,3,4,1,yes", "--min-time", "0", "--min-calls", "2", "--plain"]


def test_bench_registers_with_options():
    parser = cli.build_parser()
    args = parser.parse_args(["bench", "--suite", "full", "--shapes", "1,2,3,4,1,no", "--shapes", "2,2,2,2,2,yes",
                              "--backend", "cpu", "--threads", "2", "--only", "lstm,int8", "--json", "x.json"])
    assert args.suite == "full" and [s.B for s in args.shapes] == [1, 2] and args.backend == ["cpu"]
    assert args.threads == 2 and args.only == ["lstm,int8"] and args.json == "x.json"


def test_bad_shape_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["bench", "--shapes", "1,2,3"])
    assert "B,T,I,H,L,bi" in capsys.readouterr().err


def test_bench_with_onnxruntime_writes_json_markdown_png(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "r.json"
    md = tmp_path / "r.md"
    png = tmp_path / "r.png"
    rc = cli.main(["bench", "--only", "lstm,int8", *TINY, "--json", str(out), "--markdown", str(md),
                   "--png", str(png)])
    text = capsys.readouterr().out
    r = report.load(out)
    statuses = {(c["key"], m["impl"]): m["status"] for c in r["cases"] for m in c["measurements"]}
    key = "lstm/1,6,3,4,1,bi/inference"
    assert statuses[(key, "torch")] == "ok"
    assert statuses[(key, peers.ORT_FP32)] == "ok"  # ran in the worker process
    assert statuses[("int8/1,6,3,4,1,bi/int8 inference", peers.ORT_INT8)] == "ok"
    ours = [s for (k, impl), s in statuses.items() if impl.startswith("fastlstm") and k.startswith("lstm/")]
    assert ours and all(s == "ok" for s in ours)
    assert rc == 0
    assert "Fastest per case:" in text and "fastest" in text
    assert md.read_text().startswith("Measured by `fastlstm bench --only lstm,int8 --shapes 1,6,3,4,1,yes")
    assert png.exists()


def test_compare_prints_changes(tmp_path, capsys, monkeypatch, fake):
    monkeypatch.setattr(peers, "missing_reason", lambda peer: "not installed (test)")
    out = tmp_path / "new.json"
    old = tmp_path / "old.json"
    cli.main(["bench", "--only", "lstm", *TINY, "--json", str(out), "--png", ""])
    previous = json.loads(out.read_text())
    for case in previous["cases"]:
        for m in case["measurements"]:
            if m["status"] == "ok":  # pretend the old run was 10x slower
                m.update(median_s=m["median_s"] * 10, min_s=m["min_s"] * 10, max_s=m["max_s"] * 10)
    old.write_text(json.dumps(previous))
    capsys.readouterr()
    cli.main(["bench", "--only", "lstm", *TINY, "--json", "", "--png", "", "--compare", str(old)])
    text = capsys.readouterr().out
    assert "Compared with" in text and " faster" in text


def test_compare_with_bad_file_is_an_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert cli.main(["bench", *TINY, "--compare", str(bad)]) == 2
    assert "report.schema" in capsys.readouterr().err
