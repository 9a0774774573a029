"""Functional ops. Every op is a torch.library custom op with a fake kernel
and autograd; the backend that runs it is chosen in ``fastlstm._backends``."""

from fastlstm.ops.attention import sparse_attention
from fastlstm.ops.lstm import empty_cache, lstm, lstm_input_projection, lstm_recurrence, lstm_recurrence_backward
from fastlstm.ops import lstm_cuda  # noqa: E402,F401  (registers the "cuda" kernels of the LSTM ops)

__all__ = ["empty_cache", "lstm", "lstm_input_projection", "lstm_recurrence", "lstm_recurrence_backward", "sparse_attention"]
