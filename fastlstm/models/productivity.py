"""The productivity design document's activity model on fastlstm modules.

Architecture (``seeds/000_…``): Linear embedding, two bidirectional LSTM
layers (128 then 64 units) with dropout 0.2 between them, 4-head
self-attention (dropout 0.1, optionally a sliding window), and three heads:
per-step pattern logits, a forecast of the next step's features, per-step
anomaly logits. ``forward`` returns ``(pattern_output, forecast_output,
anomaly_output, attn_weights)`` like the document's code.

>>> model = ProductivityLSTM(input_dim=35, embedding_dim=64, hidden_dim=(128, 64), output_dim=5)
>>> pattern, forecast, anomaly, attn = model(torch.randn(2, 288, 35))
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from fastlstm.models import reference as _reference
from fastlstm.models.activity import PATTERNS, ActivityEncoder, read_log
from fastlstm.nn import LSTM, Dropout
from fastlstm.runtime.app import AnomalySpan, ProductivityPrediction, make_prediction  # noqa: F401
from fastlstm.ops.lstm import lstm as lstm_op

try:  # the fused sparse attention module, where this build has it
    from fastlstm.nn.attention import SparseAttention as _SparseAttention
    from fastlstm.ops.attention import sparse_attention as _sparse_attention
except ImportError:
    _SparseAttention = None

# --------------------------------------------------------------------------
# Attention seam: fastlstm.SparseAttention when the package has it, else
# torch.nn.MultiheadAttention with the same (window, global token) pattern as
# a boolean mask. Both are batch-first and share nn.MultiheadAttention's
# parameter names, so state dicts move between them.
# --------------------------------------------------------------------------


def _allowed(q_len: int, k_len: int, window, global_tokens: int, q_offset: int = 0, device=None) -> Tensor:
    """(Tq, Tk) bool, True where query ``q_offset + i`` may attend key ``j``
    (the pattern of ``fastlstm.reference.attention_mask``)."""
    i = torch.arange(q_offset, q_offset + q_len, device=device).unsqueeze(1)
    j = torch.arange(k_len, device=device).unsqueeze(0)
    if window is None:
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=device)
    else:
        left, right = window
        allowed = (j >= i - left) & (j <= i + right)
    if global_tokens > 0:
        allowed = allowed | (j < global_tokens) | (i < global_tokens)
    return allowed


def _normalize_window(window):
    if window is None:
        return None
    if isinstance(window, int) and not isinstance(window, bool):
        window = (window, window)
    try:
        left, right = (int(w) for w in window)
    except (TypeError, ValueError):
        raise TypeError(f"attention_window must be None, an int or a pair (left, right), got {window!r}") from None
    if left < 0 or right < 0:
        raise ValueError(f"attention_window must be >= 0, got {window!r}")
    return left, right


def _masked_attention(attn: nn.Module, x: Tensor, key_padding_mask: Tensor | None, need_weights: bool):
    """Batch-first self-attention with ``attn``'s parameters and pattern as a
    dense mask, through torch's own function (so attention dropout in training
    is torch's). Weights: (B, T, T) head-averaged, or None."""
    B, T = x.shape[0], x.shape[1]
    mask = None
    if attn.window is not None or attn.global_tokens:
        mask = (~_allowed(T, T, attn.window, attn.global_tokens, device=x.device)).expand(B, T, T)
        if key_padding_mask is not None:
            mask = mask | key_padding_mask[:, None, :]
            # Padded queries may have no key left; let them see themselves (their output is padding).
            mask = mask & ~(key_padding_mask[:, :, None] & torch.eye(T, dtype=torch.bool, device=x.device))
            key_padding_mask = None
        mask = mask.repeat_interleave(attn.num_heads, dim=0)
    seq = x.transpose(0, 1)
    out, weights = F.multi_head_attention_forward(
        seq, seq, seq, attn.embed_dim, attn.num_heads, attn.in_proj_weight, attn.in_proj_bias,
        None, None, False, attn.dropout, attn.out_proj.weight, attn.out_proj.bias, training=attn.training,
        key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=mask,
    )
    return out.transpose(0, 1), weights


