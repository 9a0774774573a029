"""``fastlstm demo sine``: learn the next value of a noisy sine wave.

Trains the same small model twice from the same initial weights and batches,
once on fastlstm.LSTM and once on torch.nn.LSTM, prints both test MSEs and
training times, and writes two PNGs to ``--out``: one-step predictions against
the truth, and the fastlstm model's gate activations over a test stretch.

    fastlstm demo sine --out sine_demo
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

DESCRIPTION = "train a small LSTM on a noisy sine wave (fastlstm vs torch.nn.LSTM), plot predictions and gates"


class SineModel(nn.Module):
    """LSTM over a window of values (B, T, 1) -> the next value (B,).

    >>> model = SineModel(fastlstm.LSTM, hidden=32)
    >>> model(torch.randn(8, 40, 1)).shape   # (8,)
    """

    def __init__(self, lstm_cls=nn.LSTM, hidden: int = 32) -> None:
        super().__init__()
        self.lstm = lstm_cls(1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1]).squeeze(-1)

    def predict_series(self, series: Tensor) -> Tensor:
        """One-step-ahead prediction at every position of ``series`` (N,) in one
        pass: the LSTM reads the whole series, the head maps every step."""
        out, _ = self.lstm(series.view(1, -1, 1))
        return self.head(out[0]).squeeze(-1)


@dataclass
class SineData:
    train: Tensor  # noisy series used for training windows
    test: Tensor  # noisy continuation, held out
    test_clean: Tensor  # the sine itself over the test stretch


def make_data(n_train: int = 2000, n_test: int = 400, noise: float = 0.1, seed: int = 0, dt: float = 0.1) -> SineData:
    """A seeded noisy sine wave split in time: train first, test after."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n_train + n_test, dtype=torch.float32) * dt
    clean = torch.sin(t)
    noisy = clean + noise * torch.randn(t.shape, generator=g)
    return SineData(noisy[:n_train], noisy[n_train:], clean[n_train:])


def _windows(series: Tensor, starts: Tensor, window: int) -> tuple[Tensor, Tensor]:
    idx = starts.unsqueeze(1) + torch.arange(window + 1).unsqueeze(0)
    chunk = series[idx]
    return chunk[:, :window].unsqueeze(-1), chunk[:, window]


def test_mse(model: SineModel, data: SineData, window: int) -> float:
    """MSE of next-value predictions over every test window (noisy targets)."""
    starts = torch.arange(len(data.test) - window)
    x, y = _windows(data.test, starts, window)
    with torch.no_grad():
        return float(((model(x) - y) ** 2).mean())


def train(model: SineModel, data: SineData, *, steps: int, window: int = 40, batch: int = 32,
          lr: float = 1e-2, seed: int = 0) -> float:
    """Adam on random training windows (seeded, so two models see the same batches). Returns seconds."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    start = time.perf_counter()
    for _ in range(steps):
        starts = torch.randint(0, len(data.train) - window, (batch,), generator=g)
        x, y = _windows(data.train, starts, window)
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return time.perf_counter() - start


def run_pair(*, steps: int, hidden: int = 32, window: int = 40, batch: int = 32, noise: float = 0.1, seed: int = 0):
    """Trains the fastlstm and torch.nn.LSTM models from identical weights.

    Returns (data, {"fastlstm": (model, mse, seconds), "torch": (...)}).
    """
    import fastlstm

    data = make_data(noise=noise, seed=seed)
    torch.manual_seed(seed)
    base = SineModel(nn.LSTM, hidden)
    results = {}
    for name, cls in (("fastlstm", fastlstm.LSTM), ("torch", nn.LSTM)):
        model = SineModel(cls, hidden)
        model.load_state_dict(base.state_dict())
        seconds = train(model, data, steps=steps, window=window, batch=batch, seed=seed)
        results[name] = (model, test_mse(model, data, window), seconds)
    return data, results


def plot_predictions(data: SineData, models: dict[str, SineModel], path: str, window: int = 40) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = torch.cat([data.train[-window:], data.test])
    fig = Figure(figsize=(10, 4), constrained_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    steps = torch.arange(len(data.test))
    ax.plot(steps, data.test, ".", ms=3, color="0.6", label="noisy observations")
    ax.plot(steps, data.test_clean, "-", lw=2, color="k", label="truth (sine)")
    with torch.no_grad():
        for (name, model), style in zip(models.items(), ("-", "--")):
            pred = model.predict_series(series)[window - 1 : -1]  # predicts test[i] from everything before
            ax.plot(steps, pred, style, lw=1.5, label=f"{name} prediction")
    ax.set_xlabel("test step")
    ax.legend(loc="upper right")
    ax.set_title("next-value prediction on held-out noisy sine")
    fig.savefig(path, dpi=80)
    return path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=150, help="training steps per model (default 150)")
    parser.add_argument("--batch", type=int, default=32, help="windows per step (default 32)")
    parser.add_argument("--hidden", type=int, default=32, help="LSTM hidden size (default 32)")
    parser.add_argument("--window", type=int, default=30, help="input window length (default 30)")
    parser.add_argument("--noise", type=float, default=0.1, help="noise std (default 0.1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="sine_demo", help="folder for the PNGs (default ./sine_demo)")


def run(args: argparse.Namespace) -> int:
    from fastlstm.inspect import plot_gates, record_gates

    data, results = run_pair(steps=args.steps, hidden=args.hidden, window=args.window, batch=args.batch,
                             noise=args.noise, seed=args.seed)
    print(f"noisy sine, {args.steps} steps of {args.batch} windows, hidden {args.hidden}, window {args.window}, "
          f"noise std {args.noise} (noise floor MSE {args.noise ** 2:.4f}), {torch.get_num_threads()} threads")
    print(f"{'model':<10} {'test MSE':>10} {'train s':>9}")
    for name, (_, mse, seconds) in results.items():
        print(f"{name:<10} {mse:>10.5f} {seconds:>9.2f}")
    os.makedirs(args.out, exist_ok=True)
    models = {name: r[0] for name, r in results.items()}
    pred_png = plot_predictions(data, models, os.path.join(args.out, "sine_predictions.png"), args.window)
    fast = models["fastlstm"]
    with torch.no_grad(), record_gates(fast) as rec:
        fast.predict_series(data.test[:200])
    gates_png = plot_gates(rec, layer=0, direction=0, path=os.path.join(args.out, "sine_gates.png"),
                           title="fastlstm gates over 200 test steps")
    print(f"wrote {pred_png}")
    print(f"wrote {gates_png}")
    return 0
