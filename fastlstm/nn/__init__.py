"""nn.Module drop-ins backed by fastlstm ops."""

from fastlstm.nn.lstm import LSTM, LSTMCell

__all__ = ["LSTM", "LSTMCell"]
