"""Memory-chat speed: encoding throughput and generation tokens/s, the fastlstm
build against the same model (same weights) built on torch.nn.LSTM.

    python -m fastlstm.models.chat.bench [--threads 2] [--repeats 5]

Prints medians of ``--repeats`` runs and the ratios, all from one process.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from fastlstm.models.chat.model import Seq2SeqLSTM


def texts(n: int = 64, lo: int = 20, hi: int = 400, seed: int = 0) -> list[str]:
    """``n`` seeded texts of ``lo``..``hi`` bytes (ASCII words)."""
    rng = random.Random(seed)
    words = "the memory of a conversation keeps names places dates and plans for later turns".split()
    out = []
    for _ in range(n):
        size = rng.randint(lo, hi)
        s = ""
        while len(s) < size:
            s += rng.choice(words) + " "
        out.append(s[:size])
    return out


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: weight repacking, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_pair(seed: int = 0) -> dict[str, Seq2SeqLSTM]:
    torch.manual_seed(seed)
    fast = Seq2SeqLSTM().eval()
    ref = Seq2SeqLSTM(lstm_cls=torch.nn.LSTM).eval()
    ref.load_state_dict(fast.state_dict())
    return {"fastlstm": fast, "torch.nn.LSTM": ref}


def run(threads: int = 2, repeats: int = 5, max_length: int = 64) -> dict:
    torch.set_num_threads(threads)
    models = build_pair()
    batch = texts()
    results: dict = {}
    with torch.no_grad():
        for name, m in models.items():
            sec = _median_seconds(lambda: m.encoder.encode(batch), repeats)
            results[("encode texts/s", name)] = len(batch) / sec
        for B in (1, 8):
            sources = batch[:B]
            variants = [("fastlstm", models["fastlstm"], None),
                        ("fastlstm (module per step)", models["fastlstm"], False),
                        ("torch.nn.LSTM", models["torch.nn.LSTM"], None)]
            for name, m, fused in variants:
                produced = []

                def gen():
                    ids, _ = m.generate_ids(sources, max_length=max_length, fused=fused)
                    produced.append(max(len(r) for r in ids) * B)

                sec = _median_seconds(gen, repeats)
                results[(f"generate tokens/s, batch {B}", name)] = produced[-1] / sec
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-length", type=int, default=64)
    args = p.parse_args(argv)
    results = run(args.threads, args.repeats, args.max_length)
    print(f"threads {args.threads}, medians of {args.repeats}")
    print(f"{'measure':<28} {'build':<28} {'value':>10} {'vs torch':>9}")
    for (measure, name), value in results.items():
        ratio = value / results[(measure, "torch.nn.LSTM")]
        print(f"{measure:<28} {name:<28} {value:>10.1f} {ratio:>8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
