"""Inference-only int8 modules: :class:`QuantizedLSTM` and :class:`QuantizedLinear`.

Weights are symmetric int8 with one scale per output row; activations are
quantised per row at run time by the kernels (csrc/cpu/int8_*), int32
accumulation, gates and cell state in fp32. The computation is the torch-free
runtime's (``fastlstm.runtime``), so a model gives the same numbers in torch
and after :func:`fastlstm.export`.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from fastlstm.runtime.layers import Linear as _RtLinear
from fastlstm.runtime.layers import LSTMStack as _RtLSTM
from fastlstm.runtime.layers import lstm_tensors_from_flat
from fastlstm.runtime.quant import quantize_rows

_NO_GRAD = ("{name} is inference only (int8 weights have no gradients); run it under torch.no_grad() "
            "or on inputs that do not require grad, and train the float model instead")


def _check_no_grad(name: str, *tensors) -> None:
    if torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in tensors):
        raise RuntimeError(_NO_GRAD.format(name=name))


def _np(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).contiguous().numpy()


_INPUT_DTYPES = (torch.float32, torch.float64)  # converted to float32, the kernels' type


def _check_input_dtype(name: str, t: Tensor) -> None:
    if t.dtype not in _INPUT_DTYPES:
        raise TypeError(f"{name}: input must be floating point (float32 or float64), got {t.dtype}")


def _refuse_tracing(name: str) -> None:
    # The int8 kernels run on numpy views of the tensors, which the tracer cannot
    # record: a trace would replay its first output as a constant.
    if torch.jit.is_tracing():
        raise RuntimeError(f"{name} cannot be traced with torch.jit.trace: it runs its int8 kernels outside "
                           "torch ops, so the trace would return the traced input's output for every input. "
                           "Call the module directly, or export it with fastlstm.export.")


def _buffer_key(buffers) -> tuple | None:
    """What the runtime built from ``buffers`` depends on: their identity, address and
    version (in-place edits bump it), or None when an inference tensor (no version
    counter) is among them, so that the runtime is rebuilt on every call."""
    key = []
    for name, b in buffers:
        if b is None:
            continue
        if b.is_inference():
            return None
        key.append((name, id(b), b.data_ptr(), b._version))
    return tuple(key)


class _RuntimeBacked(nn.Module):
    """Keeps the int8 state as buffers (state_dict) and the runtime layer built from them."""

    _runtime_cls: type

    def _runtime(self):
        """The runtime layer of the current buffers: rebuilt when one was replaced or
        edited in place (packed int8 weights are copies; scales are views)."""
        key = _buffer_key(self._buffers.items())
        cached = self._rt
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        rt = self._runtime_cls(self._rt_config(), self.runtime_tensors())
        if key is not None:
            self._rt = (key, rt)  # one assignment: a concurrent forward sees the old pair or the new
        return rt

    def _load_from_state_dict(self, *args, **kwargs):
        self._rt = None
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        for name, b in self._buffers.items():
            if b is not None and b.device.type != "cpu":
                raise RuntimeError(f"{type(self).__name__} runs on CPU only (buffer {name} moved to {b.device})")
        self._rt = None
        return out

    def requires_grad_(self, requires_grad: bool = True):
        if requires_grad:
            raise RuntimeError(_NO_GRAD.format(name=type(self).__name__))
        return self

    def train(self, mode: bool = True):
        # Allowed (models call .train() recursively); the module computes the same either way.
        return super().train(mode)


class QuantizedLSTM(_RuntimeBacked):
    """int8 drop-in for a trained :class:`torch.nn.LSTM` / :class:`fastlstm.LSTM` (inference only, CPU).

    Same forward contract: ``(T, B, I)`` / ``batch_first`` / unbatched ``(T, I)`` / PackedSequence,
    optional ``hx = (h_0 (L*D, B, P), c_0 (L*D, B, H))``; returns ``output, (h_n, c_n)`` in float32.
    Bidirectional, stacked and ``proj_size`` are supported; dropout is ignored (inference).

    >>> q = fastlstm.QuantizedLSTM.from_float(torch.nn.LSTM(32, 128, num_layers=2, bidirectional=True))
    >>> out, (h_n, c_n) = q(torch.randn(1440, 1, 32))
    """

    _runtime_cls = _RtLSTM

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0) -> None:
        super().__init__()
        if not (isinstance(input_size, int) and isinstance(hidden_size, int) and isinstance(num_layers, int)):
            raise TypeError("QuantizedLSTM: input_size, hidden_size and num_layers must be ints")
        if min(input_size, hidden_size, num_layers) < 1:
            raise ValueError("QuantizedLSTM: input_size, hidden_size and num_layers must be >= 1")
        if not 0 <= proj_size < hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size = bidirectional, proj_size
        self._rt = None
        D, H = (2 if bidirectional else 1), hidden_size
        P, G = proj_size or hidden_size, 4 * hidden_size
        for layer in range(num_layers):
            I = input_size if layer == 0 else D * P
            shapes = {"w_ih": (D, G, I), "w_hh": (D, G, P)}
            if proj_size:
                shapes["w_hr"] = (D, P, H)
            for w, shape in shapes.items():
                self.register_buffer(f"l{layer}.{w}".replace(".", "_"), torch.zeros(shape, dtype=torch.int8))
                self.register_buffer(f"l{layer}_{w}_scale", torch.zeros(shape[:2]))
            if bias:
                self.register_buffer(f"l{layer}_bias", torch.zeros(D, G))

    def _rt_config(self) -> dict:
        return dict(type="lstm", input_size=self.input_size, hidden_size=self.hidden_size,
                    num_layers=self.num_layers, bidirectional=self.bidirectional, proj_size=self.proj_size,
                    bias=self.bias, batch_first=self.batch_first, dtype="int8")

    def runtime_tensors(self) -> dict[str, np.ndarray]:
        """The int8 state under the runtime's names (``l0.w_ih``, ``l0.w_ih_scale``, ...)."""
        return {k.replace("_", ".", 1): v.numpy() for k, v in self._buffers.items()}

    @classmethod
    def from_float(cls, module: nn.Module) -> "QuantizedLSTM":
        """Quantises a torch.nn.LSTM or fastlstm.LSTM (weights per row, int8)."""
        if not hasattr(module, "_flat_weights") or getattr(module, "mode", "LSTM") != "LSTM":
            raise TypeError(f"QuantizedLSTM.from_float expects an LSTM module, got {type(module).__name__}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = cls(module.input_size, module.hidden_size, module.num_layers, module.bias, module.batch_first,
                    module.dropout, module.bidirectional, module.proj_size)
        weights = [_np(w) for w in module._flat_weights]
        tensors = lstm_tensors_from_flat(weights, q._rt_config(), "int8")
        for k, v in tensors.items():
            getattr(q, k.replace(".", "_", 1)).copy_(torch.from_numpy(v))
        q._rt = None
        return q

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.batch_first:
            s += ", batch_first=True"
        return s + ", dtype=int8"

    def forward(self, input, hx: tuple[Tensor, Tensor] | None = None):
        packed = isinstance(input, PackedSequence)
        data = input.data if packed else input
        if not isinstance(data, Tensor):
            raise TypeError(f"QuantizedLSTM: input must be a Tensor or PackedSequence, got {type(input).__name__}")
        _refuse_tracing("QuantizedLSTM")
        _check_no_grad("QuantizedLSTM", data, *(hx if isinstance(hx, (tuple, list)) else ()))
        if data.device.type != "cpu":
            raise RuntimeError(f"QuantizedLSTM runs on CPU only, got input on {data.device}")
        _check_input_dtype("QuantizedLSTM", data)
        if hx is not None:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2 or not all(isinstance(t, Tensor) for t in hx):
                raise RuntimeError("lstm expects two hidden states: hx must be a tuple (h_0, c_0)")
            for name, t in zip(("h_0", "c_0"), hx):
                if t.dtype != data.dtype:
                    raise RuntimeError(f"QuantizedLSTM: input and hidden tensors must have the same dtype, got "
                                       f"input {data.dtype} and {name} {t.dtype}")
                if t.device != data.device:
                    raise RuntimeError(
                        f"Input and hidden tensors are not at the same device, found input tensor at "
                        f"{data.device} and hidden tensor ({name}) at {t.device}"
                    )
            state = (_np(hx[0]), _np(hx[1]))
        else:
            state = None
        rt = self._runtime()
        try:
            if packed:
                x, lengths = pad_packed_sequence(input)
                sorted_indices = input.sorted_indices
                out, (h_n, c_n) = _run_time_major(rt, _np(x), state, lengths.numpy().astype(np.int64))
                out = torch.from_numpy(out)
                if sorted_indices is not None:
                    out = out.index_select(1, sorted_indices)
                    lengths = lengths.index_select(0, sorted_indices)
                out_data = pack_padded_sequence(out, lengths, enforce_sorted=True).data
                out = PackedSequence(out_data, input.batch_sizes, sorted_indices, input.unsorted_indices)
            else:
                y, (h_n, c_n) = rt.run(_np(data), state)
                out = torch.from_numpy(y)
        except ValueError as exc:
            raise RuntimeError(f"QuantizedLSTM: {exc}") from None
        return out, (torch.from_numpy(h_n), torch.from_numpy(c_n))


