"""The design document's desktop budgets (seeds/000, "Performance Considerations"):
inference < 200 ms for a day (T = 1440 events), model file < 30 MB, peak process
memory < 150 MB, for the torch path (``ProductivityLSTM.from_pretrained`` +
``predict``) and the torch-free runtime path (``fastlstm.runtime.ProductivityApp``).

Inference: median of ``--repeats`` interleaved runs in one process, batch 1, from
raw events (encode + model + labels/spans/forecast) and from features (model only).
Peak memory: VmHWM of a fresh process that loads the file and predicts one day.
Weights are random (timing and memory do not depend on their values).

Run: PYTHONPATH=. python benchmarks/productivity_budgets.py [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta

import numpy as np
import torch

import fastlstm.runtime as rt
from fastlstm.models import ActivityEncoder, ProductivityLSTM, synthetic_activity_log
from fastlstm.runtime.events import ActivityEvent

T = 1440
CONFIGS = {"128/64 dense": None, "128/64 window 64": 64}

CHILD = """
import sys, time
t0 = time.perf_counter()
path, kind, rows = sys.argv[1], sys.argv[2], __import__("json").loads(sys.argv[3])
if kind == "torch":
    import torch
    torch.set_num_threads({threads})
    from fastlstm.models import ProductivityLSTM
    model = ProductivityLSTM.from_pretrained(path)
    pred = model.predict(rows, need_weights=False)
else:
    import fastlstm.runtime as rt
    rt.set_num_threads({threads})
    pred = rt.ProductivityApp.load(path).predict(rows)
assert len(pred.patterns) == len(rows)
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0] / 1024
print(hwm, time.perf_counter() - t0, "torch" in sys.modules)
"""


def day_of_events(seed: int = 0) -> list[ActivityEvent]:
    """T one-minute events (a busy day), apps and scores from the synthetic generator."""
    log = synthetic_activity_log(days=7, seed=seed)
    src = [e for e in log.events][:T]
    while len(src) < T:
        src = src + src
    start = datetime(2026, 1, 6)
    return [ActivityEvent(start + timedelta(minutes=i), e.app, 55.0, e.score) for i, e in enumerate(src[:T])]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rt.set_num_threads(args.threads)
    events = day_of_events()
    encoder = ActivityEncoder().fit(synthetic_activity_log(days=28, seed=1).events)
    rows = [(e.timestamp.isoformat(), e.app, e.duration, e.score) for e in events]
    tmp = tempfile.mkdtemp()
    cands, files = {}, {}
    for name, window in CONFIGS.items():
        torch.manual_seed(0)
        model = ProductivityLSTM(encoder.input_dim, 64, (128, 64), output_dim=5, attention_window=window).eval()
        model.encoder = encoder
        for dtype in ("float32", "int8"):
            path = os.path.join(tmp, f"{name.replace(' ', '_').replace('/', '-')}_{dtype}.safetensors")
            model.save_pretrained(path, dtype=dtype)
            files[name, dtype] = path
        torch_model = ProductivityLSTM.from_pretrained(files[name, "float32"])
        x = torch.from_numpy(encoder.encode_events(events).numpy())[None]

        def torch_features(m=torch_model, x=x):
            with torch.no_grad():
                m(x, need_weights=False)

        cands[f"torch fp32, {name}", "events"] = lambda m=torch_model: m.predict(events, need_weights=False)
        cands[f"torch fp32, {name}", "features"] = torch_features
        for dtype in ("float32", "int8"):
            app = rt.ProductivityApp.load(files[name, dtype])
            feats = app.features(events)
            label = f"runtime {'fp32' if dtype == 'float32' else 'int8'}, {name}"
            cands[label, "events"] = lambda a=app: a.predict(events)
            cands[label, "features"] = lambda a=app, f=feats: a.outputs(f)
    times = {k: [] for k in cands}
    for k, fn in cands.items():  # warm-up
        fn()
    for _ in range(args.repeats):
        for k, fn in cands.items():  # interleaved: machine load hits every candidate alike
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1e3)
    import json

    child = CHILD.format(threads=args.threads)
    print(f"CPU: {cpu_model()}; {args.threads} threads; median of {args.repeats}; T = {T}; {platform.python_version()}")
    print("\n| path | inference from events ms | from features ms | file MB | peak RSS MB (fresh process) | torch imported |")
    print("|---|---:|---:|---:|---:|---|")
    for label in dict.fromkeys(k[0] for k in cands):
        kind = "torch" if label.startswith("torch") else "runtime"
        name = label.split(", ", 1)[1]
        dtype = "int8" if "int8" in label else "float32"
        path = files[name, dtype]
        out = subprocess.run([sys.executable, "-c", child, path, kind, json.dumps(rows)], capture_output=True,
                             text=True, check=True).stdout.split()
        print(f"| {label} | {statistics.median(times[label, 'events']):.1f} | "
              f"{statistics.median(times[label, 'features']):.1f} | {os.path.getsize(path) / 1e6:.2f} | "
              f"{float(out[0]):.1f} | {out[2]} |")
    print("\nBudgets: inference < 200 ms, file < 30 MB, peak memory < 150 MB.")


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
