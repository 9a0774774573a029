"""Drop-in replacements for ``torch.nn.LSTM`` and ``torch.nn.LSTMCell``.

Same constructor, parameter names, shapes, gate order (i, f, g, o),
initialisation, state_dict keys and forward contract as the torch modules,
plus ``backend=``. They do not subclass the torch modules: TorchDynamo
deliberately graph-breaks on ``nn.RNNBase`` instances, and these must compile
with ``fullgraph=True``.
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from fastlstm import _backends
from fastlstm.ops.lstm import lstm as lstm_op


def _check_config(input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size) -> None:
    # Same checks, order, exception types and messages as torch.nn.RNNBase.
    if not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1 or isinstance(dropout, bool):
        raise ValueError(
            "dropout should be a number in range [0, 1] representing the probability of an element being zeroed"
        )
    if dropout > 0 and num_layers == 1:
        warnings.warn(
            "dropout option adds dropout after all but last recurrent layer, so non-zero dropout expects "
            f"num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
            stacklevel=3,
        )
    if not isinstance(bias, bool):
        raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
    if not isinstance(batch_first, bool):
        raise TypeError(f"batch_first should be of type bool, got: {type(batch_first).__name__}")
    if not isinstance(input_size, int):
        raise TypeError(f"input_size should be of type int, got: {type(input_size).__name__}")
    if input_size <= 0:
        raise ValueError("input_size must be greater than zero")
    if not isinstance(hidden_size, int):
        raise TypeError(f"hidden_size should be of type int, got: {type(hidden_size).__name__}")
    if hidden_size <= 0:
        raise ValueError("hidden_size must be greater than zero")
    if num_layers <= 0:
        raise ValueError("num_layers must be greater than zero")
    if proj_size < 0:
        raise ValueError("proj_size should be a positive integer or zero to disable projections")
    if proj_size >= hidden_size:
        raise ValueError("proj_size has to be smaller than hidden_size")


class LSTM(nn.Module):
    """Multi-layer LSTM, a drop-in for :class:`torch.nn.LSTM` running fused kernels.

    Input ``(T, B, I)`` (``(B, T, I)`` with ``batch_first``), ``(T, I)`` unbatched,
    or a PackedSequence; returns ``output, (h_n, c_n)`` exactly like torch.
    ``backend`` overrides the process default (see :func:`fastlstm.set_backend`).
    With ``return_gates=True`` forward returns ``output, (h_n, c_n), gates``, a
    :class:`fastlstm.inspect.GateRecord` of the kernels' gate activations.

    >>> lstm = fastlstm.LSTM(32, 128, num_layers=2, bidirectional=True, batch_first=True)
    >>> out, (h_n, c_n) = lstm(torch.randn(4, 100, 32))
    """

    __constants__ = ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                     "bidirectional", "proj_size"]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        backend: str | None = None,
        return_gates: bool = False,
    ) -> None:
        super().__init__()
        _check_config(input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size)
        self.mode = "LSTM"
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.backend = None if backend is None else _backends._check_name(backend)
        # Gate inspection (fastlstm.inspect): forward also returns a GateRecord when
        # return_gates; active record_gates() blocks append their lists here.
        self.return_gates = bool(return_gates)
        self._gate_recorders: list[list] = []
        factory = {"device": device, "dtype": dtype}
        num_directions = 2 if bidirectional else 1
        real_hidden = proj_size if proj_size > 0 else hidden_size
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            for direction in range(num_directions):
                layer_input = input_size if layer == 0 else real_hidden * num_directions
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                shapes = {"weight_ih": (4 * hidden_size, layer_input), "weight_hh": (4 * hidden_size, real_hidden)}
                if bias:
                    shapes["bias_ih"] = (4 * hidden_size,)
                    shapes["bias_hh"] = (4 * hidden_size,)
                if proj_size > 0:
                    shapes["weight_hr"] = (proj_size, hidden_size)
                names = []
                for stem, shape in shapes.items():
                    setattr(self, stem + suffix, nn.Parameter(torch.empty(shape, **factory)))
                    names.append(stem + suffix)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    # -- torch.nn.LSTM compatibility -------------------------------------

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    @property
    def _flat_weights(self) -> list[Tensor]:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[Tensor]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """No-op, kept for torch.nn.LSTM compatibility (there is no cuDNN weight buffer)."""

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.proj_size != 0:
            s += ", proj_size={proj_size}"
        if self.num_layers != 1:
            s += ", num_layers={num_layers}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.batch_first is not False:
            s += ", batch_first={batch_first}"
        if self.dropout != 0:
            s += ", dropout={dropout}"
        if self.bidirectional is not False:
            s += ", bidirectional={bidirectional}"
        if self.backend is not None:
            s += ", backend={backend!r}"
        if self.return_gates:
            s += ", return_gates=True"
        return s.format(**self.__dict__)

    def _config(self) -> dict:
        return dict(
            input_size=self.input_size, hidden_size=self.hidden_size, num_layers=self.num_layers,
            bias=self.bias, batch_first=self.batch_first, dropout=self.dropout,
            bidirectional=self.bidirectional, proj_size=self.proj_size,
        )

    @classmethod
    def from_torch(cls, module: nn.LSTM, *, backend: str | None = None) -> "LSTM":
        """A fastlstm.LSTM with ``module``'s configuration, weights, device and dtype.

        >>> fast = fastlstm.LSTM.from_torch(torch.nn.LSTM(8, 16))
        """
        if not isinstance(module, nn.LSTM):
            raise TypeError(f"from_torch expects a torch.nn.LSTM, got {type(module).__name__}")
        ref = module.weight_ih_l0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the dropout warning was already given for `module`
            fast = cls(**_torch_config(module), device=ref.device, dtype=ref.dtype, backend=backend)
        fast.load_state_dict(module.state_dict(), strict=True)
        fast.train(module.training)
        return fast

    def to_torch(self) -> nn.LSTM:
        """A torch.nn.LSTM with this module's configuration and weights."""
        ref = self.weight_ih_l0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = nn.LSTM(**self._config(), device=ref.device, dtype=ref.dtype)
        module.load_state_dict(self.state_dict(), strict=True)
        module.train(self.training)
        return module

    # -- forward -----------------------------------------------------------

    def _expected_sizes(self, batch: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        n = self.num_layers * (2 if self.bidirectional else 1)
        real_hidden = self.proj_size if self.proj_size > 0 else self.hidden_size
        return (n, batch, real_hidden), (n, batch, self.hidden_size)

    def _check_input(self, data: Tensor, packed: bool) -> None:
        weight = self.weight_ih_l0
        if data.device != weight.device:
            raise RuntimeError(
                f"Input and parameter tensors are not at the same device, found input tensor at "
                f"{data.device} and parameter tensor at {weight.device}"
            )
        if data.dtype != weight.dtype and not torch._C._is_any_autocast_enabled():
            raise ValueError(
                f"RNN input dtype ({data.dtype}) does not match weight dtype ({weight.dtype}). "
                f"Convert input: input.to({weight.dtype}), or convert model: model.to({data.dtype})"
            )
        expected_dim = 2 if packed else 3
        if data.dim() != expected_dim:
            raise RuntimeError(f"input must have {expected_dim} dimensions, got {data.dim()}")
        if data.size(-1) != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {data.size(-1)}"
            )

    def _check_hidden(self, hx, data: Tensor, batch: int) -> tuple[Tensor, Tensor]:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise RuntimeError("lstm expects two hidden states: hx must be a tuple (h_0, c_0)")
        h0, c0 = hx
        for name, t in (("h_0", h0), ("c_0", c0)):
            if not isinstance(t, Tensor):
                raise TypeError(f"hx: {name} must be a Tensor, got {type(t).__name__}")
            if t.device != data.device:
                raise RuntimeError(
                    f"Input and hidden tensors are not at the same device, found input tensor at "
                    f"{data.device} and hidden tensor ({name}) at {t.device}"
                )
            if t.dtype != data.dtype and not torch.is_autocast_enabled(data.device.type):
                raise RuntimeError(f"hx: {name} dtype ({t.dtype}) does not match input dtype ({data.dtype})")
        h_size, c_size = self._expected_sizes(batch)
        if tuple(h0.shape) != h_size:
            raise RuntimeError(f"Expected hidden[0] size {h_size}, got {list(h0.shape)}")
        if tuple(c0.shape) != c_size:
            raise RuntimeError(f"Expected hidden[1] size {c_size}, got {list(c0.shape)}")
        return h0, c0

    def _run(self, x: Tensor, hx, lengths: Tensor | None):
        if x.shape[0] == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        if torch.onnx.is_in_onnx_export() and lengths is None:
            return (*self._torch_kernel(x, hx), None)
        raw = [] if self.return_gates or self._gate_recorders else None
        out, h_n, c_n = lstm_op(
            x, hx, self._flat_weights,
            num_layers=self.num_layers, bidirectional=self.bidirectional, has_bias=self.bias,
            proj_size=self.proj_size, dropout=self.dropout, training=self.training,
            lengths=lengths, backend=self.backend, record=raw,
        )
        gates = None
        if raw is not None:
            from fastlstm.inspect import GateRecord

            gates = GateRecord.from_kernels(raw, lengths, self.hidden_size)
            for recorder in self._gate_recorders:
                recorder.append(gates)
        return out, h_n, c_n, gates

    def _torch_kernel(self, x: Tensor, hx) -> tuple[Tensor, Tensor, Tensor]:
        """torch's own LSTM on time-major x: what torch.onnx exports (both
        exporters lower it to ONNX's standard LSTM operator)."""
        if hx is None:
            rows, batch = self.num_layers * (2 if self.bidirectional else 1), x.shape[1]
            out_size = self.proj_size or self.hidden_size
            hx = (x.new_zeros(rows, batch, out_size), x.new_zeros(rows, batch, self.hidden_size))
        out, h_n, c_n = torch._VF.lstm(x, tuple(hx), self._flat_weights, self.bias, self.num_layers,
                                       self.dropout, self.training, self.bidirectional, False)
        return out, h_n, c_n

    def forward(self, input, hx: tuple[Tensor, Tensor] | None = None):
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)
        if not isinstance(input, Tensor):
            raise TypeError(f"LSTM: input must be a Tensor or PackedSequence, got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
        batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if not batched:
            input = input.unsqueeze(batch_dim)
            if hx is not None:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise RuntimeError("lstm expects two hidden states: hx must be a tuple (h_0, c_0)")
                if hx[0].dim() != 2 or hx[1].dim() != 2:
                    raise RuntimeError(
                        "For unbatched 2-D input, hx and cx should also be 2-D but got "
                        f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                    )
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        elif hx is not None and isinstance(hx, (tuple, list)) and len(hx) == 2:
            if hx[0].dim() != 3 or hx[1].dim() != 3:
                raise RuntimeError(
                    "For batched 3-D input, hx and cx should also be 3-D but got "
                    f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                )
        self._check_input(input, packed=False)
        batch = input.size(batch_dim)
        if hx is not None:
            hx = self._check_hidden(hx, input, batch)
        x = input.transpose(0, 1) if self.batch_first else input
        out, h_n, c_n, gates = self._run(x, hx, None)
        if self.batch_first:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(batch_dim)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        if self.return_gates:
            return out, (h_n, c_n), gates
        return out, (h_n, c_n)

    def _forward_packed(self, packed: PackedSequence, hx):
        data, batch_sizes, sorted_indices, _ = packed
        self._check_input(data, packed=True)
        if int(batch_sizes.sum()) != data.shape[0]:
            raise RuntimeError(
                f"PackedSequence is inconsistent: batch_sizes sum to {int(batch_sizes.sum())} "
                f"but data has {data.shape[0]} rows"
            )
        batch = int(batch_sizes[0])
        if hx is not None:
            hx = self._check_hidden(hx, data, batch)  # hx is in the caller's (unsorted) order
        # Padded, in the caller's batch order, with per-sequence lengths.
        x, lengths = pad_packed_sequence(packed)
        out, h_n, c_n, gates = self._run(x, hx, lengths.to(torch.int64))
        if sorted_indices is not None:
            out = out.index_select(1, sorted_indices)
            lengths = lengths.index_select(0, sorted_indices.cpu())
        out_data = pack_padded_sequence(out, lengths, enforce_sorted=True).data
        out = PackedSequence(out_data, batch_sizes, sorted_indices, packed.unsorted_indices)
        if self.return_gates:
            return out, (h_n, c_n), gates
        return out, (h_n, c_n)


def _torch_config(module: nn.LSTM) -> dict:
    return dict(
        input_size=module.input_size, hidden_size=module.hidden_size, num_layers=module.num_layers,
        bias=module.bias, batch_first=module.batch_first, dropout=module.dropout,
        bidirectional=module.bidirectional, proj_size=module.proj_size,
    )


class LSTMCell(nn.Module):
    """A single LSTM step, a drop-in for :class:`torch.nn.LSTMCell` (one fused kernel call).

    >>> cell = fastlstm.LSTMCell(10, 20)
    >>> h, c = cell(torch.randn(3, 10))
    """

    __constants__ = ["input_size", "hidden_size", "bias"]

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None,
                 *, backend: str | None = None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.backend = None if backend is None else _backends._check_name(backend)
        self.weight_ih = nn.Parameter(torch.empty((4 * hidden_size, input_size), **factory))
        self.weight_hh = nn.Parameter(torch.empty((4 * hidden_size, hidden_size), **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if "bias" in self.__dict__ and self.bias is not True:
            s += ", bias={bias}"
        return s.format(**self.__dict__)

    @classmethod
    def from_torch(cls, module: nn.LSTMCell, *, backend: str | None = None) -> "LSTMCell":
        if not isinstance(module, nn.LSTMCell):
            raise TypeError(f"from_torch expects a torch.nn.LSTMCell, got {type(module).__name__}")
        w = module.weight_ih
        fast = cls(module.input_size, module.hidden_size, module.bias, device=w.device, dtype=w.dtype,
                   backend=backend)
        fast.load_state_dict(module.state_dict(), strict=True)
        return fast

    def to_torch(self) -> nn.LSTMCell:
        w = self.weight_ih
        module = nn.LSTMCell(self.input_size, self.hidden_size, self.bias, device=w.device, dtype=w.dtype)
        module.load_state_dict(self.state_dict(), strict=True)
        return module

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        if isinstance(input, Tensor) and torch.is_autocast_enabled(input.device.type):
            # Autocast policy (docs/reliability.md): like torch.nn.LSTMCell, the
            # cell computes and returns in its weights' dtype under autocast.
            dtype = self.weight_ih.dtype
            if isinstance(hx, (tuple, list)):
                hx = tuple(t.to(dtype) if isinstance(t, Tensor) else t for t in hx)
            with torch.autocast(input.device.type, enabled=False):
                return self.forward(input.to(dtype), hx)
        if input.dim() not in (1, 2):
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2 or not all(isinstance(t, Tensor) for t in hx):
                raise TypeError(f"LSTMCell: hx must be a tuple of two Tensors (h_0, c_0), got {type(hx).__name__}")
            for idx, value in enumerate(hx):
                if value.dim() not in (1, 2):
                    raise ValueError(f"LSTMCell: Expected hx[{idx}] to be 1D or 2D, got {value.dim()}D instead")
        batched = input.dim() == 2
        if not batched:
            input = input.unsqueeze(0)
        if input.size(1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} expected {self.input_size}")
        if input.device != self.weight_ih.device:
            raise RuntimeError(
                f"Input and parameter tensors are not at the same device, found input tensor at "
                f"{input.device} and parameter tensor at {self.weight_ih.device}"
            )
        if input.dtype != self.weight_ih.dtype and not torch.is_autocast_enabled(input.device.type):
            raise RuntimeError(
                f"LSTMCell: input dtype ({input.dtype}) does not match weight dtype ({self.weight_ih.dtype})"
            )
        B = input.size(0)
        if hx is None:
            zeros = input.new_zeros(B, self.hidden_size)
            h0, c0 = zeros, zeros
        else:
            h0, c0 = (hx[0].unsqueeze(0), hx[1].unsqueeze(0)) if not batched else hx
            for idx, t in enumerate((h0, c0)):
                if t.size(0) != B:
                    raise RuntimeError(f"Input batch size {B} doesn't match hidden{idx} batch size {t.size(0)}")
                if t.size(1) != self.hidden_size:
                    raise RuntimeError(
                        f"hidden{idx} has inconsistent hidden_size: got {t.size(1)}, expected {self.hidden_size}"
                    )
                if t.device != input.device:
                    raise RuntimeError(
                        f"Input and hidden tensors are not at the same device, found input tensor at "
                        f"{input.device} and hidden tensor (hx[{idx}]) at {t.device}"
                    )
                if t.dtype != input.dtype and not torch.is_autocast_enabled(input.device.type):
                    raise RuntimeError(f"hx[{idx}] dtype ({t.dtype}) does not match input dtype ({input.dtype})")
        weights = [self.weight_ih, self.weight_hh]
        if self.bias:
            weights += [self.bias_ih, self.bias_hh]
        if torch.onnx.is_in_onnx_export():
            # torch's own cell, which both torch.onnx exporters know.
            h, c = torch._VF.lstm_cell(input, (h0, c0), *weights)
        else:
            _, h, c = lstm_op(
                input.unsqueeze(0), (h0.unsqueeze(0), c0.unsqueeze(0)), weights,
                num_layers=1, has_bias=self.bias, backend=self.backend,
            )
            h, c = h[0], c[0]
        if not batched:
            h, c = h.squeeze(0), c.squeeze(0)
        return h, c
