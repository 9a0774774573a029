"""Runs a plan of cases: correctness check first, then timing, then the
ONNX Runtime jobs in their own process; reports progress as it goes."""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fastlstm.bench import core, peers, roofline
from fastlstm.bench.core import Case, Measurement, Method
from fastlstm.bench.shapes import LSTMShape

SCHEMA = "fastlstm-bench/1"


@dataclass
class Context:
    """Everything a suite needs to plan its cases."""

    method: Method
    threads: int
    device: str = "cpu"
    backends: list[str] = field(default_factory=lambda: ["auto"])
    shapes: list[LSTMShape] = field(default_factory=list)
    quick: bool = True
    workdir: Path | None = None
    sgemm_size: int | None = None  # default: 1024 (quick) or 2048 (full)
    cache: dict = field(default_factory=dict)
    exports: dict = field(default_factory=dict)
    memory_probes: list = field(default_factory=list)  # (measurement, call), run after all timing
    bandwidth: dict | None = None  # the L2/L3 streaming-read probe of this run (roofline.py)
    cpus: list[int] | None = None  # the bench's CPU affinity at start; the ORT worker restores it

    def sync(self) -> Callable[[], None] | None:
        if self.device == "cuda":
            import torch

            return torch.cuda.synchronize
        return None


class Progress:
    """A rich progress bar on a terminal, plain lines otherwise."""

    def __init__(self, total: int, stream=None, tty: bool | None = None):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.total = total
        self.done = 0
        self._bar = None
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn
            from rich.progress import TimeElapsedColumn

            self._bar = RichProgress(TextColumn("{task.description:<48}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), transient=True)
            self._bar.start()
            self._task = self._bar.add_task("benchmarking", total=total)

    def start(self, label: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=label)

    def finish(self, label: str, m: Measurement) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1)
            return
        if m.timed:
            what = f"{m.median_s * 1e3:.3f} ms ({m.calls} calls)"
        elif m.status == core.PENDING:
            what = "queued for the onnxruntime worker"
        else:
            what = f"{m.status}" + (f": {m.note}" if m.note else "")
        print(f"[{self.done}/{self.total}] {label}: {what}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def run_impl(case: Case, impl: core.Impl, ctx: Context, deferred: list) -> Measurement:
    m = Measurement(impl=impl.name, ours=impl.ours, status=core.ERROR)
    try:
        prepared = impl.build()
    except core.Unavailable as exc:
        m.status, m.note = core.NOT_AVAILABLE, str(exc)
        return m
    except core.Missing as exc:
        m.status, m.note = core.MISSING, str(exc)
        return m
    except core.Skipped as exc:
        m.status, m.note = core.SKIPPED, str(exc)
        return m
    except Exception as exc:
        m.note = "while preparing: " + _short(exc)
        return m
    m.extra.update(prepared.extra)
    if prepared.deferred is not None:
        m.status = core.PENDING
        deferred.append((case, m, prepared.deferred))
        return m
    if prepared.check is not None:
        try:
            check = prepared.check()
        except Exception as exc:
            m.status = core.FAIL if impl.ours else core.ERROR
            m.note = "check raised " + _short(exc)
            return m
        m.max_error, m.tolerance = check.error, check.tolerance
        if check.detail:
            m.note = check.detail
        if check.passed is False:
            m.status = core.FAIL
            return m
    try:
        if prepared.measure_memory and ctx.device == "cpu":
            ctx.memory_probes.append((m, prepared.fn))
        method = ctx.method
        if prepared.check is not None and method.warmup_calls > 0:
            # the check ran the same work once: it is the first warm-up call
            method = dataclasses.replace(method, warmup_calls=method.warmup_calls - 1)
        if impl.ours or ctx.device != "cpu":
            timing = core.measure(prepared.fn, method, prepared.sync)
        else:
            timing = _measure_peer_at_best(prepared, method, ctx, m)
    except Exception as exc:
        m.status, m.note = core.ERROR, "while timing: " + _short(exc)
        return m
    m.status = core.OK
    m.median_s, m.min_s, m.max_s, m.calls = timing.median_s, timing.min_s, timing.max_s, timing.calls
    return m


def _measure_peer_at_best(prepared, method: Method, ctx: Context, m: Measurement) -> core.Timing:
    """An in-process (torch) peer timed at each of the thread counts the ORT
    worker tries; the fastest median is reported and the record says how."""
    import torch

    tried = {}
    try:
        for threads in peers.thread_candidates(ctx.threads):
            torch.set_num_threads(threads)
            tried[threads] = core.measure(prepared.fn, method, prepared.sync)
    finally:
        torch.set_num_threads(ctx.threads)
    best = min(tried, key=lambda t: tried[t].median_s)
    m.extra["run"] = {"process": "bench process (in-process peer, timed alone)", "threads": best,
                      "threads_tried": {str(t): r.median_s for t, r in tried.items()},
                      "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(("OMP_", "MKL_", "KMP_"))}}
    return tried[best]


def _run_deferred(deferred: list, ctx: Context, progress: Progress) -> None:
    jobs = []
    for index, (case, m, job) in enumerate(deferred):
        job_id = f"{index:03d}-{case.key}-{m.impl}".replace("/", "_")
        jobs.append({"id": job_id, "onnx": str(job["onnx"]), "inputs": str(job["inputs"]),
                     "quantize": bool(job.get("quantize")), "output": str(ctx.workdir / f"{job_id}.out.npz")})
    progress.start(f"onnxruntime worker ({len(jobs)} cells)")
    worker = peers.run_worker(jobs, ctx.threads, ctx.method, ctx.workdir, cpus=ctx.cpus)
    results = worker["results"]
    for (case, m, job), spec in zip(deferred, jobs):
        result = results.get(spec["id"], {"status": "error", "note": "no result from the worker"})
        m.status = result["status"]
        m.note = result.get("note", "")
        if m.status == core.OK:
            m.median_s, m.min_s, m.max_s, m.calls = (result["median_s"], result["min_s"], result["max_s"],
                                                     result["calls"])
            if "model_bytes" in result:
                m.extra["model_bytes"] = result["model_bytes"]
            if "run" in result:
                m.extra["run"] = {**result["run"], "bench_before_start": worker["quiet"]}
            on_output = job.get("on_output")
            if on_output is not None:
                import numpy as np

                try:
                    with np.load(result["output"]) as data:
                        check = on_output(data["output"])
                    m.max_error, m.tolerance = check.error, check.tolerance
                except Exception as exc:
                    m.note = "error check raised " + _short(exc)
        progress.finish(f"{case.key} {m.impl}", m)


def run_memory_probes(ctx: Context, progress: Progress | None = None) -> None:
    """Peak memory of the cells that asked for it, one call each, after all timing
    (see core.return_large_blocks_to_os for why it must come last)."""
    if not ctx.memory_probes:
        return
    if progress is not None:
        progress.start(f"peak memory ({len(ctx.memory_probes)} cells)")
    exact = core.return_large_blocks_to_os()
    for m, fn in ctx.memory_probes:
        try:
            m.extra["peak_rss_mib"] = core.peak_rss_growth(fn)
            m.extra["peak_rss_exact"] = exact
        except Exception as exc:
            m.extra["peak_rss_error"] = _short(exc)
    ctx.memory_probes.clear()


def run_plan(cases: list[Case], ctx: Context, peak_gflops: float | None, progress: Progress | None = None) -> None:
    """Fill ``measurements`` of every case (in place)."""
    total = sum(len(c.impls) for c in cases)
    own_progress = progress is None
    progress = progress or Progress(total)
    deferred: list = []
    try:
        for case in cases:
            for impl in case.impls:
                label = f"{case.key} {impl.name}"
                progress.start(label)
                try:
                    m = run_impl(case, impl, ctx, deferred)
                except Exception as exc:  # a bug in a suite must not end the run
                    m = Measurement(impl=impl.name, ours=impl.ours, status=core.ERROR, note=_short(exc))
                    traceback.print_exc(file=sys.stderr)
                case.measurements.append(m)
                if m.status != core.PENDING:
                    progress.finish(label, m)
            if case.cleanup is not None:
                case.cleanup()
        if deferred:
            _run_deferred(deferred, ctx, progress)
    finally:
        if own_progress:
            progress.close()
    for case in cases:
        for m in case.measurements:
            core.fill_rates(m, case.flops, peak_gflops)
        roofline.fill(case, ctx.bandwidth, ctx.threads)


def run(ctx: Context, suites: list[str], plan_fn: Callable[[str, Context], list[Case]],
        progress_stream=None, tty: bool | None = None) -> dict:
    """Plan and run ``suites``; returns the report (the JSON document)."""
    import torch

    if ctx.cpus is None:
        ctx.cpus = peers.allowed_cpus()
    torch.set_num_threads(ctx.threads)
    started = time.perf_counter()
    machine = core.machine_info(ctx.threads, ctx.device)
    own_tmp = None
    if ctx.workdir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="fastlstm-bench-")
        ctx.workdir = Path(own_tmp.name)
    try:
        sgemm = core.sgemm_peak(ctx.method, ctx.sgemm_size or (1024 if ctx.quick else 2048), ctx.device)
        if ctx.device == "cpu" and ctx.bandwidth is None:
            ctx.bandwidth = roofline.bandwidth(ctx.threads, min_time=0.2 if ctx.quick else 0.5)
        plans = []
        for suite in suites:
            try:
                cases = plan_fn(suite, ctx)
            except Exception as exc:
                cases = [Case(suite, "-", "-", {}, note=f"planning failed: {_short(exc)}")]
                cases[0].measurements.append(Measurement("fastlstm", True, core.ERROR, note=_short(exc)))
            plans.append((suite, cases))
        total = sum(len(c.impls) for _, cases in plans for c in cases)
        progress = Progress(total, stream=progress_stream, tty=tty)
        try:
            for suite, cases in plans:
                run_plan(cases, ctx, sgemm["peak_gflops"], progress)
                ctx.cache.clear()
            run_memory_probes(ctx, progress)
        finally:
            progress.close()
    finally:
        if own_tmp is not None:
            own_tmp.cleanup()
            ctx.workdir = None
    return {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine, "load_average_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "method": {**ctx.method.__dict__, "description": ctx.method.describe(),
                   "timer": "time.perf_counter per call", "flops": "see fastlstm/bench/shapes.py"},
        "suites": suites,
        "sgemm": sgemm,
        "bandwidth": ctx.bandwidth,
        "runtime_s": time.perf_counter() - started,
        "cases": [c.to_json() for _, cases in plans for c in cases],
    }
