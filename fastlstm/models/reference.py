"""Plain-PyTorch originals of the consumer models, kept as references.

``ProductivityLSTM`` is the activity-pattern model of the productivity design
document (``seeds/000_…``), written with ``torch.nn.LSTM`` and
``torch.nn.MultiheadAttention`` exactly as the document writes it. The
fastlstm version (:class:`fastlstm.models.ProductivityLSTM`) is tested
against it and loads its weights with ``from_reference``.

Problems in the document's code, and how this file handles them:

1. ``nn.MultiheadAttention`` is sequence-first by default (``batch_first=False``)
   while the LSTM is batch-first. The document transposes ``lstm_out`` to
   ``(T, B, E)`` before attention and transposes the result back; that is
   correct and kept. Forgetting either transpose silently mixes batch and time
   (for B == T it even runs), so the fastlstm model uses ``batch_first=True``
   attention instead and the parity test checks the two agree.
2. The text asks for two Bi-LSTM layers of 128 and 64 units, but one
   ``nn.LSTM(hidden_size=hidden_dim, num_layers=num_layers)`` can only give
   every layer the same width. The reference keeps the code (uniform width);
   the fastlstm model also accepts ``hidden_dim=(128, 64)``.
3. ``dropout=0.2`` with ``num_layers=1`` makes ``nn.LSTM`` warn and do nothing.
   Kept (it is the document's constructor); the warning is the user's hint.
4. Variable-length sequences ("Handling of variable-length sequences") are
   padded, but the document's forward neither masks padding in attention nor
   forecasts from the last *real* step: ``attn_output[:, -1, :]`` reads a
   padding position for every shorter sequence. Handled here: ``forward``
   also accepts a ``PackedSequence`` (or ``lengths=``), packs the LSTM input,
   passes ``key_padding_mask`` to attention and forecasts from each sequence's
   last valid step. Plain tensors without lengths behave exactly as written.
5. ``need_weights`` defaults to True, so attention returns head-averaged
   ``(B, T, T)`` weights and cannot use the fused SDPA path; kept (the
   weights feed the heatmaps), with ``need_weights=False`` as an opt-out.
6. The anomaly head returns logits, not probabilities (use a sigmoid, as
   ``binary_cross_entropy_with_logits`` and ``predict`` do); the forecaster
   predicts the next step's whole input feature vector (``input_dim``), from
   which the productivity forecast is one component.

>>> ref = ProductivityLSTM(input_dim=35, embedding_dim=64, hidden_dim=128, num_layers=2, output_dim=5)
>>> pattern, forecast, anomaly, attn = ref(torch.randn(2, 50, 35))
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence


def _last_valid(x: Tensor, lengths: Tensor | None) -> Tensor:
    """x (B, T, E) -> (B, E) at each sequence's last valid step."""
    if lengths is None:
        return x[:, -1, :]
    index = (lengths.to(x.device, torch.long) - 1).clamp(min=0)
    return x[torch.arange(x.shape[0], device=x.device), index]


def _padding_mask(lengths: Tensor | None, T: int, device) -> Tensor | None:
    """(B, T) bool, True at padding (``key_padding_mask`` convention)."""
    if lengths is None:
        return None
    return torch.arange(T, device=device).unsqueeze(0) >= lengths.to(device).unsqueeze(1)


class ProductivityLSTM(nn.Module):
    """The design document's activity model: Linear embedding, Bi-LSTM,
    4-head self-attention, pattern / forecast / anomaly heads.

    x: (B, T, input_dim) or a PackedSequence of such rows. Returns
    pattern_output (B, T, output_dim), forecast_output (B, input_dim),
    anomaly_output (B, T, 1) logits, attn_weights (B, T, T) (None when
    ``need_weights=False``).

    >>> ref = ProductivityLSTM(35, 64, 128, 2, 5)
    >>> pattern, forecast, anomaly, attn = ref(torch.randn(2, 50, 35))
    """

    def __init__(self, input_dim, embedding_dim, hidden_dim, num_layers, output_dim):
        super().__init__()
        self.embedding = nn.Linear(input_dim, embedding_dim)
        self.lstm = nn.LSTM(
            input_size=embedding_dim,
            hidden_size=hidden_dim,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=0.2,
        )
        # Sequence-first (batch_first=False): forward transposes around it (note 1).
        self.attention = nn.MultiheadAttention(embed_dim=hidden_dim * 2, num_heads=4, dropout=0.1)
        self.pattern_classifier = nn.Linear(hidden_dim * 2, output_dim)
        self.forecaster = nn.Linear(hidden_dim * 2, input_dim)
        self.anomaly_detector = nn.Linear(hidden_dim * 2, 1)
        self.config = dict(input_dim=input_dim, embedding_dim=embedding_dim, hidden_dim=hidden_dim,
                           num_layers=num_layers, output_dim=output_dim)

    def forward(self, x, hidden=None, *, lengths: Tensor | None = None, need_weights: bool = True):
        if isinstance(x, PackedSequence):
            x, lengths = pad_packed_sequence(x, batch_first=True)
        embedded = self.embedding(x)
        if lengths is not None:  # note 4: pack so padding never enters the recurrence
            packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
            lstm_out, _ = self.lstm(packed, hidden)
            lstm_out, _ = pad_packed_sequence(lstm_out, batch_first=True, total_length=x.shape[1])
        else:
            lstm_out, _ = self.lstm(embedded, hidden)
        seq_first = lstm_out.transpose(0, 1)  # (T, B, E): this module is sequence-first
        attn_output, attn_weights = self.attention(
            seq_first, seq_first, seq_first,
            key_padding_mask=_padding_mask(lengths, x.shape[1], x.device),
            need_weights=need_weights,
        )
        attn_output = attn_output.transpose(0, 1)
        pattern_output = self.pattern_classifier(attn_output)
        forecast_output = self.forecaster(_last_valid(attn_output, lengths))
        anomaly_output = self.anomaly_detector(attn_output)
        return pattern_output, forecast_output, anomaly_output, attn_weights
