"""The consumer models of the design documents on fastlstm modules, with
their plain-PyTorch originals in :mod:`fastlstm.models.reference`."""

from fastlstm.models.activity import (
    PATTERNS,
    ActivityEncoder,
    ActivityEvent,
    ActivityLogError,
    SyntheticLog,
    read_log,
    synthetic_activity_log,
)
from fastlstm.models.productivity import ProductivityLSTM, ProductivityPrediction
from fastlstm.models.streaming import StreamingProductivity

__all__ = [
    "PATTERNS",
    "ActivityEncoder",
    "ActivityEvent",
    "ActivityLogError",
    "ProductivityLSTM",
    "ProductivityPrediction",
    "StreamingProductivity",
    "SyntheticLog",
    "read_log",
    "synthetic_activity_log",
]
