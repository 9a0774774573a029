"""Issue #22's table: small-model training and inference against torch.nn.LSTM,
and the whole ProductivityLSTM training step against the reference model.

2-layer bidirectional LSTM, I = 32; train = forward + backward of a sum (no
optimizer), inference = forward under no_grad; the productivity step is
embedding, both LSTM layers, attention, heads, multitask loss and an Adam step
at B = 16, T = 100, 6 input features, hidden 64. Medians of 7 rounds in one
process, the peers interleaved round by round. Only public API, so an older
fastlstm runs it too (before/after in one session):

    python benchmarks/train_step.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import fastlstm

SHAPES = [(1, 24, 64), (16, 24, 64), (16, 100, 64), (64, 100, 128)]


def _median_ms(fns: dict, calls: int, rounds: int = 7) -> dict:
    for fn in fns.values():
        for _ in range(3):
            fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - t) / calls * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}


def _lstm_rows() -> list[str]:
    rows = []
    for B, T, H in SHAPES:
        torch.manual_seed(0)
        peer = torch.nn.LSTM(32, H, num_layers=2, bidirectional=True)
        fast = fastlstm.LSTM(32, H, num_layers=2, bidirectional=True)
        fast.load_state_dict(peer.state_dict())
        x = torch.randn(T, B, 32)

        def train(m):
            def step():
                m.zero_grad(set_to_none=True)
                m(x)[0].sum().backward()
            return step

        def infer(m):
            def call():
                with torch.no_grad():
                    m(x)
            return call

        calls = max(3, int(100 * 24 / (B * T) * (64 / H) ** 2))
        tr = _median_ms({"torch": train(peer), "fastlstm": train(fast)}, calls)
        inf = _median_ms({"torch": infer(peer), "fastlstm": infer(fast)}, calls)
        rows.append(f"| {B}, {T}, {H} | {tr['torch']:.3g} ms | {tr['fastlstm']:.3g} ms "
                    f"({tr['torch'] / tr['fastlstm']:.2f}x) | {inf['torch']:.3g} ms | {inf['fastlstm']:.3g} ms "
                    f"({inf['torch'] / inf['fastlstm']:.2f}x) |")
    return rows


def _productivity_row() -> str:
    from fastlstm.models import ProductivityLSTM, reference
    from fastlstm.models.productivity_training import multitask_loss

    torch.manual_seed(0)
    B, T, F, H = 16, 100, 6, 64
    ref = reference.ProductivityLSTM(F, 64, H, 2, 5)
    fast = ProductivityLSTM.from_reference(ref)
    x = torch.randn(B, T, F)
    pattern = torch.randint(0, 5, (B, T))
    anomaly = (torch.rand(B, T) < 0.02).float()
    nxt = torch.randn(B, F)

    def train(model):
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            loss, _ = multitask_loss(model(x, need_weights=False), pattern, nxt, anomaly)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step

    ms = _median_ms({"reference": train(ref), "fastlstm": train(fast)}, 5)
    return (f"| ProductivityLSTM step, B=16, T=100 | {ms['reference']:.3g} ms | {ms['fastlstm']:.3g} ms "
            f"({ms['reference'] / ms['fastlstm']:.2f}x) | | |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    version = getattr(fastlstm, "__version__", "?")
    print(f"fastlstm {version} from {fastlstm.__file__}, torch {torch.__version__}, {args.threads} threads")
    print("| B, T, H | train torch | train fastlstm | inference torch | inference fastlstm |")
    print("|---|---|---|---|---|")
    for row in _lstm_rows():
        print(row, flush=True)
    print(_productivity_row())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