class _MaskedAttention(nn.MultiheadAttention):
    """The fallback while ``fastlstm.SparseAttention`` is not available:
    nn.MultiheadAttention with the sparse pattern as a dense mask (dense cost)."""

    def __init__(self, embed_dim, num_heads, dropout, window, global_tokens):
        super().__init__(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.window, self.global_tokens = window, global_tokens

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True):
        if self.window is None and self.global_tokens == 0:
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights)
        return _masked_attention(self, query, key_padding_mask, need_weights)


if _SparseAttention is not None:

    class _ProductivityAttention(_SparseAttention):
        """fastlstm.SparseAttention, except in training with attention dropout
        (which the fused kernel does not implement): then the same parameters
        and pattern run through torch's attention with dropout."""

        def forward(self, query, key, value, key_padding_mask=None, need_weights=True):
            if self.training and self.dropout > 0 and (need_weights or query.device.type != "cpu"):
                # torch's attention returns its weights after dropout; the fused
                # kernel (CPU) drops inside and does not form them.
                return _masked_attention(self, query, key_padding_mask, need_weights)
            if query is key and key is value and query.dim() == 3 and self.in_proj_weight is not None \
                    and self.bias_k is None and not self.add_zero_attn and not self.global_tokens:
                if self.window is None and need_weights:
                    # Dense weights are (T, T) anyway: torch's attention forms them once and reuses
                    # them for the output, instead of the fused kernel plus a second T x T pass
                    # (its fused native form at inference, else its function).
                    dense = self._dense_with_weights(query, key_padding_mask, True)
                    return dense if dense is not None else _masked_attention(self, query, key_padding_mask, True)
                if self.window is not None and not (torch.is_grad_enabled() and _needs_grad(self, query)):
                    return _windowed_self_attention(self, query, key_padding_mask, need_weights)
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights)


def _needs_grad(attn: nn.Module, x: Tensor) -> bool:
    return x.requires_grad or any(p.requires_grad for p in attn.parameters())


def _windowed_self_attention(attn: nn.Module, x: Tensor, key_padding_mask: Tensor | None, need_weights: bool):
    """Inference fast path of windowed self-attention, batch-first x (B, T, E):
    one packed in-projection GEMM and one fused kernel call, which also yields
    the head-averaged banded weights (B, T, left + right + 1) (written by the CPU
    kernel; elsewhere through :func:`_band_tables`)."""
    B, T, E = x.shape
    H = attn.num_heads
    Dh = E // H
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).view(B, T, 3, H, Dh).permute(2, 0, 3, 1, 4)
    if need_weights and x.device.type == "cpu" and attn.backend in (None, "auto", "cpu"):
        # The CPU kernel reads q, k, v in place in qkv, writes each query's window
        # weights itself and lays its output out (B, T, H, Dh): no copies around it.
        out, band = torch.ops.fastlstm.sparse_attention_banded(
            qkv[0], qkv[1], qkv[2], attn.window[0], attn.window[1], Dh ** -0.5, key_padding_mask
        )
        result = attn.out_proj(out.transpose(1, 2).reshape(B, T, E))
        return result, band.mean(dim=1)
    q, k = qkv[0].contiguous(), qkv[1].contiguous()  # (B, H, T, Dh) each
    if need_weights:
        # Elsewhere values get a one-hot tail: slot j mod span for key j. A query's window holds
        # span consecutive keys, so its output tail is exactly its softmax weights (the kernel's
        # own), at slots that a fixed per-row rotation maps back to band columns.
        template, unroll = _band_tables(T, attn.window, x.device, x.dtype)
        v = x.new_empty(B, H, T, Dh + template.shape[1])
        v[..., :Dh] = qkv[2]
        v[..., Dh:] = template
    else:
        v = qkv[2].contiguous()
    out, _ = _sparse_attention(q, k, v, attn.window, 0, Dh ** -0.5, key_padding_mask, backend=attn.backend)
    result = attn.out_proj(out[..., :Dh].permute(0, 2, 1, 3).reshape(B, T, E))
    if not need_weights:
        return result, None
    span = unroll.shape[2]
    weights = out[..., Dh:Dh + span].mean(dim=1)  # (B, T, span) by slot
    return result, torch.gather(weights, 2, unroll.expand(B, T, span))


_BAND_TABLES: dict = {}


