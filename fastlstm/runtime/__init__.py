"""Torch-free inference: load a file written by :func:`fastlstm.export` and run
it with numpy and the compiled kernels (``fastlstm._C``). Importing this
package never imports torch.

>>> import fastlstm.runtime as rt
>>> out, (h_n, c_n) = rt.load("lstm.safetensors")(np.zeros((1440, 1, 32), np.float32))
"""

from fastlstm.runtime.layers import LSTMStack, Linear, get_num_threads, register_layer, set_num_threads
from fastlstm.runtime.model import Model, load, save

__all__ = ["LSTMStack", "Linear", "Model", "get_num_threads", "load", "register_layer", "save", "set_num_threads"]
