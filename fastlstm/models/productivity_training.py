"""Training the productivity model: the document's multi-task objective,
Adam at 1e-3 with a cosine scheduler, batch 64, a curriculum over sequence
length, and fine-tuning on one user's data.

Objective: cross-entropy on per-step pattern labels, MSE of the forecast
against the features of the event after the window, binary focal loss on
per-step anomaly flags.

>>> data = ActivityData.from_synthetic(synthetic_activity_log(days=14), encoder)
>>> history = train(model, data, epochs=6, curriculum=(32, 64, 128))
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fastlstm.models.activity import ActivityEncoder, SyntheticLog


def focal_loss(logits: Tensor, targets: Tensor, gamma: float = 2.0, alpha: float = 0.25) -> Tensor:
    """Binary focal loss (mean), for rare anomalies: BCE scaled by (1 - p_t)^gamma.

    >>> focal_loss(torch.randn(4, 10), torch.zeros(4, 10))
    """
    targets = targets.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = torch.exp(-bce)
    weight = alpha * targets + (1 - alpha) * (1 - targets)
    return (weight * (1 - p_t) ** gamma * bce).mean()


def multitask_loss(outputs, pattern: Tensor, next_features: Tensor, anomaly: Tensor,
                   weights: tuple[float, float, float] = (1.0, 1.0, 1.0), focal_alpha: float = 0.25,
                   focal_gamma: float = 2.0) -> tuple[Tensor, dict]:
    """The document's objective on ``model(x)`` outputs; targets: pattern (B, T)
    int, next_features (B, input_dim), anomaly (B, T) 0/1; ``weights`` of the
    (pattern, forecast, anomaly) terms. Returns (total, parts)."""
    pattern_out, forecast_out, anomaly_out = outputs[0], outputs[1], outputs[2]
    ce = F.cross_entropy(pattern_out.reshape(-1, pattern_out.shape[-1]), pattern.reshape(-1))
    mse = F.mse_loss(forecast_out, next_features)
    focal = focal_loss(anomaly_out[..., 0], anomaly, gamma=focal_gamma, alpha=focal_alpha)
    total = weights[0] * ce + weights[1] * mse + weights[2] * focal
    return total, {"pattern_ce": ce.item(), "forecast_mse": mse.item(), "anomaly_focal": focal.item()}


@dataclass
class ActivityData:
    """Features (T, F) with per-step pattern labels (T,) and anomaly flags (T,)."""

    features: Tensor
    patterns: Tensor
    anomalies: Tensor

    @classmethod
    def from_synthetic(cls, log: SyntheticLog, encoder: ActivityEncoder) -> "ActivityData":
        return cls(encoder.encode_events(log.events), torch.as_tensor(log.patterns, dtype=torch.long),
                   torch.as_tensor(log.anomalies, dtype=torch.float32))

    def windows(self, length: int, stride: int | None = None) -> dict[str, Tensor]:
        """Training windows of ``length`` steps whose next event exists (the forecast target)."""
        T = self.features.shape[0]
        if T < length + 1:
            raise ValueError(f"need more than {length} events for windows of length {length}, have {T}")
        stride = stride or max(1, length // 4)
        starts = torch.arange(0, T - length, stride)
        idx = starts.unsqueeze(1) + torch.arange(length).unsqueeze(0)
        return {"x": self.features[idx], "pattern": self.patterns[idx], "anomaly": self.anomalies[idx],
                "next": self.features[starts + length]}


def _progress(enabled: bool | None, total: int):
    if enabled is None:
        enabled = total >= 200 and sys.stderr.isatty()
    if not enabled:
        return None
    try:
        from rich.progress import Progress
    except ImportError:
        return None
    bar = Progress(transient=True)
    bar.start()
    return bar, bar.add_task("training", total=total)


def train(model, data: ActivityData, *, epochs: int = 6, batch_size: int = 64, lr: float = 1e-3,
          curriculum: tuple[int, ...] = (32, 64, 128), stride: int | None = None, seed: int = 0,
          max_seconds: float | None = None, progress: bool | None = None,
          loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0), focal_alpha: float = 0.25) -> list[dict]:
    """Multi-task training with a sequence-length curriculum: the epochs are
    split evenly over ``curriculum`` lengths (short first). Only parameters
    with ``requires_grad`` train (see ``model.freeze``). ``max_seconds`` stops
    early at a step boundary. ``loss_weights``/``focal_alpha`` go to
    :func:`multitask_loss`. Returns one record per epoch.

    >>> history = train(model, data, epochs=3, curriculum=(32, 64))
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be >= 1")
    lengths = [L for L in curriculum if L < data.features.shape[0]]
    if not lengths:
        raise ValueError(f"no curriculum length fits a log of {data.features.shape[0]} events")
    stages = [lengths[min(e * len(lengths) // epochs, len(lengths) - 1)] for e in range(epochs)]
    sets = {L: data.windows(L, stride) for L in set(stages)}
    steps_total = sum(math.ceil(sets[L]["x"].shape[0] / batch_size) for L in stages)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps_total), eta_min=lr * 0.05)
    gen = torch.Generator().manual_seed(seed)
    bar = _progress(progress, steps_total)
    history, start = [], time.perf_counter()
    model.train()
    try:
        for epoch, L in enumerate(stages):
            w = sets[L]
            order = torch.randperm(w["x"].shape[0], generator=gen)
            totals, batches = {}, 0
            for i in range(0, len(order), batch_size):
                b = order[i:i + batch_size]
                loss, parts = multitask_loss(model(w["x"][b], need_weights=False), w["pattern"][b], w["next"][b],
                                             w["anomaly"][b], loss_weights, focal_alpha)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                for k, v in parts.items():
                    totals[k] = totals.get(k, 0.0) + v
                batches += 1
                if bar:
                    bar[0].advance(bar[1])
                if max_seconds is not None and time.perf_counter() - start > max_seconds:
                    break
            history.append({"epoch": epoch, "length": L, "batches": batches, "lr": sched.get_last_lr()[0],
                            "seconds": time.perf_counter() - start,
                            **{k: v / max(batches, 1) for k, v in totals.items()}})
            if max_seconds is not None and time.perf_counter() - start > max_seconds:
                break
    finally:
        if bar:
            bar[0].stop()
        model.eval()
    return history


def fine_tune(model, data: ActivityData, *, freeze: tuple[str, ...] = ("embedding", "lstm"), epochs: int = 2,
              lr: float = 3e-4, **kwargs) -> list[dict]:
    """Fine-tune on one user's data with ``freeze`` parts fixed; unfreezes after.

    >>> fine_tune(model, ActivityData.from_synthetic(user_log, encoder), epochs=2)
    """
    model.freeze(*freeze)
    try:
        return train(model, data, epochs=epochs, lr=lr, **kwargs)
    finally:
        model.unfreeze()
