"""``SparseAttention``: a drop-in for ``torch.nn.MultiheadAttention`` running
sliding-window (+ global-token) attention without forming a T x T matrix.

Same constructor arguments, parameter names, initialisation and state_dict as
``nn.MultiheadAttention``, plus ``window``, ``global_tokens``,
``attn_weights_format`` and ``backend``. With ``window=None`` it computes what
``nn.MultiheadAttention`` computes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.init import constant_, xavier_normal_, xavier_uniform_
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from fastlstm.ops.attention import sparse_attention
from fastlstm.reference.attention import attention_mask, normalize_window

_FORMATS = ("auto", "banded", "dense")


def banded_to_dense(weights: Tensor, window, k_len: int) -> Tensor:
    """Dense ``(..., Tq, Tk)`` attention weights from banded ``(..., Tq, left + right + 1)`` ones.

    Banded column ``t`` of query ``i`` holds the weight of key ``i - left + t``.

    >>> w = attn(x, x, x)[1]                    # (B, Tq, span) with window=(2, 2)
    >>> dense = banded_to_dense(w, (2, 2), k_len=x.shape[1])
    """
    left, right = normalize_window(window)
    span = left + right + 1
    if weights.shape[-1] != span:
        raise ValueError(f"banded weights have {weights.shape[-1]} columns, window {window} needs {span}")
    q_len = weights.shape[-2]
    idx = torch.arange(q_len, device=weights.device).unsqueeze(1) + torch.arange(span, device=weights.device)
    out = weights.new_zeros(*weights.shape[:-1], k_len + left + right)
    out.scatter_(-1, idx.expand(weights.shape), weights)
    return out[..., left : left + k_len]


def _masked_softmax(scores: Tensor, allowed: Tensor) -> Tensor:
    """Softmax over allowed entries; rows with none give 0 (not NaN)."""
    if scores.shape[-1] == 0:  # no keys at all (T = 0): amax would fail on the empty dim
        return scores
    s = torch.where(allowed, scores, float("-inf"))
    m = s.detach().amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    denom = e.sum(dim=-1, keepdim=True)
    return e / torch.where(denom > 0, denom, torch.ones_like(denom))


class SparseAttention(nn.Module):
    """Multi-head attention restricted to a sliding window, a drop-in for
    :class:`torch.nn.MultiheadAttention`.

    Extra arguments: ``window`` (``(left, right)``: query ``i`` attends keys
    ``i - left .. i + right``; ``(w, 0)`` is causal; an int ``w`` means
    ``(w, w)``; ``None`` is dense, i.e. exactly ``nn.MultiheadAttention``),
    ``global_tokens`` (the first positions attend to and are attended by
    all), ``attn_weights_format`` (``"auto"``: banded when ``window`` is set,
    dense otherwise; ``"banded"``: ``(B, [heads,] Tq, left + right + 1)``, see
    :func:`banded_to_dense`; ``"dense"``: ``(B, [heads,] Tq, Tk)`` like
    torch, costs O(T^2)) and ``backend``.

    Input ``(T, B, E)`` (``(B, T, E)`` with ``batch_first``) or ``(T, E)``;
    returns ``(output, weights or None)`` like torch. ``key_padding_mask`` must
    be boolean (True = padding). A query whose keys are all padding gets output
    ``out_proj.bias`` (attention output 0) instead of torch's NaN. Not
    supported (raise): ``attn_mask``/``is_causal`` (use ``window``), attention
    dropout in training mode off the ``cpu`` backend, and
    ``add_bias_kv``/``add_zero_attn`` together with a window. Attention dropout
    (training, CPU kernels) drops weights inside the fused kernel with a mask
    drawn from torch's default generator; returned weights are those before dropout.

    >>> attn = SparseAttention(128, 4, batch_first=True, window=(64, 64))
    >>> out, _ = attn(x, x, x, need_weights=False)       # x: (B, T, 128)
    """

    __constants__ = ["batch_first"]

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device=None,
        dtype=None,
        *,
        window=None,
        global_tokens: int = 0,
        attn_weights_format: str = "auto",
        backend: str | None = None,
    ) -> None:
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(
                f"embed_dim and num_heads must be greater than 0, got embed_dim={embed_dim} and num_heads={num_heads} instead"
            )
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        if self.head_dim * num_heads != self.embed_dim:
            raise AssertionError("embed_dim must be divisible by num_heads")
        self.window = normalize_window(window)
        if not isinstance(global_tokens, int) or global_tokens < 0:
            raise ValueError(f"global_tokens must be an int >= 0; got {global_tokens!r}")
        self.global_tokens = global_tokens
        if attn_weights_format not in _FORMATS:
            raise ValueError(f"attn_weights_format must be one of {_FORMATS}; got {attn_weights_format!r}")
        self.attn_weights_format = attn_weights_format
        self.backend = backend
        if self.window is not None and (add_bias_kv or add_zero_attn):
            raise NotImplementedError(
                "SparseAttention: add_bias_kv and add_zero_attn append a key at the end of the sequence, "
                "which has no place in a sliding window; use them only with window=None"
            )

        if not self._qkv_same_embed_dim:
            self.q_proj_weight = nn.Parameter(torch.empty((embed_dim, embed_dim), **factory_kwargs))
            self.k_proj_weight = nn.Parameter(torch.empty((embed_dim, self.kdim), **factory_kwargs))
            self.v_proj_weight = nn.Parameter(torch.empty((embed_dim, self.vdim), **factory_kwargs))
            self.register_parameter("in_proj_weight", None)
        else:
            self.in_proj_weight = nn.Parameter(torch.empty((3 * embed_dim, embed_dim), **factory_kwargs))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **factory_kwargs))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias=bias, **factory_kwargs)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty((1, 1, embed_dim), **factory_kwargs))
            self.bias_v = nn.Parameter(torch.empty((1, 1, embed_dim), **factory_kwargs))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Same initialisation as nn.MultiheadAttention.
        if self._qkv_same_embed_dim:
            xavier_uniform_(self.in_proj_weight)
        else:
            xavier_uniform_(self.q_proj_weight)
            xavier_uniform_(self.k_proj_weight)
            xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            constant_(self.in_proj_bias, 0.0)
            constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            xavier_normal_(self.bias_k)
        if self.bias_v is not None:
            xavier_normal_(self.bias_v)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, window={self.window}, "
            f"global_tokens={self.global_tokens}, batch_first={self.batch_first}"
        )

    def _projections(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        E = self.embed_dim
        b = self.in_proj_bias
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            if query is key and key is value:  # self-attention: one GEMM, as nn.MultiheadAttention does
                return F.linear(query, w, b).chunk(3, dim=-1)
            wq, wk, wv = w[:E], w[E : 2 * E], w[2 * E :]
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        bq, bk, bv = (None, None, None) if b is None else (b[:E], b[E : 2 * E], b[2 * E :])
        return F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """query (Tq, B, E) / key (Tk, B, kdim) / value (Tk, B, vdim) (batch
        first with ``batch_first``; unbatched (T, E) too); key_padding_mask
        (B, Tk) bool. Returns output like query and the weights (see the class
        docstring) or None."""
        if attn_mask is not None or is_causal:
            raise NotImplementedError(
                "SparseAttention does not take attn_mask/is_causal; set window=(w, 0) for causal attention"
            )
        if query.dim() not in (2, 3):
            raise ValueError(f"query should be unbatched 2D or batched 3D tensor but received {query.dim()}-D")
        if key.dim() != query.dim() or value.dim() != query.dim():
            raise ValueError("query, key and value must have the same number of dimensions")
        unbatched = query.dim() == 2
        if unbatched:
            same = query is key and key is value
            query = query.unsqueeze(1)
            key, value = (query, query) if same else (key.unsqueeze(1), value.unsqueeze(1))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            same = query is key and key is value
            query = query.transpose(0, 1)
            key, value = (query, query) if same else (key.transpose(0, 1), value.transpose(0, 1))
        # Now (T, B, E).
        if query.shape[-1] != self.embed_dim:
            raise ValueError(f"was expecting embedding dimension of {self.embed_dim}, but got {query.shape[-1]}")
        if key.shape[0] != value.shape[0] or key.shape[1] != value.shape[1]:
            raise ValueError("key and value must have the same sequence length and batch size")
        if key_padding_mask is not None:
            if key_padding_mask.dtype != torch.bool:
                raise TypeError("SparseAttention: key_padding_mask must be a bool tensor (True = padding)")
            if tuple(key_padding_mask.shape) != (key.shape[1], key.shape[0]):
                raise ValueError(
                    f"key_padding_mask must have shape (batch, key length) = {(key.shape[1], key.shape[0])}; "
                    f"got {tuple(key_padding_mask.shape)}"
                )
        Tq, B, _ = query.shape
        H, Dh = self.num_heads, self.head_dim
        if need_weights and query is key and key is value:
            dense = self._dense_with_weights(query.transpose(0, 1), key_padding_mask, average_attn_weights)
            if dense is not None:
                out, weights = dense
                if unbatched:
                    return out.squeeze(0), weights.squeeze(0)
                return (out if self.batch_first else out.transpose(0, 1)), weights
        if self._qkv_same_embed_dim and query is key and key is value and self.bias_k is None and not self.add_zero_attn:
            # Self-attention: one GEMM and one copy into the kernels' (B, H, T, Dh)
            # layout for q, k and v together (instead of three permute copies).
            qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)
            q, k, v = qkv.view(Tq, B, 3, H, Dh).permute(2, 1, 3, 0, 4).contiguous().unbind(0)
            out, weights = self._attend(q, k, v, key_padding_mask, need_weights, average_attn_weights, B, Tq)
            return self._finish(out, weights, unbatched, B, Tq)
        q, k, v = self._projections(query, key, value)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(1, B, -1)])
            v = torch.cat([v, self.bias_v.expand(1, B, -1)])
            if key_padding_mask is not None:
                key_padding_mask = F.pad(key_padding_mask, (0, 1))
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(1, B, k.shape[-1])])
            v = torch.cat([v, v.new_zeros(1, B, v.shape[-1])])
            if key_padding_mask is not None:
                key_padding_mask = F.pad(key_padding_mask, (0, 1))
        Tk = k.shape[0]
        # (T, B, E) -> (B, H, T, Dh)
        q = q.reshape(Tq, B, H, Dh).permute(1, 2, 0, 3)
        k = k.reshape(Tk, B, H, Dh).permute(1, 2, 0, 3)
        v = v.reshape(Tk, B, H, Dh).permute(1, 2, 0, 3)
        out, weights = self._attend(q, k, v, key_padding_mask, need_weights, average_attn_weights, B, Tq)
        return self._finish(out, weights, unbatched, B, Tq)

    def _dense_with_weights(self, x: Tensor, key_padding_mask: Tensor | None, average: bool):
        """Dense self-attention of batch-first x (B, T, E) and its weights at
        inference, through torch's fused native attention (what
        nn.MultiheadAttention's fast path runs): it forms the T x T weights once
        and reuses them for the output, where the fused kernel plus a second
        T x T pass for the weights cost 3.6x as much (T = 1440, 4 heads).
        None where that does not apply (window, global tokens, padding, whose
        all-padding rows torch would give NaN, training, gradients, compiling)."""
        if (self.window is not None or self.global_tokens or key_padding_mask is not None
                or self.backend not in (None, "auto", "cpu") or x.device.type != "cpu"
                or not self._qkv_same_embed_dim or self.in_proj_bias is None or self.bias_k is not None
                or self.add_zero_attn or (self.training and self.dropout > 0)
                or not hasattr(torch, "_native_multi_head_attention") or torch.compiler.is_compiling()
                or (torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())))):
            return None
        return torch._native_multi_head_attention(
            x, x, x, self.embed_dim, self.num_heads, self.in_proj_weight, self.in_proj_bias,
            self.out_proj.weight, self.out_proj.bias, None, True, average, None,
        )

    def _attend(self, q, k, v, key_padding_mask, need_weights, average, B, Tq):
        """Attention of (B, H, T, Dh) q, k, v; returns the attention output (B, H, Tq, Dh) and the weights."""
        out, _ = sparse_attention(
            q, k, v, self.window, self.global_tokens, None, key_padding_mask, backend=self.backend,
            dropout_p=self.dropout if self.training else 0.0,
        )
        weights = self._weights(q, k, key_padding_mask, average) if need_weights else None
        return out, weights

    def _finish(self, out, weights, unbatched, B, Tq):
        """Output projection straight into the caller's layout (one copy of the heads)."""
        if self.batch_first and not unbatched:
            return self.out_proj(out.transpose(1, 2).reshape(B, Tq, self.embed_dim)), weights
        out = self.out_proj(out.permute(2, 0, 1, 3).reshape(Tq, B, self.embed_dim))
        if unbatched:
            out = out.squeeze(1)
            weights = weights.squeeze(0) if weights is not None else None
        return out, weights

    def _weights(self, q: Tensor, k: Tensor, key_padding_mask: Tensor | None, average: bool) -> Tensor:
        fmt = self.attn_weights_format
        if fmt == "auto":
            fmt = "dense" if self.window is None else "banded"
        scale = self.head_dim**-0.5
        Tq, Tk = q.shape[2], k.shape[2]
        if fmt == "dense":
            allowed = attention_mask(Tq, Tk, self.window, self.global_tokens, key_padding_mask, q.device)
            w = _masked_softmax(torch.matmul(q, k.transpose(-1, -2)) * scale, allowed)
        else:
            if self.window is None:
                raise ValueError("attn_weights_format='banded' needs a window; use 'dense' with window=None")
            if self.global_tokens > 0:
                raise ValueError(
                    "banded attention weights cannot hold global tokens (they attend beyond the band); "
                    "use attn_weights_format='dense'"
                )
            left, right = self.window
            span = left + right + 1
            i = torch.arange(Tq, device=q.device).unsqueeze(1)
            j = i - left + torch.arange(span, device=q.device)  # (Tq, span) key of each band column
            allowed = (j >= 0) & (j < Tk)
            kb = k[:, :, j.clamp(0, max(Tk - 1, 0))]  # (B, H, Tq, span, Dh): O(T * window)
            scores = torch.einsum("bhid,bhisd->bhis", q, kb) * scale
            if key_padding_mask is not None:
                pad = key_padding_mask[:, j.clamp(0, max(Tk - 1, 0))]  # (B, Tq, span)
                allowed = allowed & ~pad.unsqueeze(1)
            w = _masked_softmax(scores, allowed)
        return w.mean(dim=1) if average else w
