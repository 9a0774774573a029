"""LSTM ops, built around one prepared-weights object.

- :mod:`.prepared`: :class:`PreparedWeights`, the kernels' forms of one set of
  parameters (concatenated, fused, packed, the stack plan), and the one
  registry that keeps them between calls; :func:`empty_cache`.
- :mod:`.recurrence`: the ``fastlstm::lstm_input_projection``,
  ``fastlstm::lstm_recurrence`` and ``fastlstm::lstm_recurrence_backward`` ops.
- :mod:`.layer`: ``fastlstm::lstm_layer``, one whole layer for training.
- :mod:`.train_stack`: ``fastlstm::lstm_stack``, every layer for training in one node.
- :mod:`.step`: ``fastlstm::lstm_step``, one time step (decoding, streaming).
- :mod:`.stack`: :func:`lstm`, the stacked/bidirectional/projected LSTM, and
  :func:`plan`, which chooses how a call runs.
- :mod:`.grads`: the backward's weight and bias gradients; :mod:`._checks`:
  argument checks; :mod:`.double_backward`: gradients of gradients.

Layouts are time-major. See docs/cpu_kernels.md.
"""

from fastlstm.ops.lstm.layer import lstm_layer
from fastlstm.ops.lstm.prepared import REGISTRY, PreparedWeights, empty_cache, prepared_weights, register_cache
from fastlstm.ops.lstm.recurrence import lstm_input_projection, lstm_recurrence, lstm_recurrence_backward
from fastlstm.ops.lstm.stack import Plan, lstm, plan
from fastlstm.ops.lstm.step import lstm_step
from fastlstm.ops.lstm.train_stack import lstm_stack

__all__ = ["REGISTRY", "Plan", "PreparedWeights", "empty_cache", "lstm", "lstm_input_projection", "lstm_layer",
           "lstm_recurrence", "lstm_recurrence_backward", "lstm_stack", "lstm_step", "plan", "prepared_weights", "register_cache"]