def _run_time_major(rt: _RtLSTM, x: np.ndarray, state, lengths: np.ndarray):
    """Runs a time-major padded batch (T, B, I) whatever the layer's batch_first,
    without touching the layer (other threads may be running it)."""
    if not rt.batch_first:
        return rt.run(x, state, lengths)
    y, hc = rt.run(x.transpose(1, 0, 2), state, lengths)
    return y.transpose(1, 0, 2), hc


class QuantizedLinear(_RuntimeBacked):
    """int8 drop-in for a trained :class:`torch.nn.Linear` (inference only, CPU): per-row int8
    weights, per-row dynamic int8 activations, int32 accumulation. Input ``(..., in_features)``.

    >>> q = QuantizedLinear.from_float(torch.nn.Linear(64, 10))
    >>> y = q(torch.randn(8, 64))
    """

    _runtime_cls = _RtLinear

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.has_bias = in_features, out_features, bias
        self._rt = None
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.zeros(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    def _rt_config(self) -> dict:
        return dict(type="linear", in_features=self.in_features, out_features=self.out_features,
                    bias=self.has_bias, dtype="int8")

    def runtime_tensors(self) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self._buffers.items() if v is not None}

    @classmethod
    def from_float(cls, module: nn.Linear) -> "QuantizedLinear":
        if not isinstance(module, nn.Linear):
            raise TypeError(f"QuantizedLinear.from_float expects a torch.nn.Linear, got {type(module).__name__}")
        q = cls(module.in_features, module.out_features, module.bias is not None)
        w, s = quantize_rows(_np(module.weight))
        q.weight.copy_(torch.from_numpy(w))
        q.weight_scale.copy_(torch.from_numpy(s))
        if module.bias is not None:
            q.bias.copy_(module.bias.detach().float())
        return q

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.has_bias}, dtype=int8"

    def forward(self, input: Tensor) -> Tensor:
        _refuse_tracing("QuantizedLinear")
        _check_no_grad("QuantizedLinear", input)
        if input.device.type != "cpu":
            raise RuntimeError(f"QuantizedLinear runs on CPU only, got input on {input.device}")
        _check_input_dtype("QuantizedLinear", input)
        try:
            y, _ = self._runtime().run(_np(input))
        except ValueError as exc:
            raise RuntimeError(f"QuantizedLinear: {exc}") from None
        return torch.from_numpy(y)
