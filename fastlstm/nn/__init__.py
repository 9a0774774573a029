"""nn.Module drop-ins backed by fastlstm ops."""

from fastlstm.nn.attention import SparseAttention, banded_to_dense
from fastlstm.nn.lstm import LSTM, LSTMCell

__all__ = ["LSTM", "LSTMCell", "SparseAttention", "banded_to_dense"]
