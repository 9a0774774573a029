"""A memory roofline per LSTM case: the recurrence is a chain of T dependent
matrix-vector products, so each step must stream every layer's W_hh
(4H x H per direction) from wherever it lives. The bound is that many bytes
per step at the bandwidth of the cache level that holds them, measured in the
same run by a streaming-read probe.

``bandwidth(threads)`` -> ``{"l2": {...}, "l3": {...}}``: one core reads a
float32 buffer (torch's ``sum`` on one thread) sized to half its L2 (``l2``)
and to several L2s but within the L3 (``l3``); the best call's GB/s times
``threads`` is the bound. One core times the thread count over-states a
shared L3's bandwidth, so the bound is generous, never flattering; a probe
on all threads at once is not used because on a loaded machine its barrier
waits for a descheduled thread and it measures the scheduler.
"""

from __future__ import annotations

import time

# A layer's weights count as L2-resident when they take at most this share
# of the threads' combined L2 (gx, h and the cell state share it).
L2_RESIDENT_SHARE = 0.75
_WEIGHT_BYTES = {"float32": 4, "int8": 1}


def cache_sizes() -> dict:
    """Per-core L2 and shared L3 in bytes, from fastlstm's CPUID reading (or
    conservative defaults without ``_C``)."""
    from fastlstm import _ext

    if _ext.available():
        c = _ext._C.cpu_description()
        if c["l2_bytes"] > 0:
            return {"l2_bytes": c["l2_bytes"], "l3_bytes": c["l3_bytes"] or 8 * c["l2_bytes"]}
    return {"l2_bytes": 1 << 20, "l3_bytes": 16 << 20}


def _probe(nbytes: int, min_time: float) -> float:
    """GB/s of one thread reading ``nbytes`` (best 8-call batch)."""
    import torch

    buf = torch.ones(max(1, nbytes // 4), dtype=torch.float32)
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(3):
            buf.sum()
        best, start = float("inf"), time.perf_counter()
        while time.perf_counter() - start < min_time:
            t0 = time.perf_counter()
            for _ in range(8):
                buf.sum()
            best = min(best, (time.perf_counter() - t0) / 8)
    finally:
        torch.set_num_threads(saved)
    return buf.numel() * 4 / best / 1e9


def bandwidth(threads: int, min_time: float = 0.2) -> dict:
    sizes = cache_sizes()
    l2_set = sizes["l2_bytes"] // 2
    l3_set = min(sizes["l3_bytes"] // 2, max(8 * sizes["l2_bytes"], 8 << 20))
    l2, l3 = _probe(l2_set, min_time), _probe(l3_set, min_time)
    return {
        "probe": f"one core's torch.sum over float32 x {threads} threads, best 8-call batch in {min_time:g} s",
        "l2_bytes_per_core": sizes["l2_bytes"], "l3_bytes": sizes["l3_bytes"], "threads": threads,
        "l2": {"working_set_bytes": l2_set, "gbps_one_core": l2, "gbps": l2 * threads},
        "l3": {"working_set_bytes": l3_set, "gbps_one_core": l3, "gbps": l3 * threads},
    }


def lstm_case_roofline(params: dict, mode: str, bw: dict, threads: int) -> dict | None:
    """The bound for an LSTM case (``params`` as LSTMShape.params plus
    ``dtype``), or None when the case has no LSTM shape."""
    if not all(k in params for k in ("T", "H", "L", "bidirectional")):
        return None
    D = 2 if params["bidirectional"] else 1
    H, T, L = params["H"], params["T"], params["L"]
    per_weight = _WEIGHT_BYTES["int8" if "int8" in str(params.get("dtype", "")) else "float32"]
    layer_bytes = D * 4 * H * H * per_weight
    passes = 2 if mode == "training" else 1  # the backward streams W_hh again, transposed
    step_bytes = passes * L * layer_bytes
    level = "l2" if layer_bytes <= L2_RESIDENT_SHARE * bw["l2_bytes_per_core"] * threads else "l3"
    gbps = bw[level]["gbps"]
    return {"weights_bytes_per_step": step_bytes, "steps": T, "level": level, "bound_gbps": gbps,
            "bound_s": T * step_bytes / (gbps * 1e9)}


def fill(case, bw: dict | None, threads: int) -> None:
    """Set ``case.roofline`` and each timed measurement's ``roofline_fraction``
    (bound time / measured median: 1.0 would be at the roofline)."""
    if bw is None or case.suite not in ("lstm", "int8"):
        return
    roof = lstm_case_roofline(case.params, "training" if case.mode == "training" else "inference", bw, threads)
    if roof is None:
        return
    case.roofline = roof
    for m in case.measurements:
        if m.timed:
            m.extra["roofline_fraction"] = roof["bound_s"] / m.median_s
