"""Tolerances and comparison helpers shared by the tests, ``fastlstm check``
and ``fastlstm bench`` (one place for every accuracy decision)."""

from __future__ import annotations

import torch
from torch import Tensor

# Absolute/relative tolerance of a fused result against the reference run in
# the same dtype, for short sequences (T <= 40).
PARITY_TOLERANCE = {
    torch.float64: dict(atol=1e-9, rtol=1e-9),
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
}

# The design's rule for long sequences: error against an fp64 reference is at
# most ERROR_RATIO x the error of torch's own implementation in the same dtype,
# plus ERROR_FLOOR.
ERROR_RATIO = 2.0
ERROR_FLOOR = 1e-6


def max_abs_error(actual: Tensor, expected: Tensor) -> float:
    if actual.shape != expected.shape:
        raise AssertionError(f"shape mismatch: {tuple(actual.shape)} vs {tuple(expected.shape)}")
    if actual.numel() == 0:
        return 0.0
    diff = (actual.detach().double() - expected.detach().double()).abs()
    if torch.isnan(diff).any():
        return float("inf")
    return diff.max().item()


def assert_parity(actual: Tensor, expected: Tensor, dtype: torch.dtype | None = None, name: str = "") -> None:
    """Fails when ``actual`` differs from ``expected`` beyond the dtype's parity tolerance."""
    tol = PARITY_TOLERANCE[dtype or actual.dtype]
    torch.testing.assert_close(actual.detach(), expected.detach().to(actual.dtype), **tol,
                               msg=lambda m: f"{name}: {m}")


def within_error_rule(fused: Tensor, peer: Tensor, reference64: Tensor, floor: float = ERROR_FLOOR) -> tuple[bool, float, float]:
    """(passes, fused error, peer error) of the fp64-reference error rule."""
    fused_err = max_abs_error(fused, reference64)
    peer_err = max_abs_error(peer, reference64)
    return fused_err <= ERROR_RATIO * peer_err + floor, fused_err, peer_err
