"""GPU benchmark: fastlstm.LSTM (backends cuda, triton) against torch.nn.LSTM (cuDNN).

Prints microseconds per time step and the ratio to cuDNN in the same dtype
(< 1 means fastlstm is faster), forward and forward + backward, fp32, bf16
and fp16.
Before timing a row, it checks fastlstm's output against cuDNN's (error rule
of fastlstm.testing against an fp64 run) and marks failures instead of
reporting a speed.

    python benchmarks/bench_gpu.py                  # every shape, dtype, backend
    python benchmarks/bench_gpu.py --shapes S1 S3 --dtypes bf16 --backends cuda

Shapes (B, T, I, H, layers, directions): S1-S5 of the CPU issue and the
B=16, T=1024, H=768 shape public GPU RNN kernels report ("L768", where the
issue's target compares bf16 fastlstm with cuDNN fp16 forward: see the
``cudnn-fp16`` column).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings

import torch

import fastlstm
from fastlstm.testing import within_error_rule

SHAPES = {
    "S1": dict(B=1, T=288, I=32, H=128, L=2, bi=True),
    "S2": dict(B=1, T=1440, I=32, H=128, L=2, bi=True),
    "S3": dict(B=64, T=288, I=32, H=128, L=2, bi=True),
    "S4": dict(B=1, T=64, I=256, H=256, L=1, bi=False),
    "S5": dict(B=32, T=128, I=256, H=512, L=1, bi=False),
    "L768": dict(B=16, T=1024, I=768, H=768, L=1, bi=False),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _time_us(fn, warmup: int, repeat: int) -> float:
    """Median wall time of fn() in microseconds, measured with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000.0)
    return statistics.median(times)


def _runner(module, x, backward: bool):
    def run():
        if backward:
            x.grad = None
            out, (h, c) = module(x)
            (out.float().sum() + c.float().sum()).backward()
        else:
            with torch.no_grad():
                module(x)

    return run


def _check(fast, torch_lstm, x) -> str:
    """'ok' when fastlstm's output passes the error rule against cuDNN (both vs fp64)."""
    with torch.no_grad():
        out_f, _ = fast(x)
        out_t, _ = torch_lstm(x)
        ref64 = torch_lstm.double()(x.double())[0]
        torch_lstm.to(x.dtype)
    ok, err, peer = within_error_rule(out_f, out_t, ref64, floor=1e-2 if x.dtype != torch.float32 else 1e-5)
    return "ok" if ok else f"FAIL(err {err:.2e} vs cuDNN {peer:.2e})"


def bench_shape(name: str, dtype_name: str, backends: list[str], warmup: int, repeat: int) -> list[dict]:
    s = SHAPES[name]
    dtype = DTYPES[dtype_name]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_lstm = torch.nn.LSTM(s["I"], s["H"], num_layers=s["L"], bidirectional=s["bi"]).cuda().to(dtype)
    x = torch.randn(s["T"], s["B"], s["I"], device="cuda", dtype=dtype, requires_grad=True)
    rows = []
    for backward in (False, True):
        peer = _time_us(_runner(torch_lstm, x, backward), warmup, repeat)
        peer16 = None
        if name == "L768" and dtype == torch.bfloat16 and not backward:
            lstm16 = torch.nn.LSTM(s["I"], s["H"]).cuda().half()
            x16 = x.detach().half()
            peer16 = _time_us(_runner(lstm16, x16, False), warmup, repeat)
        for backend in backends:
            fast = fastlstm.LSTM.from_torch(torch_lstm, backend=backend)
            row = dict(shape=name, dtype=dtype_name, pass_="fwd+bwd" if backward else "fwd", backend=backend,
                       cudnn_us=peer / s["T"], cudnn16_us=None if peer16 is None else peer16 / s["T"])
            try:
                row["check"] = _check(fast, torch_lstm, x.detach())
                if row["check"] == "ok":
                    row["us"] = _time_us(_runner(fast, x, backward), warmup, repeat) / s["T"]
            except (RuntimeError, NotImplementedError) as exc:
                row["check"] = f"error: {exc}".splitlines()[0][:80]
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--backends", nargs="+", default=["cuda", "triton"], choices=["cuda", "triton"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU available", file=sys.stderr)
        return 2
    backends = [b for b in args.backends if b in fastlstm.available_backends("cuda", torch.float32)]
    for missing in set(args.backends) - set(backends):
        print(f"bench_gpu: backend {missing!r} unavailable here, skipped", file=sys.stderr)
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  cudnn {torch.backends.cudnn.version()}")
    header = f"{'shape':6} {'dtype':5} {'pass':8} {'backend':7} {'us/step':>9} {'cuDNN':>9} {'ratio':>6}  check"
    print(header)
    print("-" * len(header))
    for name in args.shapes:
        for dtype_name in args.dtypes:
            for row in bench_shape(name, dtype_name, backends, args.warmup, args.repeat):
                us = row.get("us")
                ratio = f"{us / row['cudnn_us']:6.2f}" if us is not None else "     -"
                line = (f"{row['shape']:6} {row['dtype']:5} {row['pass_']:8} {row['backend']:7} "
                        f"{us if us is not None else float('nan'):9.2f} {row['cudnn_us']:9.2f} {ratio}  {row['check']}")
                if row["cudnn16_us"] is not None and us is not None:
                    line += f"  (cuDNN fp16 fwd {row['cudnn16_us']:.2f} us/step, ratio {us / row['cudnn16_us']:.2f})"
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
