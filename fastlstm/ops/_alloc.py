"""Output allocation for ops. With FASTLSTM_NAN_FILL=1 (set by the test suite)
outputs start as NaN so that an element a kernel forgot to write fails a test."""

from __future__ import annotations

import math
import os
import threading

import torch

NAN_FILL = os.environ.get("FASTLSTM_NAN_FILL") == "1"


def empty(*shape: int, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    dtype = dtype or like.dtype
    if NAN_FILL and dtype.is_floating_point:
        return torch.full(shape, float("nan"), dtype=dtype, device=like.device)
    return torch.empty(shape, dtype=dtype, device=like.device)


# Buffers above glibc's largest mmap threshold (32 MB) are unmapped when freed,
# so a training step that allocates them afresh faults every page back in:
# about 0.2 ms per MB on the project's machine (S3's two 75 MB gates tensors:
# ~30 ms a step). The op layer takes the gate activations it saves for
# backward from this pool instead; a buffer is handed out again only once
# nothing but the pool references its storage (autograd released it).
_POOL_MIN_BYTES = 32 << 20
_POOL_MAX_BYTES = 1 << 30
_pool: list[torch.Tensor] = []
_pool_lock = threading.Lock()


def _storage_refs(t: torch.Tensor) -> int:
    # The tensor's own reference plus the temporary storage object: 2 when unshared.
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


def pooled_empty(*shape: int, like: torch.Tensor) -> torch.Tensor:
    """``empty(*shape, like=like)``, reusing a released buffer of the same size
    for large CPU tensors (see above)."""
    numel = math.prod(shape)
    nbytes = numel * like.element_size()
    if nbytes < _POOL_MIN_BYTES or like.device.type != "cpu" or not hasattr(torch._C, "_storage_Use_Count"):
        return empty(*shape, like=like)
    with _pool_lock:
        for buf in _pool:
            if buf.numel() == numel and buf.dtype == like.dtype and _storage_refs(buf) == 2:
                out = buf.view(shape)
                break
        else:
            buf = torch.empty(numel, dtype=like.dtype)
            _pool.append(buf)
            while sum(b.numel() * b.element_size() for b in _pool) > _POOL_MAX_BYTES:
                _pool.pop(0)  # the oldest; a holder of it keeps its memory alive
            out = buf.view(shape)
    if NAN_FILL and out.dtype.is_floating_point:
        out.fill_(float("nan"))
    return out


def release_pool() -> None:
    """Drops the pooled buffers (memory of ones still in use is freed with them)."""
    with _pool_lock:
        _pool.clear()
