import copy

import pytest

from fastlstm.bench import core, runner


@pytest.fixture(autouse=True)
def _restore_threads():
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_ctx(tmp_path):
    """A context with tiny shapes and a tiny timing budget (tests check the machinery, not speed)."""
    from fastlstm.bench.shapes import parse_shape

    method = core.Method("test", min_calls=2, min_time=0.0, warmup_calls=1)
    return runner.Context(method=method, threads=1, shapes=[parse_shape("1,5,3,4,1,yes", "T1")],
                          workdir=tmp_path, sgemm_size=32)


def make_report(cases=None):
    """A small valid report built from hand-made measurements."""
    base = {
        "schema": "fastlstm-bench/1", "created": "2026-11-22T03:00:00+00:00",
        "machine": {"cpu_model": "Test CPU", "isa": "avx2", "threads": 2, "versions": {"torch": "2.13.0"}},
        "method": {"name": "quick", "description": "quick: test"}, "suites": ["lstm"],
        "sgemm": {"peak_gflops": 100.0, "size": 64, "calls": 3, "median_gflops": 90.0},
        "cases": cases if cases is not None else [case("S1", fast=0.002, peer=0.004)],
    }
    return copy.deepcopy(base)


def meas(impl, ours, status="ok", t=None, **kw):
    m = {"impl": impl, "ours": ours, "status": status, "median_s": t, "min_s": t and t * 0.9,
         "max_s": t and t * 1.2, "calls": t and 20, "max_error": 1e-7, "tolerance": None, "gflops": None,
         "peak_fraction": None, "note": "", "extra": {}}
    m.update(kw)
    return m


def case(name, fast=None, peer=None, fast_status="ok", peer_status="ok"):
    return {"suite": "lstm", "name": name, "mode": "inference", "key": f"lstm/{name}/inference",
            "params": {}, "flops": 1e6, "note": "",
            "measurements": [meas("fastlstm:cpu", True, fast_status, fast), meas("torch", False, peer_status, peer)]}


@pytest.fixture
def fake():
    """Builders for hand-made reports: fake.report(cases), fake.case(...), fake.meas(...)."""
    import types

    return types.SimpleNamespace(report=make_report, case=case, meas=meas)
