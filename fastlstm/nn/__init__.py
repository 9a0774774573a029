"""nn.Module drop-ins backed by fastlstm ops."""

from fastlstm.nn.attention import SparseAttention, banded_to_dense
from fastlstm.nn.dropout import Dropout
from fastlstm.nn.lstm import LSTM, LSTMCell
from fastlstm.nn.quantized import QuantizedLinear, QuantizedLSTM

__all__ = ["Dropout", "LSTM", "LSTMCell", "QuantizedLSTM", "QuantizedLinear", "SparseAttention", "banded_to_dense"]
