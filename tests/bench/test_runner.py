"""The runner: check before timing, every planned cell ends with a status."""

import pytest
import torch

import fastlstm
from fastlstm.bench import core, peers, report, runner
from fastlstm.bench.suites import SUITES, plan


def _by_impl(case):
    return {m.impl: m for m in case.measurements}


def test_measure_honours_min_calls_and_warmup():
    calls = []
    timing = core.measure(lambda: calls.append(1), core.Method("t", min_calls=7, min_time=0.0, warmup_calls=3))
    assert timing.calls == 7 and len(calls) == 10
    assert timing.min_s <= timing.median_s <= timing.max_s


def test_statuses_of_fake_impls(tiny_ctx):
    def ok():
        return core.Prepared(fn=lambda: None, check=lambda: core.Check(1e-9, 1e-6, True))

    def wrong():
        return core.Prepared(fn=lambda: None, check=lambda: core.Check(0.5, 1e-6, False, "too far"))

    def boom():
        raise RuntimeError("kernel exploded")

    def unavailable():
        raise core.Unavailable("no int8 here")

    def missing():
        raise core.Missing("onnxruntime is not installed")

    case = core.Case("lstm", "X", "inference", {}, flops=1e6)
    case.impls = [core.Impl("good", True, ok), core.Impl("bad", True, wrong), core.Impl("crash", True, boom),
                  core.Impl("nope", True, unavailable), core.Impl("peer", False, missing)]
    runner.run_plan([case], tiny_ctx, peak_gflops=10.0, progress=runner.Progress(5, tty=False))
    m = _by_impl(case)
    assert [m[k].status for k in ("good", "bad", "crash", "nope", "peer")] == [
        core.OK, core.FAIL, core.ERROR, core.NOT_AVAILABLE, core.MISSING]
    assert m["good"].median_s > 0 and m["good"].gflops > 0
    for k in ("bad", "crash", "nope", "peer"):
        assert m[k].median_s is None and m[k].gflops is None
    assert m["bad"].max_error == 0.5 and m["bad"].note == "too far"
    assert "kernel exploded" in m["crash"].note


def test_progress_plain_lines(capsys, tiny_ctx):
    case = core.Case("lstm", "X", "inference", {})
    case.impls = [core.Impl("good", True, lambda: core.Prepared(fn=lambda: None))]
    runner.run_plan([case], tiny_ctx, None, progress=runner.Progress(1, tty=False))
    assert capsys.readouterr().out.startswith("[1/1] lstm/X/inference good: ")


def _run_lstm(ctx, monkeypatch, only_inference=True):
    monkeypatch.setattr(peers, "missing_reason", lambda peer: "onnxruntime is not installed (test)")
    cases = plan("lstm", ctx)
    if only_inference:
        cases = [c for c in cases if c.mode == "inference"]
    runner.run_plan(cases, ctx, peak_gflops=10.0, progress=runner.Progress(0, tty=False))
    return cases


def test_lstm_suite_checks_then_times(tiny_ctx, monkeypatch):
    cases = _run_lstm(tiny_ctx, monkeypatch, only_inference=False)
    assert [c.mode for c in cases] == ["inference", "training"]
    for c in cases:
        fast = next(m for m in c.measurements if m.ours)
        assert fast.status == core.OK, fast.note
        assert fast.max_error is not None and fast.max_error <= fast.tolerance
        assert _by_impl(c)["torch"].status == core.OK


def test_failing_backend_is_reported_failing(tiny_ctx, monkeypatch):
    original = fastlstm.LSTM.forward

    def wrong_forward(self, *args, **kwargs):
        out, state = original(self, *args, **kwargs)
        return out + 1e-3, state

    monkeypatch.setattr(fastlstm.LSTM, "forward", wrong_forward)
    [case] = _run_lstm(tiny_ctx, monkeypatch)
    fast = next(m for m in case.measurements if m.ours)
    assert fast.status == core.FAIL
    assert fast.median_s is None and fast.gflops is None
    assert _by_impl(case)["torch"].status == core.OK  # the peer still runs


def test_missing_peer_is_reported_missing(tiny_ctx, monkeypatch):
    [case] = _run_lstm(tiny_ctx, monkeypatch)
    ort = _by_impl(case)[peers.ORT_FP32]
    assert ort.status == core.MISSING and "not installed" in ort.note and ort.median_s is None


def test_unavailable_backend_is_reported(tiny_ctx, monkeypatch):
    tiny_ctx.backends = ["cuda"]
    [case] = _run_lstm(tiny_ctx, monkeypatch)
    fast = _by_impl(case)["fastlstm:cuda"]
    assert fast.status == core.NOT_AVAILABLE and "cuda" in fast.note


