"""ONNX Runtime peer, run as a separate, torch-free process.

``python ort_worker.py job.json result.json`` (run by path, so that importing
it does not import fastlstm or torch). The bench starts it with a clean
environment (``peers.worker_env``: no OMP/MKL/KMP/GOMP/FASTLSTM variables)
once its own thread pools have gone quiet; the worker then resets its CPU
affinity to the set the job names, so nothing the bench process did (torch's
OpenMP team, a narrowed affinity inherited by the child) reaches ONNX Runtime.

For each job it optionally quantises the model with
``onnxruntime.quantization.quantize_dynamic`` (int8 weights), then for every
configuration in ``candidates`` (each intra-op thread count of
``thread_candidates``, with and without spinning threads) creates a fresh
session (``session_options``), checks the output runs, times it with the same
method as the main process, and keeps the fastest median. The first output is saved
so the main process can compute its error.

Job file: ``{"threads": int, "thread_candidates": [int], "cpus": [int] | null,
"method": {"min_calls", "min_time", "warmup_calls", "max_calls"},
"jobs": [{"id", "onnx", "inputs" (npz), "quantize" (bool), "output" (npz path)}]}``.
Result file: ``{"versions": {...}, "settings": {config_key: settings}, "results": {id: {"status",
"median_s", "min_s", "max_s", "calls", "note", "output", "run"}}}``; ``run`` says how the
peer was run (process, configurations tried and their medians, session settings, env, affinity).
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import time
import traceback

# Environment variables that change how a threaded runtime behaves; the worker
# reports the ones it sees (the bench starts it with none of them).
THREADING_ENV_PREFIXES = ("OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "ORT_", "FASTLSTM_", "LD_PRELOAD")


def threading_env() -> dict:
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(THREADING_ENV_PREFIXES)}


def candidates(thread_counts: list[int]) -> list[dict]:
    """The configurations tried per job: each thread count with spinning
    intra-op threads (ORT's default), and the multi-thread ones also without:
    a spinning pool waiting at a barrier for a thread the OS has descheduled
    (anything else runnable on a 2-core machine) can run 2-3x slower."""
    out = [{"threads": t, "allow_spinning": "1"} for t in thread_counts]
    return out + [{"threads": t, "allow_spinning": "0"} for t in thread_counts if t > 1]


def config_key(config: dict) -> str:
    return f"{config['threads']}t" + ("" if config["allow_spinning"] == "1" else "-nospin")


def session_options(ort, config: dict):
    """ONNX Runtime's defaults except the thread counts and spinning: intra-op
    ``threads``, one inter-op thread (sequential execution), all graph
    optimisations."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = config["threads"]
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", config["allow_spinning"])
    return options


def settings(ort, options) -> dict:
    """Everything that decides how fast a session runs, read back from the
    options and the process: compared by the tests against a clean process."""
    return {
        "intra_op_num_threads": options.intra_op_num_threads,
        "inter_op_num_threads": options.inter_op_num_threads,
        "execution_mode": str(options.execution_mode),
        "graph_optimization_level": str(options.graph_optimization_level),
        "allow_spinning": options.get_session_config_entry("session.intra_op.allow_spinning"),
        "providers": ["CPUExecutionProvider"],
        "env": threading_env(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "onnxruntime": ort.__version__,
    }


def _measure(fn, method: dict) -> dict:
    for _ in range(method["warmup_calls"]):
        fn()
    times = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if len(times) >= method["min_calls"] and elapsed >= method["min_time"]:
            break
        if len(times) >= method["max_calls"]:
            break
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "calls": len(times), "total_s": elapsed}


def _model_path(job: dict) -> str:
    path = job["onnx"]
    if job.get("quantize"):
        from onnxruntime.quantization import QuantType, quantize_dynamic

        qpath = os.path.splitext(path)[0] + ".int8.onnx"
        if not os.path.exists(qpath):
            quantize_dynamic(path, qpath, weight_type=QuantType.QInt8)
        path = qpath
    return path


def _time_session(ort, path: str, feeds: dict, config: dict, method: dict, output: str | None) -> dict:
    options = session_options(ort, config)
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    try:
        outputs = session.run(None, feeds)
        if output is not None:
            import numpy as np

            np.savez(output, output=outputs[0])
        return _measure(lambda: session.run(None, feeds), method)
    finally:
        # The session's spinning intra-op threads must be gone before the next is timed.
        del session
        gc.collect()


def _run_job(ort, job: dict, spec: dict) -> dict:
    import numpy as np

    path = _model_path(job)
    with np.load(job["inputs"]) as data:
        feeds = {name: data[name] for name in data.files}
    tried, configs = {}, {config_key(c): c for c in candidates(spec["thread_candidates"])}
    for key, config in configs.items():
        first = not tried
        tried[key] = _time_session(ort, path, feeds, config, spec["method"], job["output"] if first else None)
    best = min(tried, key=lambda k: tried[k]["median_s"])
    result = dict(tried[best])
    result.update(status="ok", output=job["output"], model_bytes=os.path.getsize(path))
    result["run"] = {
        "process": "ort_worker (own torch-free process, clean env)",
        "threads": configs[best]["threads"],
        "config": best,
        "configs_tried": {k: r["median_s"] for k, r in tried.items()},
        **settings(ort, session_options(ort, configs[best])),
    }
    return result


def main(argv: list[str]) -> int:
    job_path, result_path = argv[1], argv[2]
    with open(job_path) as f:
        spec = json.load(f)
    spec.setdefault("thread_candidates", [spec["threads"]])
    if spec.get("cpus") and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, spec["cpus"])
    results: dict = {}
    versions: dict = {}
    report: dict = {"versions": versions, "results": results}
    try:
        import onnxruntime as ort

        versions["onnxruntime"] = ort.__version__
    except ImportError as exc:
        for job in spec["jobs"]:
            results[job["id"]] = {"status": "missing", "note": f"onnxruntime is not installed ({exc})"}
        ort = None
    if ort is not None:
        report["settings"] = {config_key(c): settings(ort, session_options(ort, c))
                              for c in candidates(spec["thread_candidates"])}
        for job in spec["jobs"]:
            try:
                results[job["id"]] = _run_job(ort, job, spec)
            except Exception as exc:  # report each failing job, keep going
                last = traceback.format_exc().strip().splitlines()[-1]
                results[job["id"]] = {"status": "error", "note": f"{type(exc).__name__}: {exc}"[:300] or last}
            print(f"done {job['id']}", flush=True)
    with open(result_path, "w") as f:
        json.dump(report, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
