"""Opt-in differentially private fine-tuning of the productivity model (DP-SGD):
the design document's "added noise to protect sensitive patterns".

Each step samples windows by Poisson sampling (each window with probability
``sample_rate``), computes every sampled window's gradient on its own, clips it
to L2 norm ``max_grad_norm``, sums, adds Gaussian noise of standard deviation
``noise_multiplier * max_grad_norm`` and divides by the expected batch size.
The (epsilon, delta) spent is tracked by opacus's RDP accountant
(``opacus.accountants.RDPAccountant``; ``pip install fastlstm[dp]``), not by hand.

Per-sample gradients come from one backward per window (fastlstm's fused LSTM
is opaque to opacus's per-sample hooks); with the default frozen embedding and
LSTM only the attention and heads are trained, and only they are noised. The
guarantee covers the windows of ``data`` as the privacy unit: overlapping windows
share events, so pass ``stride=length`` for an event to sit in one window.

>>> report = dp_fine_tune(model, ActivityData.from_synthetic(user_log, encoder), epochs=1, noise_multiplier=1.1)
>>> report.epsilon, report.delta
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastlstm.models.productivity_training import ActivityData, multitask_loss


@dataclass
class DPReport:
    epsilon: float          # spent after all steps, at delta
    delta: float
    steps: int
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    windows: int            # privacy units (training windows)


def _accountant():
    try:
        from opacus.accountants import RDPAccountant
    except ImportError as exc:
        raise ImportError("dp_fine_tune needs opacus for the (epsilon, delta) accounting: pip install opacus "
                          "(or fastlstm[dp])") from exc
    return RDPAccountant()


def dp_fine_tune(model, data: ActivityData, *, epochs: int = 1, length: int = 64, stride: int | None = None,
                 sample_rate: float = 0.05, noise_multiplier: float = 1.0, max_grad_norm: float = 1.0,
                 delta: float | None = None, lr: float = 0.05, optimizer: str = "sgd",
                 freeze: tuple[str, ...] = ("embedding", "lstm"), seed: int = 0) -> DPReport:
    """DP-SGD fine-tuning; returns the privacy spent. ``delta`` defaults to 0.1 / (number of windows).
    Steps per epoch: 1 / sample_rate (Poisson-sampled batches, as the accountant assumes).
    ``optimizer`` "sgd" or "adam" (post-processing of the noised gradient: same guarantee)."""
    if not 0 < sample_rate <= 1 or noise_multiplier < 0 or not max_grad_norm > 0 or epochs < 1:
        raise ValueError("dp_fine_tune: sample_rate in (0, 1], noise_multiplier >= 0, max_grad_norm > 0, epochs >= 1")
    accountant = _accountant()
    w = data.windows(length, stride or length)
    N = w["x"].shape[0]
    delta = 0.1 / N if delta is None else delta  # below 1 / N, as a delta must be
    model.freeze(*freeze)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"dp_fine_tune: optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * max(1, round(1 / sample_rate))
    expected = sample_rate * N
    model.train()
    try:
        for _ in range(steps):
            chosen = torch.nonzero(torch.rand(N, generator=gen) < sample_rate).flatten()
            total = [torch.zeros_like(p) for p in params]
            for i in chosen.tolist():
                loss, _ = multitask_loss(model(w["x"][i:i + 1], need_weights=False), w["pattern"][i:i + 1],
                                         w["next"][i:i + 1], w["anomaly"][i:i + 1])
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
                norm = torch.sqrt(sum((g * g).sum() for g in grads))
                scale = min(1.0, max_grad_norm / (float(norm) + 1e-12))
                for t, g in zip(total, grads):
                    t.add_(g, alpha=scale)
            for p, t in zip(params, total):
                noise = torch.normal(0.0, noise_multiplier * max_grad_norm, size=p.shape, generator=gen)
                p.grad = (t + noise.to(t.dtype)) / expected
            opt.step()
            opt.zero_grad(set_to_none=True)
            accountant.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)
    finally:
        model.eval()
        model.unfreeze()
    epsilon = accountant.get_epsilon(delta) if noise_multiplier > 0 else float("inf")
    return DPReport(float(epsilon), delta, steps, noise_multiplier, max_grad_norm, sample_rate, N)
