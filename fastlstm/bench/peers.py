"""Peers that are not torch itself: availability, ONNX export, and the
ONNX Runtime worker process.

ONNX Runtime runs in its own torch-free process (``ort_worker.py``), after
every in-process cell has been timed and the bench's own threads have gone
quiet, with a clean environment and the bench's original CPU affinity, at
the best of 1 and 2 intra-op threads (2 with and without spinning); so the two runtimes never share a
process or compete for the cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

ORT_FP32 = "onnxruntime"
ORT_INT8 = "onnxruntime-int8"
INSTALL_HINT = 'pip install "fastlstm[peers]"'


def missing_reason(peer: str) -> str | None:
    """Why ``peer`` ('onnxruntime') cannot run here, or None. Only looks the
    packages up; never imports onnxruntime into this process."""
    if peer != "onnxruntime":
        raise ValueError(f"unknown peer {peer!r}")
    for module in ("onnxruntime", "onnx"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed ({INSTALL_HINT})"
    return None


def export_onnx(model, args: tuple, path: Path, input_names: list[str]) -> Path:
    """Export a torch model with the TorchScript exporter (``dynamo=False``: it
    needs no network and maps nn.LSTM to ONNX's LSTM operator, which is what
    ONNX Runtime users get); opset 17. The model is called with ``args`` only
    (a wrapper hides keyword-only or optional forward arguments from the tracer)."""
    import torch

    class Positional(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):
            return self.inner(*inputs)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Positional(model).eval(), args, str(path), dynamo=False, opset_version=17,
                          input_names=input_names, do_constant_folding=True)
    return path


# The only variables the worker inherits: enough to find Python and its
# packages, nothing that configures a thread pool (OMP_NUM_THREADS=2 or a
# KMP/GOMP wait policy left by the bench's caller would change ORT's threads).
WORKER_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "SYSTEMROOT")


def worker_env(base: dict | None = None) -> dict:
    base = os.environ if base is None else base
    return {k: base[k] for k in WORKER_ENV_KEYS if k in base}


def thread_candidates(threads: int) -> list[int]:
    """Intra-op thread counts the worker tries (the fastest is reported):
    1 and 2, capped at the bench's thread count, and that count itself."""
    return sorted({t for t in (1, 2) if t <= threads} | {threads})


def process_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def wait_until_quiet(max_wait: float = 3.0, window: float = 0.05, busy_cores: float = 0.05) -> dict:
    """Wait until this process's threads (torch's OpenMP team, fastlstm's pool,
    all of which spin a while after their last job) use under ``busy_cores`` of
    CPU over a ``window``, at most ``max_wait`` s; returns what was seen."""
    start = time.perf_counter()
    while True:
        c0, t0 = process_cpu_seconds(), time.perf_counter()
        time.sleep(window)
        used = (process_cpu_seconds() - c0) / (time.perf_counter() - t0)
        waited = time.perf_counter() - start
        if used < busy_cores or waited >= max_wait:
            return {"waited_s": round(waited, 3), "bench_process_cores_busy": round(used, 3)}


def allowed_cpus() -> list[int] | None:
    """The CPUs this process may run on (the bench records them before any
    thread pool could narrow the main thread's mask; the worker restores them)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def worker_spec(jobs: list[dict], threads: int, method, cpus: list[int] | None) -> dict:
    return {"threads": threads, "thread_candidates": thread_candidates(threads), "cpus": cpus, "jobs": jobs,
            "method": {"min_calls": method.min_calls, "min_time": method.min_time,
                       "warmup_calls": method.warmup_calls, "max_calls": method.max_calls}}


def run_worker(jobs: list[dict], threads: int, method, workdir: Path, timeout: float = 1800,
               cpus: list[int] | None = None) -> dict:
    """Run the ONNX Runtime jobs in a fresh process with a clean environment,
    once this process is quiet; returns ``{"results": {id: result}, "settings": ..., "quiet": ...}``."""
    job_path = workdir / "ort_jobs.json"
    result_path = workdir / "ort_results.json"
    job_path.write_text(json.dumps(worker_spec(jobs, threads, method, cpus or allowed_cpus())))
    worker = Path(__file__).with_name("ort_worker.py")
    quiet = wait_until_quiet()
    proc = subprocess.run([sys.executable, str(worker), str(job_path), str(result_path)],
                          capture_output=True, text=True, timeout=timeout, env=worker_env())
    if proc.returncode != 0 or not result_path.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        reason = f"onnxruntime worker exited with {proc.returncode}: {tail[0][:200]}"
        return {"results": {job["id"]: {"status": "error", "note": reason} for job in jobs}, "quiet": quiet}
    report = json.loads(result_path.read_text())
    return {"results": report["results"], "settings": report.get("settings"), "quiet": quiet}
