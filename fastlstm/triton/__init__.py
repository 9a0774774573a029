"""Triton kernels (one module per op family). Importing a module here imports
``triton``; the backend table (``fastlstm._backends``) checks it is installed.

- :mod:`fastlstm.triton.lstm`: fused LSTM recurrence, forward and backward.
"""
