"""Peers that are not torch itself: availability, ONNX export, and the
ONNX Runtime worker process.

ONNX Runtime runs in its own torch-free process (``ort_worker.py``), after
every in-process cell has been timed, so the two runtimes never share a
process or compete for the cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
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


def run_worker(jobs: list[dict], threads: int, method, workdir: Path, timeout: float = 1800) -> dict:
    """Run the ONNX Runtime jobs in a fresh process; returns ``{id: result}``."""
    job_path = workdir / "ort_jobs.json"
    result_path = workdir / "ort_results.json"
    spec = {"threads": threads, "jobs": jobs,
            "method": {"min_calls": method.min_calls, "min_time": method.min_time,
                       "warmup_calls": method.warmup_calls, "max_calls": method.max_calls}}
    job_path.write_text(json.dumps(spec))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    worker = Path(__file__).with_name("ort_worker.py")
    proc = subprocess.run([sys.executable, str(worker), str(job_path), str(result_path)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0 or not result_path.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        reason = f"onnxruntime worker exited with {proc.returncode}: {tail[0][:200]}"
        return {job["id"]: {"status": "error", "note": reason} for job in jobs}
    return json.loads(result_path.read_text())["results"]
