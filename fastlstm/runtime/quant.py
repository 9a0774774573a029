"""Weight quantisation and the int8 kernels' calling conventions (numpy + _C).

Scheme (see csrc/include/fastlstm/int8_params.h): weights symmetric int8 with
one fp32 scale per output row; activations quantised per row at run time by
the kernels; int32 accumulation; gates and cell state in fp32.
"""

from __future__ import annotations

import numpy as np

from fastlstm._ext import _C, buf


def require_kernels() -> None:
    if _C is None:
        raise RuntimeError("fastlstm: the compiled extension fastlstm._C is not available; int8 needs it")


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8: ``w (..., K)`` -> ``(q int8 (..., K), scale float32 (...))``, w ~= q * scale.

    >>> q, s = quantize_rows(np.random.randn(8, 5).astype(np.float32))
    """
    w = np.asarray(w, dtype=np.float32)
    if not np.isfinite(w).all():
        raise ValueError("quantize: weights contain NaN or infinity")
    amax = np.abs(w).max(axis=-1)
    scale = (amax / 127.0).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / safe[..., None]), -127, 127).astype(np.int8)
    return q, scale


class PackedWeight:
    """An int8 weight (D, N, K) in the kernels' packed layout, with its row sums and scales."""

    __slots__ = ("packed", "rowsum", "scale", "rows", "cols")

    def __init__(self, q: np.ndarray, scale: np.ndarray) -> None:
        require_kernels()
        if q.dtype != np.int8 or q.ndim != 3:
            raise ValueError(f"packed weight: expected int8 (D, N, K), got {q.dtype} {q.shape}")
        if scale.shape != q.shape[:2]:
            raise ValueError(f"packed weight: scale shape {scale.shape} does not match weight {q.shape}")
        D, N, K = q.shape
        size = _C.int8_packed_size(N, K)
        self.packed = np.empty((D, size), np.int8)
        self.rowsum = np.empty((D, N), np.int32)
        q = np.ascontiguousarray(q)
        for d in range(D):
            _C.int8_pack_weights(buf(q[d]), buf(self.packed[d]), buf(self.rowsum[d]), N, K)
        self.scale = np.ascontiguousarray(scale, dtype=np.float32)
        self.rows, self.cols = N, K

    def nbytes(self) -> int:
        return self.packed.nbytes + self.rowsum.nbytes + self.scale.nbytes


def int8_linear(x: np.ndarray, w: PackedWeight, bias: np.ndarray | None, direction: int = 0,
                threads: int = 1) -> np.ndarray:
    """``x (R, K) float32 @ dequant(w[direction]).T (+ bias)`` with per-row int8 activations,
    in one kernel call (quantise, int32 products, dequantise), rows split over ``threads``.

    >>> y = int8_linear(np.ones((4, 8), np.float32), PackedWeight(*quantize_rows(np.ones((1, 3, 8)))), None)
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    R = x.shape[0]
    out = np.empty((R, w.rows), np.float32)
    b = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    _C.int8_linear(buf(x), buf(w.packed[direction]), buf(w.rowsum[direction]), buf(w.scale[direction]), buf(b),
                   buf(out), R, w.cols, w.rows, threads)
    return out
