"""Output allocation for ops. With FASTLSTM_NAN_FILL=1 (set by the test suite)
outputs start as NaN so that an element a kernel forgot to write fails a test."""

from __future__ import annotations

import os

import torch

NAN_FILL = os.environ.get("FASTLSTM_NAN_FILL") == "1"


def empty(*shape: int, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    dtype = dtype or like.dtype
    if NAN_FILL and dtype.is_floating_point:
        return torch.full(shape, float("nan"), dtype=dtype, device=like.device)
    return torch.empty(shape, dtype=dtype, device=like.device)
