"""The bench's building blocks: cases, measurements, the timing method, the
machine's sgemm peak and machine information.

A *case* is one shape in one mode (``lstm/S1/inference``); it holds one
*measurement* per implementation (fastlstm and each peer). An implementation
is planned as an :class:`Impl` whose ``build()`` returns a :class:`Prepared`
(the call to time and the correctness check to run first) or raises
:class:`Unavailable`, :class:`Missing` or :class:`Skipped`, so that nothing is
ever silently dropped: every planned cell ends with a status.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

# Statuses a measurement can end with.
OK = "ok"
FAIL = "FAIL"  # ran, but its result disagreed with the reference: no time shown
ERROR = "error"  # raised while building, checking or running: no time shown
MISSING = "missing"  # a peer that is not installed (e.g. onnxruntime)
NOT_AVAILABLE = "not available"  # a fastlstm feature this build does not have (yet)
SKIPPED = "skipped"  # deliberately not run, with the reason (e.g. needs more memory than the machine has)
PENDING = "pending"  # queued for a worker process (never left in a finished report)
STATUSES = (OK, FAIL, ERROR, MISSING, NOT_AVAILABLE, SKIPPED)


class Unavailable(Exception):
    """A fastlstm feature this installation does not provide."""


class Missing(Exception):
    """A peer that is not installed."""


class Skipped(Exception):
    """A cell deliberately not run (the message says why)."""


@dataclass
class Method:
    """How each cell is timed: ``warmup_calls`` untimed calls, then timed calls
    until both ``min_calls`` and ``min_time`` seconds are reached."""

    name: str
    min_calls: int
    min_time: float
    warmup_calls: int = 2
    max_calls: int = 100_000

    def describe(self) -> str:
        return (f"{self.name}: {self.warmup_calls} warm-up call(s) (a correctness check counts as one), "
                f"then at least {self.min_calls} timed calls "
                f"and at least {self.min_time:g} s per cell; median with min-max")


# The full suite follows the method; the quick suite keeps the same
# statistics on fewer calls so that S1-S5, int8, attention and the models fit
# in 90 s on 2 cores (its medians are noisier, which the output says).
METHODS = {
    "full": Method("full", min_calls=20, min_time=1.0, warmup_calls=3),
    "quick": Method("quick", min_calls=5, min_time=0.1, warmup_calls=1),
}


@dataclass
class Timing:
    median_s: float
    min_s: float
    max_s: float
    calls: int
    total_s: float


def measure(fn: Callable[[], Any], method: Method, sync: Callable[[], None] | None = None) -> Timing:
    """Time ``fn`` by ``method`` (per-call wall-clock, ``sync`` after each call on GPUs)."""
    for _ in range(method.warmup_calls):
        fn()
    if sync is not None:
        sync()
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if len(times) >= method.min_calls and elapsed >= method.min_time:
            break
        if len(times) >= method.max_calls:
            break
    return Timing(statistics.median(times), min(times), max(times), len(times), elapsed)


def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def return_large_blocks_to_os() -> bool:
    """Make glibc serve every allocation of 256 KiB or more with its own mapping,
    returned to the OS on free, so resident memory follows the live tensors
    (its default keeps freed blocks up to 32 MiB for reuse, which hides them
    from RSS). Changes how later allocations cost, so it is only called after
    all timing is done. False where this is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    ok = mallopt(M_MMAP_THRESHOLD, 256 * 1024) == 1 and mallopt(M_TRIM_THRESHOLD, 256 * 1024) == 1
    libc.malloc_trim(0)
    return ok


