"""Sparse attention targets (issue 6): fastlstm's sliding-window attention
against the dense way of computing the same thing, on CPU.

Shapes: T in {288, 1440, 8192}, embed 128, 4 heads (head dim 32), window
(64, 64), batch 1 and 16. Peers: ``F.scaled_dot_product_attention`` with a
dense boolean mask of the same pattern (op level) and ``nn.MultiheadAttention``
with the same mask as ``attn_mask`` (module level, same weights). Forward and
forward + backward (of a sum loss). Each measurement runs in a fresh
subprocess: time is the best of ``--repeats`` runs after one warm-up; peak
memory is the growth of the process's peak RSS (ru_maxrss) over the peak
before the first call, inputs already allocated. Dense peers whose T x T
matrices would need more than half the available memory are skipped.

    python benchmarks/attention_targets.py --threads 2 [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

EMBED, HEADS, WINDOW = 128, 4, (64, 64)

_WORKER = r"""
import json, sys, time
import torch
import torch.nn.functional as F
from torch import nn
import fastlstm
from fastlstm import reference
from fastlstm.ops import sparse_attention

impl, mode, B, T, threads, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
torch.set_num_threads(threads)
torch.manual_seed(0)
E, H, W = 128, 4, (64, 64)
SETUP = r'''
backward = mode == "fwd+bwd"
if impl in ("sparse_op", "sdpa_masked"):
    q, k, v = (torch.randn(B, H, T, E // H, requires_grad=backward) for _ in range(3))
    if impl == "sparse_op":
        run = lambda: sparse_attention(q, k, v, W, backend="cpu")[0]
    else:
        mask = reference.attention_mask(T, T, W)
        run = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    params = [q, k, v]
else:
    x = torch.randn(B, T, E, requires_grad=backward)
    if impl == "sparse_module":
        m = fastlstm.SparseAttention(E, H, batch_first=True, window=W)
        run = lambda: m(x, x, x, need_weights=False)[0]
    else:
        m = nn.MultiheadAttention(E, H, batch_first=True)
        mask = ~reference.attention_mask(T, T, W)
        run = lambda: m(x, x, x, attn_mask=mask, need_weights=False)[0]
    params = [x, *m.parameters()]
    if not backward:
        m.eval()

'''

def step():
    if backward:
        out = run()
        out.sum().backward()
        for p in params:
            p.grad = None
    else:
        with torch.no_grad():
            run()

# One-time costs (lazy imports, op registration, first-touch of code) are
# paid on a tiny problem first so the peak below is the op's own.
Tfull = T
T = 16
exec(SETUP)
step()
T = Tfull
exec(SETUP)
def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])

# Reset the peak-RSS mark (VmHWM) so it measures this call alone.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status_kib("VmRSS")
step()
peak = status_kib("VmHWM") - before
best = float("inf")
for _ in range(repeats):
    t0 = time.perf_counter(); step(); best = min(best, time.perf_counter() - t0)
print(json.dumps({"time_s": best, "peak_mib": peak / 1024}))
"""


def dense_bytes(B: int, T: int, backward: bool) -> int:
    # Upper bound: fp32 scores and probabilities (+ their gradients in backward)
    # and the bool mask. (Torch's CPU flash kernel needs far less, but the
    # nn.MultiheadAttention math path and SDPA's fallback do form them.)
    return B * HEADS * T * T * 4 * (4 if backward else 2) + T * T


def available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def measure(impl: str, mode: str, B: int, T: int, threads: int, repeats: int) -> dict | None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-c", _WORKER, impl, mode, str(B), str(T), str(threads), str(repeats)],
                          capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{impl} {mode} B={B} T={T} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="T 288 and 1440, batch 1 only")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--T", type=int, nargs="+", help="sequence lengths (default 288 1440 8192)")
    parser.add_argument("--batch", type=int, nargs="+", help="batch sizes (default 1 16)")
    parser.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    parser.add_argument("--levels", nargs="+", default=["op", "module"], choices=["op", "module"])
    args = parser.parse_args()
    Ts = args.T or ((288, 1440) if args.quick else (288, 1440, 8192))
    Bs = args.batch or ((1,) if args.quick else (1, 16))
    rows = []
    print(f"{'level':6} {'mode':8} {'B':>3} {'T':>5} | {'fastlstm ms':>11} {'peer ms':>9} {'speed-up':>8} | "
          f"{'fastlstm MiB':>12} {'peer MiB':>9} {'mem ratio':>9}")
    for mode in args.modes:
        for B in Bs:
            for T in Ts:
                for level, ours, peer in (("op", "sparse_op", "sdpa_masked"), ("module", "sparse_module", "mha_masked")):
                    if level not in args.levels:
                        continue
                    a = measure(ours, mode, B, T, args.threads, args.repeats)
                    if dense_bytes(B, T, mode == "fwd+bwd") > available_bytes() // 2:
                        b = None
                    else:
                        b = measure(peer, mode, B, T, args.threads, 1 if T >= 8192 else args.repeats)
                    row = dict(level=level, mode=mode, B=B, T=T, ours=a, peer=b)
                    rows.append(row)
                    if b is None:
                        need = dense_bytes(B, T, mode == "fwd+bwd") / 2**30
                        print(f"{level:6} {mode:8} {B:3d} {T:5d} | {a['time_s'] * 1e3:11.2f} {'skipped':>9} {'':>8} | "
                              f"{a['peak_mib']:12.1f} {'(bound ~%.0f GiB)' % need:>19}", flush=True)
                        continue
                    mem = b["peak_mib"] / a["peak_mib"] if a["peak_mib"] > 0 else float("inf")
                    print(f"{level:6} {mode:8} {B:3d} {T:5d} | {a['time_s'] * 1e3:11.2f} {b['time_s'] * 1e3:9.2f} "
                          f"{b['time_s'] / a['time_s']:7.1f}x | {a['peak_mib']:12.1f} {b['peak_mib']:9.1f} {mem:8.1f}x",
                          flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