def test_int8_without_int8_path_is_not_available(tiny_ctx, monkeypatch):
    for name in ("QuantizedLSTM", "quantize_dynamic"):  # as in a build without the int8 path
        monkeypatch.setattr(fastlstm, name, None, raising=False)
    monkeypatch.setattr(peers, "missing_reason", lambda peer: "not installed (test)")
    cases = plan("int8", tiny_ctx)
    runner.run_plan(cases, tiny_ctx, None, progress=runner.Progress(0, tty=False))
    m = _by_impl(cases[0])
    assert m["fastlstm-int8:cpu"].status == core.NOT_AVAILABLE
    assert m["torch-int8"].status == core.OK and m["torch-int8"].max_error < 0.1
    assert m[peers.ORT_INT8].status == core.MISSING


@pytest.mark.parametrize("suite", SUITES)
def test_every_suite_plans_without_running(suite, tiny_ctx):
    cases = plan(suite, tiny_ctx)
    assert cases and all(c.impls for c in cases)
    assert any(i.ours for c in cases for i in c.impls) and any(not i.ours for c in cases for i in c.impls)


def test_run_produces_valid_report(tiny_ctx, monkeypatch):
    monkeypatch.setattr(peers, "missing_reason", lambda peer: "not installed (test)")
    result = runner.run(tiny_ctx, ["lstm"], plan, tty=False)
    report.validate(result)
    assert result["machine"]["isa"] == fastlstm._ext.cpu_capability()
    assert result["machine"]["threads"] == 1 and torch.get_num_threads() == 1
    statuses = {m["impl"]: m["status"] for c in result["cases"] for m in c["measurements"]}
    assert statuses[peers.ORT_FP32] == "missing"


def test_int8_suite_checks_then_times(tiny_ctx, monkeypatch):
    if getattr(fastlstm, "QuantizedLSTM", None) is None:
        pytest.skip("this build has no int8 path")
    monkeypatch.setattr(peers, "missing_reason", lambda peer: "not installed (test)")
    cases = plan("int8", tiny_ctx)
    runner.run_plan(cases, tiny_ctx, None, progress=runner.Progress(0, tty=False))
    m = _by_impl(cases[0])["fastlstm-int8:cpu"]
    assert m.status == core.OK, m.note
    assert m.max_error <= m.tolerance


def test_attention_suite_checks_then_times(tiny_ctx, monkeypatch):
    from fastlstm.bench.suites import attention

    if getattr(fastlstm.ops, "sparse_attention", None) is None:
        pytest.skip("this build has no sparse attention")
    monkeypatch.setattr(attention, "ATTENTION_T_QUICK", (70,))
    cases = plan("attention", tiny_ctx)
    runner.run_plan(cases, tiny_ctx, None, progress=runner.Progress(0, tty=False))
    runner.run_memory_probes(tiny_ctx)
    assert [c.key for c in cases] == ["attention/op T=70 B=1/forward", "attention/module T=70 B=1/forward",
                                      "attention/op T=70 B=1/forward+backward",
                                      "attention/module T=70 B=1/forward+backward"]
    for c in cases:
        for m in c.measurements:
            assert m.status == core.OK, (c.key, m.impl, m.note)
            assert m.extra["peak_rss_mib"] >= 0
            if m.ours:
                assert m.max_error <= 1e-4


def test_blockwise_reference_matches_dense():
    from fastlstm.bench.suites import attention

    if not hasattr(fastlstm.reference, "sparse_attention"):
        pytest.skip("this build has no sparse attention reference")
    q, k, v = (torch.randn(1, 2, 600, 8, dtype=torch.float64) for _ in range(3))
    dense, _ = fastlstm.reference.sparse_attention(q, k, v, (64, 64))
    w = torch.randn_like(dense)
    blocks, dq, dk, dv = attention.blockwise_reference(q, k, v, (64, 64), backward_of=w)
    torch.testing.assert_close(blocks, dense)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    want = torch.autograd.grad((fastlstm.reference.sparse_attention(*leaves, (64, 64))[0] * w).sum(), leaves)
    for got, expected in zip((dq, dk, dv), want):
        torch.testing.assert_close(got, expected)


def test_error_rule_check_reports_the_worst_tensor():
    from fastlstm.bench.suites.lstm import error_rule_check

    ref = [torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)]
    peer = [torch.full((3,), 1e-5), torch.full((3,), 1e-5)]
    good = error_rule_check([torch.full((3,), 1e-5), torch.full((3,), 5e-6)], peer, ref)
    assert good.passed and good.error == pytest.approx(1e-5, rel=1e-6) and good.tolerance == pytest.approx(2.1e-5, rel=1e-6)
    bad = error_rule_check([torch.full((3,), 1e-6), torch.full((3,), 1e-3)], peer, ref)
    assert bad.passed is False and bad.error == pytest.approx(1e-3)


def test_peak_rss_growth_sees_a_large_allocation():
    if core.peak_rss_growth(lambda: None) is None:
        pytest.skip("no /proc/self/clear_refs here")
    grown = core.peak_rss_growth(lambda: torch.ones(64 << 20, dtype=torch.uint8))  # 64 MiB, touched, then freed
    assert 48 <= grown <= 200
