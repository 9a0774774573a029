"""Runtime layer of the productivity model's attention and heads (torch-free).

``fastlstm.export(model, path)`` of a :class:`fastlstm.models.ProductivityLSTM`
writes four runtime layers: the embedding (``linear``), the two Bi-LSTM
layers (``lstm``) and this ``productivity_head``: 4-head self-attention
(dense, or the sliding window + global tokens pattern) followed by the
pattern, forecast and anomaly heads. The loaded model returns
``(pattern (T, C), forecast (input_dim,), anomaly logits (T, 1), attention
weights or None)`` for an unbatched ``(T, input_dim)`` input, with a
leading batch axis for ``(B, T, input_dim)``. The weights are head-averaged,
banded ``(T, left + right + 1)`` for a sliding window without global tokens
(as the torch model returns them; column ``s`` of query ``i`` is key
``i - left + s``; ``left`` and ``right`` clamped to ``T - 1``, see
``band_window``), dense ``(T, T)`` otherwise. Attention itself runs in the
fused sparse kernel of ``fastlstm._C``.

>>> model = fastlstm.runtime.load("productivity_int8.safetensors")
>>> pattern, forecast, anomaly, attn = model(features)      # numpy (T, input_dim)
"""

from __future__ import annotations

import numpy as np

from fastlstm._ext import _C, buf
from fastlstm.runtime.layers import _MAX_SIZE, Linear, _dtype_field, _need, get_num_threads, register_layer

_BLOCK = 128  # queries per block: bounds the score buffer to heads x 128 x keys


def _allowed(rows: np.ndarray, cols: np.ndarray, window, global_tokens: int) -> np.ndarray:
    i, j = rows[:, None], cols[None, :]
    if window is None:
        allowed = np.ones((rows.size, cols.size), dtype=bool)
    else:
        allowed = (j >= i - window[0]) & (j <= i + window[1])
    if global_tokens:
        allowed |= (j < global_tokens) | (i < global_tokens)
    return allowed


def _dense_linear(lin: Linear) -> tuple[np.ndarray, np.ndarray]:
    """(weight (N, K), bias (N,)) of a runtime linear in float64 (int8 dequantised), for folding."""
    if lin.dtype == "float32":
        w = lin.weight_t.T.astype(np.float64)
    else:
        w = lin.q_weight.astype(np.float64) * lin.weight.scale[0][:, None].astype(np.float64)
    b = np.zeros(w.shape[0]) if lin.bias is None else lin.bias.astype(np.float64)
    return w, b


