"""ONNX Runtime peer, run as a separate, torch-free process.

``python ort_worker.py job.json result.json`` (run by path, so that importing
it does not import fastlstm or torch): onnxruntime's thread pools and its
OpenMP/MLAS start-up would otherwise share the process with torch's and
distort both. For each job it optionally quantises the model with
``onnxruntime.quantization.quantize_dynamic`` (int8 weights), creates a
session with ``intra_op_num_threads = threads``, checks the output runs,
times it with the same method as the main process and saves the first output
so the main process can compute its error.

Job file: ``{"threads": int, "method": {"min_calls", "min_time", "warmup_calls", "max_calls"},
"jobs": [{"id", "onnx", "inputs" (npz), "quantize" (bool), "output" (npz path)}]}``.
Result file: ``{"versions": {...}, "results": {id: {"status", "median_s", "min_s",
"max_s", "calls", "note", "output"}}}``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import traceback


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


def _run_job(ort, job: dict, threads: int, method: dict) -> dict:
    import numpy as np

    path = job["onnx"]
    if job.get("quantize"):
        from onnxruntime.quantization import QuantType, quantize_dynamic

        qpath = os.path.splitext(path)[0] + ".int8.onnx"
        if not os.path.exists(qpath):
            quantize_dynamic(path, qpath, weight_type=QuantType.QInt8)
        path = qpath
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    with np.load(job["inputs"]) as data:
        feeds = {name: data[name] for name in data.files}
    outputs = session.run(None, feeds)
    np.savez(job["output"], output=outputs[0])
    result = _measure(lambda: session.run(None, feeds), method)
    result.update(status="ok", output=job["output"], model_bytes=os.path.getsize(path))
    return result


def main(argv: list[str]) -> int:
    job_path, result_path = argv[1], argv[2]
    with open(job_path) as f:
        spec = json.load(f)
    results: dict = {}
    versions: dict = {}
    try:
        import onnxruntime as ort

        versions["onnxruntime"] = ort.__version__
    except ImportError as exc:
        for job in spec["jobs"]:
            results[job["id"]] = {"status": "missing", "note": f"onnxruntime is not installed ({exc})"}
        ort = None
    if ort is not None:
        for job in spec["jobs"]:
            try:
                results[job["id"]] = _run_job(ort, job, spec["threads"], spec["method"])
            except Exception as exc:  # report each failing job, keep going
                last = traceback.format_exc().strip().splitlines()[-1]
                results[job["id"]] = {"status": "error", "note": f"{type(exc).__name__}: {exc}"[:300] or last}
            print(f"done {job['id']}", flush=True)
    with open(result_path, "w") as f:
        json.dump({"versions": versions, "results": results}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
