"""Torch-free inference: load a file written by :func:`fastlstm.export` and run
it with numpy and the compiled kernels (``fastlstm._C``). Importing this
package never imports torch.

>>> import fastlstm.runtime as rt
>>> out, (h_n, c_n) = rt.load("lstm.safetensors")(np.zeros((1440, 1, 32), np.float32))
>>> pred = rt.ProductivityApp.load("productivity.safetensors").predict(events)  # the desktop app
"""

from fastlstm.runtime.layers import LSTMStack, Linear, get_num_threads, register_layer, set_num_threads
from fastlstm.runtime.model import Model, load, save
from fastlstm.runtime import productivity as _productivity  # noqa: F401,E402  (registers "productivity_head")
from fastlstm.runtime.app import AnomalySpan, ProductivityApp, ProductivityPrediction
from fastlstm.runtime.events import ActivityEvent, ActivityLogError, FeatureEncoder, events_from_columns, read_log

__all__ = ["ActivityEvent", "ActivityLogError", "AnomalySpan", "FeatureEncoder", "LSTMStack", "Linear", "Model",
           "ProductivityApp", "ProductivityPrediction", "events_from_columns", "get_num_threads", "load", "read_log",
           "register_layer", "save", "set_num_threads"]