def peak_rss_growth(fn: Callable[[], Any]) -> float | None:
    """MiB by which this process's peak resident memory rises above its current
    resident memory during one call of ``fn`` (Linux: the peak is reset through
    /proc/self/clear_refs first); None where that is not available."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    before = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    if before is None or peak is None:
        return None
    return max(0, peak - before) / 1024


@dataclass
class Check:
    """Result of a correctness check. ``passed`` is None for peers (information only)."""

    error: float
    tolerance: float | None = None
    passed: bool | None = None
    detail: str = ""


@dataclass
class Prepared:
    """What an implementation's ``build()`` returns.

    ``fn`` is the call that is timed; ``check`` runs once before timing (for
    fastlstm a failing check means the time is not shown). ``deferred``, set
    instead of ``fn`` for peers that run in a worker process, describes the job.
    """

    fn: Callable[[], Any] | None = None
    check: Callable[[], Check] | None = None
    sync: Callable[[], None] | None = None
    deferred: dict | None = None
    measure_memory: bool = False
    extra: dict = field(default_factory=dict)


@dataclass
class Impl:
    name: str
    ours: bool
    build: Callable[[], Prepared]


@dataclass
class Measurement:
    impl: str
    ours: bool
    status: str
    median_s: float | None = None
    min_s: float | None = None
    max_s: float | None = None
    calls: int | None = None
    max_error: float | None = None
    tolerance: float | None = None
    gflops: float | None = None
    peak_fraction: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def timed(self) -> bool:
        return self.status == OK and self.median_s is not None


@dataclass
class Case:
    """One shape in one mode. ``flops`` is the work of one timed call (None if not counted)."""

    suite: str
    name: str
    mode: str
    params: dict
    flops: float | None = None
    impls: list[Impl] = field(default_factory=list, repr=False)
    measurements: list[Measurement] = field(default_factory=list)
    note: str = ""
    cleanup: Callable[[], None] | None = field(default=None, repr=False)
    roofline: dict | None = None  # the memory bound of the case (fastlstm/bench/roofline.py)

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.name}/{self.mode}"

    def to_json(self) -> dict:
        return {
            "suite": self.suite, "name": self.name, "mode": self.mode, "key": self.key,
            "params": self.params, "flops": self.flops, "note": self.note, "roofline": self.roofline,
            "measurements": [dataclasses.asdict(m) for m in self.measurements],
        }


def fill_rates(m: Measurement, flops: float | None, peak_gflops: float | None) -> None:
    if m.timed and flops:
        m.gflops = flops / m.median_s / 1e9
        if peak_gflops:
            m.peak_fraction = m.gflops / peak_gflops


def sgemm_peak(method: Method, size: int = 2048, device: str = "cpu") -> dict:
    """This machine's fp32 GEMM rate: ``torch.mm`` of two ``size x size`` matrices,
    2*size^3 flops per call; ``peak_gflops`` uses the fastest call."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device)
    b = torch.randn(size, size, generator=gen).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else None
    timing = measure(lambda: torch.mm(a, b), method, sync)
    flops = 2.0 * size ** 3
    return {
        "size": size, "flops_per_call": flops, "calls": timing.calls,
        "median_s": timing.median_s, "min_s": timing.min_s, "max_s": timing.max_s,
        "median_gflops": flops / timing.median_s / 1e9, "peak_gflops": flops / timing.min_s / 1e9,
    }


def _cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """lscpu's "Model name" (from /proc/cpuinfo); a VM may show only a generic name."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_vendor() -> str:
    """The vendor and family/model numbers, e.g. "GenuineIntel 6/143" (Sapphire
    Rapids) or "AuthenticAMD 25/17" (Zen 4): they tell machines apart where the
    model name is generic."""
    info = _cpuinfo()
    vendor = info.get("vendor_id") or platform.machine()
    if "cpu family" in info and "model" in info:
        return f"{vendor} {info['cpu family']}/{info['model']}"
    return vendor


def _version(module: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def machine_info(threads: int, device: str) -> dict:
    import torch

    import fastlstm
    from fastlstm import _ext

    info = {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_vendor": cpu_vendor(),
        "cpu_count": os.cpu_count(),
        "isa": _ext.cpu_capability(),
        "detected_isa": _ext._C.detected_cpu_capability() if _ext.available() else None,
        "threads": threads,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "fastlstm": fastlstm.__version__,
            "torch": torch.__version__,
            "numpy": _version("numpy"),
            "onnxruntime": _version("onnxruntime"),
            "onnx": _version("onnx"),
        },
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    return info
