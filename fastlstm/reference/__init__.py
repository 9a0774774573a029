"""Plain-PyTorch reference implementations: the ground truth every fused
kernel is tested against, and the fallback backend. Written for clarity;
float64-capable."""

from fastlstm.reference.attention import attention_mask, sparse_attention
from fastlstm.reference.lstm import lstm, lstm_cell, lstm_direction, lstm_recurrence

__all__ = ["attention_mask", "sparse_attention", "lstm", "lstm_cell", "lstm_direction", "lstm_recurrence"]
