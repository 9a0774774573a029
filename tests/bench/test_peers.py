"""How the bench runs its peers: the ONNX Runtime worker gets exactly the
settings a clean process gives ONNX Runtime, whatever the bench process did
before (torch's OpenMP team, OMP_NUM_THREADS, a narrowed CPU affinity)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastlstm.bench import core, peers, runner
from fastlstm.bench.shapes import parse_shape
from fastlstm.bench.suites import plan


def test_worker_env_keeps_no_threading_variables():
    env = peers.worker_env({"PATH": "/bin", "OMP_NUM_THREADS": "2", "KMP_BLOCKTIME": "0", "MKL_NUM_THREADS": "1",
                            "GOMP_SPINCOUNT": "1", "FASTLSTM_CPU_PROFILE": "amd_zen4", "HOME": "/h"})
    assert env == {"PATH": "/bin", "HOME": "/h"}


def test_thread_candidates_try_one_and_two():
    assert peers.thread_candidates(1) == [1]
    assert peers.thread_candidates(2) == [1, 2]
    assert peers.thread_candidates(4) == [1, 2, 4]


def _clean_process_settings(tmp_path: Path, threads: int) -> dict:
    """The settings ort_worker.py reports when started by hand in a clean
    process: minimal environment, no torch, this machine's full CPU set."""
    spec = peers.worker_spec([], threads, core.METHODS["quick"], None)
    job, result = tmp_path / "clean_job.json", tmp_path / "clean_result.json"
    job.write_text(json.dumps(spec))
    worker = Path(peers.__file__).with_name("ort_worker.py")
    env = {"PATH": os.environ.get("PATH", "/usr/bin")}
    proc = subprocess.run([sys.executable, str(worker), str(job), str(result)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(result.read_text())["settings"]


def test_worker_settings_match_a_clean_process(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    clean = _clean_process_settings(tmp_path, 2)
    # Dirty the bench process the way the issue found it: torch's OpenMP team
    # has run at 2 threads, OMP_NUM_THREADS is set, and the main thread's CPU
    # affinity is narrowed (inherited by children unless the worker resets it).
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("KMP_BLOCKTIME", "200")
    torch.set_num_threads(2)
    torch.mm(torch.randn(256, 256), torch.randn(256, 256))
    method = core.Method("test", min_calls=2, min_time=0.0, warmup_calls=1)
    ctx = runner.Context(method=method, threads=2, shapes=[parse_shape("1,5,3,4,1,yes", "T1")], workdir=tmp_path,
                         cpus=peers.allowed_cpus())
    cases = [c for c in plan("lstm", ctx) if c.mode == "inference"]
    narrowed = hasattr(os, "sched_setaffinity") and len(ctx.cpus or []) > 1
    if narrowed:
        os.sched_setaffinity(0, ctx.cpus[:1])
    try:
        runner.run_plan(cases, ctx, None, progress=runner.Progress(0, tty=False))
    finally:
        if narrowed:
            os.sched_setaffinity(0, ctx.cpus)
    ort = next(m for m in cases[0].measurements if m.impl == peers.ORT_FP32)
    assert ort.status == core.OK, ort.note
    run = ort.extra["run"]
    assert set(run["configs_tried"]) == {"1t", "2t", "2t-nospin"}
    expected = clean[run["config"]]
    assert {k: run[k] for k in expected} == expected
    assert run["env"] == {} and run["graph_optimization_level"].endswith("ORT_ENABLE_ALL")


def test_torch_peer_records_how_it_ran(tmp_path, monkeypatch):
    monkeypatch.setattr(peers, "missing_reason", lambda peer: "not installed (test)")
    method = core.Method("test", min_calls=2, min_time=0.0, warmup_calls=1)
    ctx = runner.Context(method=method, threads=2, shapes=[parse_shape("1,5,3,4,1,yes", "T1")], workdir=tmp_path)
    cases = [c for c in plan("lstm", ctx) if c.mode == "inference"]
    runner.run_plan(cases, ctx, None, progress=runner.Progress(0, tty=False))
    m = next(m for m in cases[0].measurements if m.impl == "torch")
    assert m.status == core.OK and set(m.extra["run"]["threads_tried"]) == {"1", "2"}
    assert m.median_s == m.extra["run"]["threads_tried"][str(m.extra["run"]["threads"])]
    assert torch.get_num_threads() == 2  # restored for the next cell