def _band_tables(T: int, window, device, dtype) -> tuple[Tensor, Tensor]:
    """One-hot value tail (T, slots) (slot ``j mod span`` of key j; slots rounded up to
    16 so the kernel's value loop runs on whole vectors) and, per query and band
    column ``s`` (key ``i - left + s``), the slot holding it (T, span); a few cached."""
    key = (T, window, str(device), dtype)
    hit = _BAND_TABLES.get(key)
    if hit is None:
        left, right = window
        span = left + right + 1
        keys = torch.arange(T, device=device)
        template = torch.zeros(T, -(-span // 16) * 16, device=device, dtype=dtype)
        template[keys, keys % span] = 1.0
        unroll = ((keys.unsqueeze(1) - left + torch.arange(span, device=device)) % span).unsqueeze(0)
        if len(_BAND_TABLES) >= 8:
            _BAND_TABLES.pop(next(iter(_BAND_TABLES)))
        hit = _BAND_TABLES[key] = (template, unroll)
    return hit


def _make_attention(embed_dim: int, num_heads: int, dropout: float, window, global_tokens: int) -> nn.Module:
    if _SparseAttention is not None:
        # banded weights cannot hold global tokens (they attend beyond the band): dense then
        return _ProductivityAttention(embed_dim, num_heads, dropout=dropout, batch_first=True, window=window,
                                      global_tokens=global_tokens,
                                      attn_weights_format="dense" if global_tokens else "auto")
    return _MaskedAttention(embed_dim, num_heads, dropout, window, global_tokens)


def dense_attention_weights(weights: Tensor | None, window, T: int) -> Tensor | None:
    """(…, T, T) weights from what the attention returned: dense as is, or
    banded (…, T, left + right + 1) from a windowed ``fastlstm.SparseAttention``."""
    if weights is None or weights.shape[-1] == T or window is None:
        return weights
    left, right = window
    idx = torch.arange(T, device=weights.device).unsqueeze(1) + torch.arange(left + right + 1, device=weights.device)
    out = weights.new_zeros(*weights.shape[:-1], T + left + right)
    out.scatter_(-1, idx.expand(weights.shape), weights)
    return out[..., left:left + T]


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------


class ProductivityLSTM(nn.Module):
    """The document's activity model on fastlstm kernels.

    Accepts the document's constructor ``(input_dim, embedding_dim, hidden_dim,
    num_layers, output_dim)`` (uniform width, e.g. ``hidden_dim=128,
    num_layers=2``) or per-layer widths ``hidden_dim=(128, 64)`` as the text
    describes. ``attention_window`` (int or ``(left, right)``) and
    ``global_tokens`` make attention sparse; ``None`` is dense.

    x: (B, T, input_dim) or a PackedSequence (``lengths=`` for padded input).
    Returns pattern (B, T, output_dim), forecast (B, input_dim), anomaly
    logits (B, T, 1), head-averaged attention weights (B, T, T), or banded
    (B, T, left + right + 1) when windowed on fastlstm.SparseAttention (see
    :func:`dense_attention_weights`), or None with ``need_weights=False``.

    >>> model = ProductivityLSTM(35, 64, (128, 64), output_dim=5, attention_window=32)
    >>> pattern, forecast, anomaly, attn = model(torch.randn(1, 288, 35))
    """

    def __init__(self, input_dim: int, embedding_dim: int = 64, hidden_dim=(128, 64), num_layers: int | None = None,
                 output_dim: int = len(PATTERNS), *, dropout: float = 0.2, num_heads: int = 4,
                 attention_dropout: float = 0.1, attention_window=None, global_tokens: int = 0,
                 backend: str | None = None):
        super().__init__()
        if isinstance(hidden_dim, int):
            hidden = [hidden_dim] * (2 if num_layers is None else num_layers)
        else:
            hidden = [int(h) for h in hidden_dim]
            if num_layers is not None and num_layers != len(hidden):
                raise ValueError(f"num_layers={num_layers} does not match hidden_dim={tuple(hidden)}")
        if not hidden or any(h <= 0 for h in hidden):
            raise ValueError(f"hidden_dim must give at least one positive width, got {hidden_dim!r}")
        for name, v in (("input_dim", input_dim), ("embedding_dim", embedding_dim), ("output_dim", output_dim)):
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if 2 * hidden[-1] % num_heads:
            raise ValueError(f"attention width 2*{hidden[-1]} is not divisible by num_heads={num_heads}")
        self.input_dim, self.output_dim, self.hidden_sizes = input_dim, output_dim, hidden
        self.attention_window = _normalize_window(attention_window)
        self.global_tokens = int(global_tokens)
        self.config = dict(input_dim=input_dim, embedding_dim=embedding_dim, hidden_dim=tuple(hidden),
                           output_dim=output_dim, dropout=dropout, num_heads=num_heads,
                           attention_dropout=attention_dropout, attention_window=self.attention_window,
                           global_tokens=self.global_tokens)
        self.embedding = nn.Linear(input_dim, embedding_dim)
        sizes = [embedding_dim] + [2 * h for h in hidden]
        self.lstm = nn.ModuleList(
            LSTM(sizes[i], h, batch_first=True, bidirectional=True, backend=backend) for i, h in enumerate(hidden)
        )
        self.lstm_dropout = Dropout(dropout)  # nn.Dropout with the fused CPU mask kernel
        width = 2 * hidden[-1]
        self.attention = _make_attention(width, num_heads, attention_dropout, self.attention_window, self.global_tokens)
        self.pattern_classifier = nn.Linear(width, output_dim)
        self.forecaster = nn.Linear(width, input_dim)
        self.anomaly_detector = nn.Linear(width, 1)
        self.encoder: ActivityEncoder | None = None  # set by training / from_pretrained, for predict()

    # -- reference interop -------------------------------------------------------

    @classmethod
    def from_reference(cls, model: _reference.ProductivityLSTM, **kwargs) -> "ProductivityLSTM":
        """This model with the reference model's configuration and weights
        (``kwargs``: e.g. ``attention_window``, ``backend``).

        >>> fast = ProductivityLSTM.from_reference(fastlstm.models.reference.ProductivityLSTM(35, 64, 128, 2, 5))
        """
        if not isinstance(model, _reference.ProductivityLSTM):
            raise TypeError(f"from_reference expects fastlstm.models.reference.ProductivityLSTM, got {type(model).__name__}")
        c = model.config
        lstm = model.lstm
        w = model.embedding.weight
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fast = cls(c["input_dim"], c["embedding_dim"], c["hidden_dim"], c["num_layers"], c["output_dim"],
                       dropout=lstm.dropout, num_heads=model.attention.num_heads,
                       attention_dropout=model.attention.dropout, **kwargs).to(device=w.device, dtype=w.dtype)
        state = {}
        for key, value in model.state_dict().items():
            if key.startswith("lstm."):
                name = key[len("lstm."):]  # e.g. weight_ih_l1_reverse
                stem, rest = name.split("_l", 1)
                layer, _, suffix = rest.partition("_")
                key = f"lstm.{layer}.{stem}_l0" + (f"_{suffix}" if suffix else "")
            state[key] = value
        fast.load_state_dict(state, strict=True)
        fast.train(model.training)
        return fast

    # -- forward -------------------------------------------------------------------

    def _initial_state(self, hidden, layer: int):
        if hidden is None:
            return None
        if isinstance(hidden, (list,)) and len(hidden) == len(self.lstm):
            return hidden[layer]
        h0, c0 = hidden
        if len(set(self.hidden_sizes)) != 1:
            raise ValueError("with per-layer widths pass hidden as a list of (h0, c0) per layer")
        return h0[2 * layer:2 * layer + 2].contiguous(), c0[2 * layer:2 * layer + 2].contiguous()

    def lstm_features(self, x: Tensor, hidden=None, lengths: Tensor | None = None) -> Tensor:
        """Embedding and the Bi-LSTM stack: (B, T, input_dim) -> (B, T, 2*hidden[-1])."""
        h = self.embedding(x).transpose(0, 1)  # the ops are time-major
        if lengths is not None:
            lengths = lengths.to("cpu", torch.int64)
        for layer, lstm in enumerate(self.lstm):
            if layer > 0:
                h = self.lstm_dropout(h)
            state = self._initial_state(hidden, layer)
            if type(lstm) is LSTM:  # the op directly: no per-layer batch-first transposes or repacking
                h, _, _ = lstm_op(h, state, lstm._flat_weights, num_layers=1, bidirectional=True,
                                  lengths=lengths, backend=lstm.backend)
            else:  # a swapped-in module (e.g. int8 from fastlstm.quantize_dynamic) through its own forward
                h = _module_forward(lstm, h, state, lengths)
        return h.transpose(0, 1)

    def forward(self, x, hidden=None, *, lengths: Tensor | None = None, need_weights: bool = True):
        if isinstance(x, PackedSequence):
            x, lengths = pad_packed_sequence(x, batch_first=True)
        if not isinstance(x, Tensor) or x.dim() != 3:
            raise ValueError(f"ProductivityLSTM: x must be (B, T, input_dim) or a PackedSequence, got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        if x.shape[-1] != self.input_dim:
            raise ValueError(f"ProductivityLSTM: x.size(-1) must be input_dim={self.input_dim}, got {x.shape[-1]}")
        if x.shape[1] == 0:
            raise ValueError("ProductivityLSTM: empty sequence (T = 0)")
        lstm_out = self.lstm_features(x, hidden, lengths)
        mask = _reference._padding_mask(lengths, x.shape[1], x.device)
        attn_output, attn_weights = self.attention(lstm_out, lstm_out, lstm_out, key_padding_mask=mask,
                                                   need_weights=need_weights)
        pattern_output = self.pattern_classifier(attn_output)
        forecast_output = self.forecaster(_reference._last_valid(attn_output, lengths))
        anomaly_output = self.anomaly_detector(attn_output)
        return pattern_output, forecast_output, anomaly_output, attn_weights

    # -- one file with the encoder (fastlstm/models/productivity_io.py) -------------

    def save_pretrained(self, path, dtype: str = "float32", window: int | None = None) -> None:
        """This model and ``self.encoder`` in one runtime file (``fastlstm.runtime.ProductivityApp`` loads it)."""
        from fastlstm.models.productivity_io import save_pretrained

        save_pretrained(self, path, dtype, window)

    @classmethod
    def from_pretrained(cls, path) -> "ProductivityLSTM":
        """The model and encoder :meth:`save_pretrained` wrote (float32 files), in eval mode."""
        from fastlstm.models.productivity_io import from_pretrained

        return from_pretrained(cls, path)

    # -- fine-tuning helpers -------------------------------------------------------

    PARTS = ("embedding", "lstm", "attention", "heads")

    def _part_modules(self, part: str) -> list[nn.Module]:
        if part == "heads":
            return [self.pattern_classifier, self.forecaster, self.anomaly_detector]
        if part in ("embedding", "lstm", "attention"):
            return [getattr(self, part)]
        raise ValueError(f"unknown part {part!r}; expected one of {self.PARTS}")

    def freeze(self, *parts: str) -> "ProductivityLSTM":
        """Stop gradients for the named parts (default: embedding and lstm, for
        fine-tuning the attention and heads on one user's data)."""
        for part in parts or ("embedding", "lstm"):
            for module in self._part_modules(part):
                module.requires_grad_(False)
        return self

    def unfreeze(self, *parts: str) -> "ProductivityLSTM":
        for part in parts or self.PARTS:
            for module in self._part_modules(part):
                module.requires_grad_(True)
        return self

    # -- readable inference ------------------------------------------------------

    @torch.no_grad()
    def predict(self, log, encoder: ActivityEncoder | None = None, *, threshold: float = 0.5,
                need_weights: bool = True) -> ProductivityPrediction:
        """Run on one log (CSV path, stream, records, or (T, input_dim) features).

        Returns per-step pattern labels, the next period's productivity
        forecast, anomaly probabilities with the spans at or above
        ``threshold``, and the attention weights for heatmaps.

        >>> pred = model.predict(log.events, encoder)
        >>> pred.patterns[:3], pred.forecast, pred.anomalies
        """
        encoder = encoder or self.encoder
        timestamps = []
        if isinstance(log, Tensor):
            features = log
        else:
            if encoder is None:
                raise ValueError("predict needs an ActivityEncoder (pass encoder= or set model.encoder)")
            events = read_log(log, encoder.score_range)
            if not events:
                raise ValueError("predict: the log has no events")
            timestamps = [e.timestamp for e in events]
            features = encoder.encode_events(events)
        if features.dim() != 2:
            raise ValueError(f"predict: features must be (T, input_dim), got {tuple(features.shape)}")
        was_training = self.training
        self.eval()
        try:
            p = self.embedding.weight
            pattern, forecast, anomaly, attn = self(features.to(p.device, p.dtype).unsqueeze(0), need_weights=need_weights)
        finally:
            self.train(was_training)
        attn = dense_attention_weights(attn, self.attention_window, features.shape[0])
        return _prediction(pattern[0], forecast[0], anomaly[0, :, 0], None if attn is None else attn[0],
                           timestamps, encoder, threshold)


def _module_forward(lstm: nn.Module, h: Tensor, state, lengths: Tensor | None) -> Tensor:
    """Time-major (T, B, I) through an LSTM-like module built batch-first."""
    x = h.transpose(0, 1)
    if lengths is None:
        out, _ = lstm(x, state)
        return out.transpose(0, 1)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed, state)
    out, _ = pad_packed_sequence(out, batch_first=False, total_length=h.shape[0])
    return out


def _prediction(pattern, forecast, anomaly, attn, timestamps, encoder, threshold) -> ProductivityPrediction:
    numpy = lambda t: None if t is None else t.detach().float().cpu().numpy()  # noqa: E731
    return make_prediction(numpy(pattern), numpy(forecast), numpy(anomaly), numpy(attn), timestamps, encoder,
                           threshold)


__all__ = ["AnomalySpan", "ProductivityLSTM", "ProductivityPrediction"]


# --------------------------------------------------------------------------
# Export to the torch-free runtime (fastlstm.export / fastlstm.runtime.load)
# --------------------------------------------------------------------------


def _linear_tensors(weight: np.ndarray, bias: np.ndarray | None, dtype: str) -> dict:
    from fastlstm.runtime.quant import quantize_rows

    tensors = {} if bias is None else {"bias": np.ascontiguousarray(bias, dtype=np.float32)}
    if dtype == "int8":
        tensors["weight"], tensors["weight_scale"] = quantize_rows(weight)
    else:
        tensors["weight"] = np.ascontiguousarray(weight, dtype=np.float32)
    return tensors


def _export_productivity(model: ProductivityLSTM, dtype: str) -> list:
    """Runtime layers: embedding (linear), one ``lstm`` per Bi-LSTM layer, then
    ``productivity_head`` (attention + heads; fastlstm/runtime/productivity.py)."""
    from fastlstm import exporter

    layers = list(exporter._layers(model.embedding, dtype))
    for lstm in model.lstm:
        layers += exporter._layers(lstm, dtype)
    attn = model.attention
    if attn.in_proj_weight is None or getattr(attn, "bias_k", None) is not None:
        raise TypeError("export: the productivity head needs packed in_proj weights without bias_kv")
    head_tensors = {}
    numpy = lambda t: t.detach().float().cpu().numpy()  # noqa: E731
    head_tensors.update({f"in_proj.{k}": v for k, v in
                         _linear_tensors(numpy(attn.in_proj_weight), numpy(attn.in_proj_bias), dtype).items()})
    for sub, module in (("out_proj", attn.out_proj), ("pattern", model.pattern_classifier),
                        ("forecast", model.forecaster), ("anomaly", model.anomaly_detector)):
        (_, tensors), = exporter._layers(module, dtype)  # nn.Linear or an int8 QuantizedLinear
        head_tensors.update({f"{sub}.{k}": v for k, v in tensors.items()})
    window = None if model.attention_window is None else list(model.attention_window)
    config = dict(type="productivity_head", embed_dim=attn.embed_dim, num_heads=attn.num_heads, window=window,
                  global_tokens=model.global_tokens, output_dim=model.output_dim, forecast_dim=model.input_dim,
                  dtype=dtype)
    return layers + [(config, head_tensors)]


def _register_export() -> None:
    try:
        from fastlstm import exporter
    except ImportError:  # a build without the runtime
        return
    exporter.register_exporter(ProductivityLSTM)(_export_productivity)


_register_export()
