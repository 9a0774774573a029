"""Helpers for the pytest-benchmark suites in ``benchmarks/``: the same cells as
``fastlstm bench``, built by its suite code, checked first, then timed by
pytest-benchmark. Absent features or peers skip with the reason.

Threads: ``FASTLSTM_BENCH_THREADS`` (default: torch's setting). ONNX Runtime
peers run in the pytest process here (pytest-benchmark times in-process); the
``fastlstm bench`` figures run them in their own process.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from fastlstm.bench import core, runner
from fastlstm.bench.suites import plan

_THREADS = int(os.environ.get("FASTLSTM_BENCH_THREADS", "0")) or torch.get_num_threads()
_WORKDIR = Path(tempfile.mkdtemp(prefix="fastlstm-benchmarks-"))


def make_context(full: bool | None = None) -> runner.Context:
    """The suites' context; ``full`` defaults to ``FASTLSTM_BENCH_SUITE`` (full unless it says quick)."""
    if full is None:
        full = os.environ.get("FASTLSTM_BENCH_SUITE", "full") != "quick"
    method = core.METHODS["full" if full else "quick"]
    return runner.Context(method=method, threads=_THREADS, quick=not full, workdir=_WORKDIR)


def cells(suite: str, ctx: runner.Context, impls=None):
    """``pytest.param(case, impl, id=...)`` for every planned cell of ``suite``."""
    out = []
    for case in plan(suite, ctx):
        for impl in case.impls:
            if impls is None or impl.name in impls:
                out.append(pytest.param(case, impl, id=f"{case.name}-{case.mode}-{impl.name}".replace(" ", "_")))
    return out


def _ort_fn(job: dict):
    """In-process ONNX Runtime session for a deferred job (pytest-benchmark needs the call here)."""
    ort = pytest.importorskip("onnxruntime")
    import numpy as np

    path = str(job["onnx"])
    if job.get("quantize"):
        from onnxruntime.quantization import QuantType, quantize_dynamic

        qpath = path.replace(".onnx", ".int8.onnx")
        if not os.path.exists(qpath):
            quantize_dynamic(path, qpath, weight_type=QuantType.QInt8)
        path = qpath
    options = ort.SessionOptions()
    options.intra_op_num_threads = _THREADS
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    with np.load(job["inputs"]) as data:
        feeds = {name: data[name] for name in data.files}
    return lambda: session.run(None, feeds)


def run_cell(benchmark, case, impl, ctx) -> None:
    """Build, check, then time one cell; absent features/peers skip with the reason."""
    torch.set_num_threads(ctx.threads)
    try:
        prepared = impl.build()
    except (core.Unavailable, core.Missing, core.Skipped) as exc:
        pytest.skip(f"{impl.name}: {exc}")
    if prepared.deferred is not None:
        fn = _ort_fn(prepared.deferred)
    else:
        fn = prepared.fn
        if prepared.check is not None:
            check = prepared.check()
            if check.passed is False:
                pytest.fail(f"{impl.name} {case.key}: error {check.error:.3g} above {check.tolerance:.3g} "
                            f"{check.detail}")
    benchmark.group = case.key
    benchmark.extra_info.update(case=case.key, impl=impl.name, ours=impl.ours, flops=case.flops,
                                threads=ctx.threads, params=case.params)
    benchmark.pedantic(fn, rounds=ctx.method.min_calls, warmup_rounds=ctx.method.warmup_calls, iterations=1)
