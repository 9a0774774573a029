"""Dense reference of sparse (sliding-window + global-token) attention.

Builds the full boolean mask of the pattern and runs plain masked softmax
attention; O(Tq*Tk) memory, written for clarity, float64-capable. The fused
kernels (CPU, CUDA, Triton) must match it.

Pattern: query ``i`` may attend key ``j`` when

* ``i - left <= j <= i + right`` (``window = (left, right)``; ``None`` = dense), or
* ``j < global_tokens`` (global keys are seen by every query), or
* ``i < global_tokens`` (global queries see every key),

and the key is not padding (``key_padding_mask[b, j]`` is ``True`` for padding,
as in ``nn.MultiheadAttention``). A query with no allowed key gets output 0
and log-sum-exp ``-inf`` (torch's masked softmax would give NaN).
"""

from __future__ import annotations

import torch
from torch import Tensor


def normalize_window(window) -> tuple[int, int] | None:
    """``None`` or a pair of non-negative ints ``(left, right)``; raises otherwise."""
    if window is None:
        return None
    if isinstance(window, int) and not isinstance(window, bool):
        window = (window, window)
    try:
        left, right = window
    except (TypeError, ValueError):
        raise TypeError(f"window must be None, an int or a pair (left, right) of ints; got {window!r}") from None
    for name, w in (("left", left), ("right", right)):
        if not isinstance(w, int) or isinstance(w, bool):
            raise TypeError(f"window {name} must be an int; got {type(w).__name__}")
        if w < 0:
            raise ValueError(f"window {name} must be >= 0; got {w}")
    return int(left), int(right)


def attention_mask(
    q_len: int,
    k_len: int,
    window,
    global_tokens: int = 0,
    key_padding_mask: Tensor | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Boolean mask, ``True`` where query ``i`` may attend key ``j``.

    Returns ``(Tq, Tk)``, or ``(B, 1, Tq, Tk)`` when ``key_padding_mask`` (B, Tk) is given.

    >>> attention_mask(4, 4, (1, 0))  # causal window of width 2
    >>> attention_mask(6, 6, (1, 1), global_tokens=1)
    """
    window = normalize_window(window)
    if key_padding_mask is not None:
        device = key_padding_mask.device
    i = torch.arange(q_len, device=device).unsqueeze(1)
    j = torch.arange(k_len, device=device).unsqueeze(0)
    if window is None:
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=device)
    else:
        left, right = window
        allowed = (j >= i - left) & (j <= i + right)
    if global_tokens > 0:
        allowed = allowed | (j < global_tokens) | (i < global_tokens)
    if key_padding_mask is not None:
        allowed = allowed.unsqueeze(0).unsqueeze(0) & ~key_padding_mask.bool()[:, None, None, :]
    return allowed


def sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window,
    global_tokens: int = 0,
    scale: float | None = None,
    key_padding_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Masked dense attention with the sparse pattern.

    q: (B, H, Tq, D); k: (B, H, Tk, D); v: (B, H, Tk, Dv); key_padding_mask:
    (B, Tk) bool, True = padding. Returns output (B, H, Tq, Dv) and the
    log-sum-exp of the scaled scores over allowed keys (B, H, Tq), ``-inf`` for
    rows with no allowed key (their output is 0). The log-sum-exp is not
    differentiable (it is detached).

    >>> q = k = v = torch.randn(1, 2, 10, 8, dtype=torch.float64)
    >>> out, lse = sparse_attention(q, k, v, window=(2, 2))
    """
    if scale is None:
        scale = q.shape[-1] ** -0.5
    allowed = attention_mask(q.shape[-2], k.shape[-2], window, global_tokens, key_padding_mask, q.device)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    s = torch.where(allowed, scores, float("-inf"))
    m = s.detach().amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    denom = e.sum(dim=-1, keepdim=True)
    p = e / torch.where(denom > 0, denom, torch.ones_like(denom))
    out = torch.matmul(p, v)
    lse = (m + torch.log(denom.detach())).squeeze(-1)
    return out, lse
