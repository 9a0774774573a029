"""The one place that decides which backend runs an op.

Backends: ``reference`` (plain PyTorch, always available, the ground truth),
``cpu`` (fused C++ kernels in ``fastlstm._C``), ``cuda`` (CUDA kernels in
``fastlstm._C``, built when a CUDA toolkit was found) and ``triton``.
``auto`` picks the fastest one available for the tensors' device and dtype.

The default is ``auto``; ``FASTLSTM_BACKEND`` or :func:`set_backend` change it,
and modules/ops take ``backend=`` to override it per call.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from fastlstm import _ext

BACKENDS = ("auto", "reference", "cpu", "cuda", "triton")

# Fastest first, per device type; `auto` takes the first available.
_AUTO_ORDER = {
    "cpu": ("cpu", "reference"),
    "cuda": ("cuda", "triton", "reference"),
}

# Per-op exceptions to _AUTO_ORDER. Sparse attention on CUDA: Triton first. Its
# kernels work on 64 x 64 query/key tiles, so each K/V tile loaded serves 64
# queries; the CUDA kernel is one warp per query row with scalar FMAs and no
# reuse across rows, so it moves ~64x more K/V bytes through L2 for the same
# windows. The CUDA kernel stays first for fp64 (Triton has none) and where
# Triton is absent (docs/gpu.md, "Sparse attention").
_OP_AUTO_ORDER = {
    ("sparse_attention", "cuda"): ("triton", "cuda", "reference"),
}

# Dtypes each compiled backend runs natively; others go to the reference.
_DTYPES = {
    "cpu": (torch.float32, torch.float64),
    "cuda": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
    "triton": (torch.float32, torch.float16, torch.bfloat16),
}

# Per-op narrowing of _DTYPES, for ops whose kernels support fewer dtypes.
_OP_DTYPES = {
    "sparse_attention": {"cuda": (torch.float32, torch.float64)},
}

# Widest head_dim / v_dim per (op, backend); `auto` skips a backend past it.
# Both GPU attention kernels keep a query row (CUDA: 4 x 32 lanes; Triton:
# a 32 x 128 tile) in registers.
_MAX_HEAD_DIM = {("sparse_attention", "cuda"): 128, ("sparse_attention", "triton"): 128}

# Backends whose results can vary run to run (e.g. atomics in a reduction).
# While torch.use_deterministic_algorithms(True) is on, `auto` skips them and
# naming one explicitly raises (docs/reliability.md). Every backend today is
# deterministic; a GPU backend that is not must be listed here.
NONDETERMINISTIC: tuple[str, ...] = ()

# Backends without LSTM projections (proj_size > 0); `auto` skips them for such calls.
_NO_PROJ = ("triton",)

_default: str | None = None


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


def set_backend(name: str | None) -> None:
    """Set the process-wide default backend (``None`` restores ``FASTLSTM_BACKEND`` or ``auto``)."""
    global _default
    _default = None if name is None else _check_name(name)


def get_backend() -> str:
    """The process-wide default backend."""
    if _default is not None:
        return _default
    return _check_name(os.environ.get("FASTLSTM_BACKEND", "auto") or "auto")


@functools.lru_cache(maxsize=None)
def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def unavailable_reason(
    backend: str, device: torch.device, dtype: torch.dtype, *, proj: bool = False, op: str | None = None,
    head_dim: int | None = None,
) -> str | None:
    """Why ``backend`` cannot run ``op`` (None: any op) on ``device``/``dtype`` (with a
    projection when ``proj``; attention with heads ``head_dim`` wide), or None when it can."""
    if backend == "reference":
        return None
    limit = _MAX_HEAD_DIM.get((op, backend))
    if head_dim is not None and limit is not None and head_dim > limit:
        return f"its kernels take head_dim and v_dim <= {limit}, got {head_dim}"
    if backend in NONDETERMINISTIC and torch.are_deterministic_algorithms_enabled():
        return "it is nondeterministic and torch.use_deterministic_algorithms(True) is on"
    if proj and backend in _NO_PROJ:
        return "it does not support proj_size > 0"
    if dtype not in _OP_DTYPES.get(op, {}).get(backend, _DTYPES[backend]):
        return f"it does not support {dtype}"
    if backend == "cpu":
        if device.type != "cpu":
            return f"it runs on CPU tensors, not {device.type}"
        if not _ext.available():
            return f"fastlstm._C failed to load ({_ext.load_error})"
        return None
    if backend == "cuda":
        if device.type != "cuda":
            return f"it runs on CUDA tensors, not {device.type}"
        if not _ext.available() or not getattr(_ext._C, "has_cuda", False):
            return "fastlstm._C was built without CUDA (rebuild with FASTLSTM_CUDA=on)"
        return None
    if backend == "triton":
        interpret = os.environ.get("TRITON_INTERPRET") == "1"
        if device.type != "cuda" and not (interpret and device.type == "cpu"):
            return "it runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1)"
        if not _triton_importable():
            return "triton is not installed (pip install fastlstm[triton])"
        return None
    raise AssertionError(backend)


class BackendUnavailableError(RuntimeError):
    """A backend named explicitly cannot run the call (``backend`` and ``reason`` say why)."""

    def __init__(self, backend: str, reason: str):
        super().__init__(f"fastlstm backend {backend!r} cannot run here: {reason}")
        self.backend, self.reason = backend, reason


def resolve(
    requested: str | None, device: torch.device, dtype: torch.dtype, *, proj: bool = False, op: str | None = None,
    head_dim: int | None = None,
) -> str:
    """The concrete backend to run ``op``: ``requested`` (or the default) with ``auto`` resolved.

    ``proj``: the call uses an LSTM projection (``proj_size > 0``); ``head_dim``: the
    attention's widest head (max of q's and v's).
    On CUDA, ``auto`` prefers the ``cuda`` backend (which itself picks a
    persistent or per-step launch by shape), then ``triton``; sparse attention
    prefers ``triton`` (see _OP_AUTO_ORDER).
    """
    name = _check_name(requested) if requested is not None else get_backend()
    if name == "auto":
        order = _OP_AUTO_ORDER.get((op, device.type)) or _AUTO_ORDER.get(device.type, ("reference",))
        for candidate in order:
            if unavailable_reason(candidate, device, dtype, proj=proj, op=op, head_dim=head_dim) is None:
                return candidate
        return "reference"
    reason = unavailable_reason(name, device, dtype, proj=proj, op=op, head_dim=head_dim)
    if reason is not None:
        raise BackendUnavailableError(name, reason)
    return name


def available_backends(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> list[str]:
    device = torch.device(device)
    return [b for b in BACKENDS[1:] if unavailable_reason(b, device, dtype) is None]
