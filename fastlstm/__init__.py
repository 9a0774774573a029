"""fastlstm: fast, dependable LSTM kernels for PyTorch.

>>> import fastlstm
>>> lstm = fastlstm.LSTM(32, 128, num_layers=2, bidirectional=True)  # drop-in for torch.nn.LSTM
"""

from fastlstm import _ext  # noqa: F401  (loads _C, warns once if it cannot)
from fastlstm import ops, reference
from fastlstm._backends import available_backends, get_backend, set_backend
from fastlstm.nn import LSTM, LSTMCell
from fastlstm.nn import SparseAttention

__version__ = "0.1.0"

__all__ = [
    "LSTM",
    "LSTMCell",
    "SparseAttention",
    "available_backends",
    "get_backend",
    "ops",
    "reference",
    "set_backend",
]
