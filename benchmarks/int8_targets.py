"""int8 targets of issue 5: fastlstm int8 (runtime and QuantizedLSTM) against
torch.ao dynamic int8 LSTM and ONNX Runtime's quantize_dynamic LSTM, with max
error against fp32, on S1, S2, S3, S5; plus the torch-free runtime's fresh-process
peak RSS and start-to-first-output time (S2 through a 2-layer bi LSTM).

Run: PYTHONPATH=. python benchmarks/int8_targets.py [--repeats 7] [--threads 2]
Implementations run round-robin (interleaved) so machine load hits all alike;
medians are reported with ratios from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
from torch import nn

import fastlstm
import fastlstm.runtime as rt

SHAPES = {
    "S1": dict(B=1, T=288, I=32, H=128, L=2, bi=True),
    "S2": dict(B=1, T=1440, I=32, H=128, L=2, bi=True),
    "S3": dict(B=64, T=288, I=32, H=128, L=2, bi=True),
    "S5": dict(B=32, T=128, I=256, H=512, L=1, bi=False),
}


def ort_int8(m: nn.LSTM, x: torch.Tensor, threads: int, tmp: str):
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp, q = os.path.join(tmp, "m.onnx"), os.path.join(tmp, "mq.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), fp, input_names=["x"], output_names=["y", "h", "c"], opset_version=17,
                          dynamo=False)
    import logging

    logging.getLogger().setLevel(logging.ERROR)
    quantize_dynamic(fp, q, weight_type=QuantType.QInt8)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(q, so, providers=["CPUExecutionProvider"])
    xn = x.numpy()
    return lambda: sess.run(["y"], {"x": xn})[0]


def torch_int8(m: nn.LSTM):
    import torch.ao.nn.quantized.dynamic as nnqd
    from torch.ao.quantization import default_dynamic_qconfig

    m.qconfig = default_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nnqd.LSTM.from_float(m)


def bench_shape(name: str, s: dict, threads: int, repeats: int, tmp: str) -> dict:
    torch.manual_seed(0)
    m = nn.LSTM(s["I"], s["H"], num_layers=s["L"], bidirectional=s["bi"]).eval()
    x = torch.randn(s["T"], s["B"], s["I"])
    with torch.no_grad():
        ref = m(x)[0].numpy()
    path = os.path.join(tmp, f"{name}.safetensors")
    q = fastlstm.quantize_dynamic(m)
    fastlstm.export(q, path)
    model = rt.load(path)
    tq = torch_int8(m)
    xn = x.numpy()
    fns = {
        "fastlstm int8 (runtime)": lambda: model(xn)[0],
        "fastlstm int8 (QuantizedLSTM)": lambda: q(x)[0].numpy(),
        "torch.ao dynamic int8": lambda: tq(x)[0].numpy(),
        "ORT int8": ort_int8(m, x, threads, tmp),
    }
    times = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    err = {}
    with torch.no_grad():
        for k, fn in fns.items():  # warm-up and error
            out = fn()
            err[k] = float(np.abs(out.reshape(ref.shape) - ref).max())
        for _ in range(repeats):
            for k, fn in fns.items():
                time.sleep(0.1)  # let the previous implementation's spinning worker threads go idle
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"median_s": med, "min_s": {k: min(v) for k, v in times.items()},
            "cpu_median_s": {k: statistics.median(v) for k, v in cpu.items()}, "max_err": err}


CHILD = r"""
import time, resource, sys
t0 = time.perf_counter()
import numpy as np
tn = time.perf_counter()
import fastlstm.runtime as rt
m = rt.load(sys.argv[1])
x = np.random.default_rng(0).standard_normal((1440, 1, 32)).astype(np.float32)
y = m(x)[0]
t1 = time.perf_counter()
# VmHWM: this process's peak RSS (ru_maxrss would carry the parent's peak across fork+exec).
hwm = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
print(f"{t1 - t0:.4f} {hwm} {'torch' in sys.modules} {tn - t0:.4f}", flush=True)
"""


def runtime_process(tmp: str, threads: int) -> dict:
    m = nn.LSTM(32, 128, num_layers=2, bidirectional=True)
    res = {}
    for dtype in ("int8", "float32"):
        path = os.path.join(tmp, f"rt_{dtype}.safetensors")
        fastlstm.export(fastlstm.quantize_dynamic(m) if dtype == "int8" else m, path)
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", CHILD, path], capture_output=True, text=True,
                                 env=dict(os.environ, OMP_NUM_THREADS=str(threads)), check=True).stdout.split()
            wall = time.perf_counter() - t0
            runs.append((wall, float(out[0]), int(out[1]) / 1024, out[2], float(out[3])))
        res[dtype] = {
            "process_wall_s": statistics.median(r[0] for r in runs),
            "in_process_s": statistics.median(r[1] for r in runs),
            "of_which_numpy_import_s": statistics.median(r[4] for r in runs),
            "peak_rss_mb": max(r[2] for r in runs),
            "torch_imported": runs[0][3],
            "file_kb": os.path.getsize(path) / 1024,
        }
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shapes", default="S1,S2,S3,S5")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rt.set_num_threads(args.threads)
    results = {"threads": args.threads, "kernels": fastlstm._ext._C.int8_kernel_info()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.shapes.split(","):
            r = bench_shape(name, SHAPES[name], args.threads, args.repeats, tmp)
            results[name] = r
            ours = r["median_s"]["fastlstm int8 (runtime)"]
            print(f"\n{name} {SHAPES[name]}")
            print(f"  {'implementation':32s} {'median ms':>10s} {'min ms':>8s} {'cpu ms':>8s} {'max err':>9s}")
            for k, v in r["median_s"].items():
                print(f"  {k:32s} {v * 1e3:10.2f} {r['min_s'][k] * 1e3:8.2f} {r['cpu_median_s'][k] * 1e3:8.2f} "
                      f"{r['max_err'][k]:9.2e}")
            for stat in ("median_s", "min_s", "cpu_median_s"):
                o = r[stat]["fastlstm int8 (runtime)"]
                print(f"  [{stat}] ours/ORT = {o / r[stat]['ORT int8']:.3f}   "
                      f"ours/torch.ao = {o / r[stat]['torch.ao dynamic int8']:.3f}")
        results["runtime_process"] = runtime_process(tmp, args.threads)
        print("\nruntime, S2 through a 2-layer bi LSTM, fresh process:")
        for k, v in results["runtime_process"].items():
            print(f"  {k}: {json.dumps(v)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