@register_layer
class ProductivityHead:
    """Self-attention + pattern / forecast / anomaly heads; ``dtype`` "float32" or "int8"
    (int8: every projection is an int8 ``linear``; softmax and sums in fp32).

    Tensors: ``in_proj.*`` (3E, E), ``out_proj.*`` (E, E), ``pattern.*`` (C, E),
    ``forecast.*`` (F, E), ``anomaly.*`` (1, E), each as the ``linear`` layer stores them.
    Set ``need_weights = False`` on the loaded layer to skip the weights.
    """

    TYPE = "productivity_head"
    KEYS = ("embed_dim", "num_heads", "window", "global_tokens", "output_dim", "forecast_dim", "dtype")

    def __init__(self, config: dict, tensors: dict[str, np.ndarray]) -> None:
        name = f"productivity_head layer {config.get('name', '?')!r}"
        for key in ("embed_dim", "num_heads", "global_tokens", "output_dim", "forecast_dim"):
            _need(config, key, int, name, low=0 if key == "global_tokens" else 1)
        E, heads = config["embed_dim"], config["num_heads"]
        if E % heads:
            raise ValueError(f"{name}: config field 'embed_dim' {E} is not divisible by num_heads {heads}")
        if "window" not in config:
            raise ValueError(f"{name}: config field 'window' missing")
        window = config["window"]
        if window is not None:
            if (not isinstance(window, list) or len(window) != 2
                    or not all(isinstance(w, int) and not isinstance(w, bool) and 0 <= w <= _MAX_SIZE for w in window)):
                raise ValueError(f"{name}: config field 'window' must be null or [left, right] of ints in "
                                 f"[0, {_MAX_SIZE}], got {window!r}"[:300])
            window = (window[0], window[1])
        self.dtype = _dtype_field(config, name)
        self.in_features, self.out_features = E, None  # several outputs: the last layer
        self.config, self.E, self.heads, self.window = dict(config), E, heads, window
        self.global_tokens = config["global_tokens"]
        self.need_weights = True
        sizes = {"in_proj": (E, 3 * E), "out_proj": (E, E), "pattern": (E, config["output_dim"]),
                 "forecast": (E, config["forecast_dim"]), "anomaly": (E, 1)}
        self.linears = {}
        known = set()
        for sub, (k, n) in sizes.items():
            prefix = sub + "."
            own = {key[len(prefix):]: v for key, v in tensors.items() if key.startswith(prefix)}
            known.update(prefix + key for key in own)
            cfg = dict(name=f"{config.get('name', '?')}.{sub}", in_features=k, out_features=n, bias=True,
                       dtype=self.dtype)
            self.linears[sub] = Linear(cfg, own)
        extra = set(tensors) - known
        if extra:
            raise ValueError(f"{name}: unexpected tensors {sorted(extra)[:5]}")
        # out_proj folds into the heads (they are linear in its output): pattern and anomaly become
        # one (E, C + 1) matrix per head slice of the attention output, the forecast one (F, E) row
        # map; fp32 from the stored (possibly int8) weights, so no (T, E) projection runs at all.
        dense = {sub: _dense_linear(lin) for sub, lin in self.linears.items()}
        w_o, b_o = dense["out_proj"]
        w_pa = np.concatenate([dense["pattern"][0], dense["anomaly"][0]])
        b_pa = np.concatenate([dense["pattern"][1], dense["anomaly"][1]])
        d = E // heads
        self._heads_w = np.ascontiguousarray((w_pa @ w_o).T.reshape(heads, d, -1), dtype=np.float32)  # (H, d, C+1)
        self._heads_b = (w_pa @ b_o + b_pa).astype(np.float32)
        w_f, b_f = dense["forecast"]
        self._forecast_w = np.ascontiguousarray((w_f @ w_o).T.reshape(heads, d, -1), dtype=np.float32)
        self._forecast_b = (w_f @ b_o + b_f).astype(np.float32)

    def _attend(self, x: np.ndarray, need_weights: bool):
        T, E, H = x.shape[0], self.E, self.heads
        d = E // H
        qkv, _ = self.linears["in_proj"].run(x)
        qkv = qkv.reshape(T, 3, H, d).transpose(1, 2, 0, 3)  # (3, H, T, d) view
        q, k = np.ascontiguousarray(qkv[0]), np.ascontiguousarray(qkv[1])
        # < 0: unbounded; a window wider than the sequence is clamped to it, so the band (and any
        # buffer) is sized by the input, never by a number in the file.
        left, right = (min(w, T - 1) for w in self.window) if self.window is not None else (-1, -1)
        banded = need_weights and self.window is not None and not self.global_tokens
        v = np.ascontiguousarray(qkv[2])
        del qkv  # peak memory matters on desktops: keep only the per-head copies
        out = np.empty((H, T, d), np.float32)
        lse = np.empty((H, T), np.float32)
        # A window's weights come straight from the kernel, banded (H, T, span).
        band = np.empty((H, T, left + right + 1), np.float32) if banded else None
        scale = 1.0 / np.sqrt(d)
        _C.sparse_attention_fwd("float32", buf(q), buf(k), buf(v), buf(None), buf(out), buf(lse), 1, H, T, T, d, d,
                                left, right, self.global_tokens, scale, get_num_threads(), band=buf(band))
        del v
        weights = None
        if banded:
            weights = band.mean(axis=0)
        elif need_weights:  # dense (T, T): one exp per allowed score, from the kernel's log-sum-exp
            weights = self._dense_weights(q, k, lse, scale)
        return out, weights

    def _dense_weights(self, q: np.ndarray, k: np.ndarray, lse: np.ndarray, scale: float) -> np.ndarray:
        """(T, T) head-averaged weights, in blocks of queries against the keys the pattern allows."""
        H, T, _ = q.shape
        weights = np.zeros((T, T), np.float32)
        g = self.global_tokens
        for i0 in range(0, T, _BLOCK):
            i1 = min(T, i0 + _BLOCK)
            if self.window is None or i0 < g:
                keys = slice(0, T)
            else:  # only the band (and the global keys) can be attended
                lo, hi = max(0, i0 - self.window[0]), min(T, i1 + self.window[1])
                keys = slice(lo, hi) if g == 0 else np.union1d(np.arange(min(g, T)), np.arange(lo, hi))
            scores = q[:, i0:i1] @ k[:, keys].transpose(0, 2, 1)  # (H, b, nk)
            scores *= np.float32(scale)
            scores -= lse[:, i0:i1, None]
            np.exp(scores, out=scores)
            if self.window is not None or g:
                cols = np.arange(T)[keys] if isinstance(keys, slice) else keys
                allowed = _allowed(np.arange(i0, i1), cols, self.window, g)
                if not allowed.all():
                    scores[:, ~allowed] = 0.0
            weights[i0:i1, keys] = scores.mean(axis=0)
        return weights

    def outputs(self, x: np.ndarray, need_weights: bool = True):
        """The four outputs of one unbatched (T, E) input (``need_weights`` per call: no shared state)."""
        ctx, weights = self._attend(x, need_weights)  # (H, T, d) per-head attention output, before out_proj
        heads = np.matmul(ctx, self._heads_w).sum(axis=0)  # (T, C + 1)
        heads += self._heads_b
        C = self.config["output_dim"]
        forecast = np.matmul(ctx[:, -1:], self._forecast_w).sum(axis=0)[0] + self._forecast_b
        return np.ascontiguousarray(heads[:, :C]), forecast, np.ascontiguousarray(heads[:, C:]), weights

    def run(self, x: np.ndarray, state=None, lengths=None):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim not in (2, 3) or x.shape[-1] != self.E or x.shape[-2] == 0:
            raise ValueError(f"productivity_head: input must be (T, {self.E}) or (B, T, {self.E}) with T > 0, "
                             f"got {x.shape}")
        if x.ndim == 2:
            return self.outputs(x, self.need_weights), None
        if x.shape[0] == 0:
            return self._empty(x.shape[1]), None
        results = [self.outputs(xb, self.need_weights) for xb in x]
        stacked = tuple(None if r[0] is None else np.stack(r) for r in zip(*results))
        return stacked, None

    def band_window(self, T: int):
        """``(left, right)`` of the banded weights for a T-step input (the window clamped to T - 1),
        or None when the weights come back dense (T, T)."""
        if self.window is None or self.global_tokens:
            return None
        return tuple(min(w, T - 1) for w in self.window)

    def _empty(self, T: int):
        """The four outputs of a batch of 0 sequences (shapes as for any batch)."""
        C, F = self.config["output_dim"], self.config["forecast_dim"]
        band = self.band_window(T)
        weights = None
        if self.need_weights:
            weights = np.zeros((0, T, T if band is None else band[0] + band[1] + 1), np.float32)
        return (np.zeros((0, T, C), np.float32), np.zeros((0, F), np.float32), np.zeros((0, T, 1), np.float32), weights)

    def nbytes(self) -> int:
        """Bytes of the loaded parameters."""
        total = 0
        for layer in self.linears.values():
            for v in vars(layer).values():
                total += v.nbytes() if callable(getattr(v, "nbytes", None)) else getattr(v, "nbytes", 0)
        return total
