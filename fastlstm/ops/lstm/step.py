"""``fastlstm::lstm_step``: one time step of one LSTM layer (decoding, streaming).

The whole-sequence ops are haste's ``Run``; this is its ``Iterate``: the same
kernel with T = 1, on the same prepared weights. :func:`step_into` is the
kernel call behind it for callers that keep their own state buffers (the
chat decoder), holding a :class:`~fastlstm.ops.lstm.prepared.PreparedTensor`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastlstm import _ext
from fastlstm import reference as _reference
from fastlstm.ops._alloc import empty
from fastlstm.ops.lstm import _checks
from fastlstm.ops.lstm.double_backward import grads_of, list_flags
from fastlstm.ops.lstm.prepared import PreparedTensor, prepared_tensor, prepared_weights
from fastlstm.ops.lstm.recurrence import project


def recurrent_weights(w_hh: Tensor) -> PreparedTensor:
    """The prepared (packed) form of one direction's w_hh (4H, H) for :func:`step_into`."""
    H = w_hh.shape[1]
    return prepared_tensor(w_hh.unsqueeze(0), 1, H, H)


def step_into(gx: Tensor, w_hh: Tensor, packed: Tensor | None, h: Tensor, c: Tensor,
              y: Tensor, h_out: Tensor, c_out: Tensor) -> None:
    """One step: gx (B, 4H) input gates incl. biases, w_hh (4H, H) contiguous,
    h, c (B, H) -> y, h_out, c_out (B, H), all contiguous fp32 and distinct
    from the inputs. ``packed``: from :func:`recurrent_weights` (or None)."""
    B, G = gx.shape
    H = G // 4
    named = {"w_hh": w_hh, "h": h, "c": c, "y": y, "h_out": h_out, "c_out": c_out}
    _checks.check_same(named, gx, "gx")
    _checks.check_shapes({"w_hh": (G, H), "h": (B, H), "c": (B, H), "y": (B, H), "h_out": (B, H),
                          "c_out": (B, H)}, named)
    buf = _ext.buf
    _ext._C.lstm_recurrence_fwd(
        _ext.dtype_name(gx.dtype), buf(gx), buf(w_hh), buf(None), buf(h), buf(c), buf(None),
        buf(y), buf(h_out), buf(c_out), buf(None), buf(None), 1, B, 1, H, H, torch.get_num_threads(), buf(packed),
    )


def _check_step_args(x, weights, h, c, has_bias) -> None:
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"x must be (batch, input_size), got {getattr(x, 'shape', type(x))}")
    _checks.check_layer_args(x.unsqueeze(0), weights, h.unsqueeze(0) if isinstance(h, Tensor) and h.dim() == 2
                             else h, c.unsqueeze(0) if isinstance(c, Tensor) and c.dim() == 2 else c, None, has_bias)
    if len(weights) != (4 if has_bias else 2):
        raise ValueError("lstm_step runs one direction: weights must be w_ih, w_hh[, b_ih, b_hh]")


@torch.library.custom_op("fastlstm::lstm_step", mutates_args=(), device_types="cpu")
def lstm_step(x: Tensor, weights: list[Tensor], h: Tensor, c: Tensor, has_bias: bool) -> tuple[Tensor, Tensor]:
    """One LSTM time step: x (B, I), weights ``w_ih, w_hh[, b_ih, b_hh]`` (one
    layer, one direction, as nn.LSTMCell holds them), h, c (B, H) -> (h', c').

    >>> cell = torch.nn.LSTMCell(8, 16)
    >>> h, c = lstm_step(torch.randn(2, 8), [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh],
    ...                  torch.zeros(2, 16), torch.zeros(2, 16), True)
    """
    _check_step_args(x, weights, h, c, has_bias)
    prep = prepared_weights(weights, 1, 1, has_bias, 0)
    w_ih, bias, w_hh, _ = prep.layer(weights, 0)
    packed_ih, packed_hh = prep.packed(weights, 0)
    B, H = h.shape
    gx = project(x.contiguous(), w_ih, bias, 1, None, packed_ih)
    y, h_out, c_out = empty(B, H, like=x), empty(B, H, like=x), empty(B, H, like=x)
    step_into(gx, w_hh[0], packed_hh, h.contiguous(), c.contiguous(), y, h_out, c_out)
    return h_out, c_out


@lstm_step.register_fake
def _(x, weights, h, c, has_bias):
    _check_step_args(x, weights, h, c, has_bias)
    return h.new_empty(h.shape), c.new_empty(c.shape)


def _step_setup_context(ctx, inputs, output):
    x, weights, h, c, has_bias = inputs
    ctx.save_for_backward(x, h, c, *weights)
    ctx.has_bias = has_bias


def _step_backward(ctx, dh, dc):
    # One step's backward is a few small GEMMs: recomputed through the reference,
    # differentiable, so gradients of gradients work too.
    x, h, c, *weights = ctx.saved_tensors
    needs = ctx.needs_input_grad
    flags = (needs[0], *list_flags(needs[1], len(weights)), needs[2], needs[3])
    create = torch.is_grad_enabled()
    inputs = [x, *weights, h, c]
    if not create:
        inputs = [t.detach().requires_grad_(f) for t, f in zip(inputs, flags)]
    with torch.enable_grad():
        x_, *w, h_, c_ = inputs
        biases = (w[2], w[3]) if ctx.has_bias else (None, None)
        outputs = _reference.lstm_cell(x_, h_, c_, w[0], w[1], *biases)
    got = grads_of(outputs, (dh, dc), inputs, flags, create)
    return got[0], got[1:-2], got[-2], got[-1], None


lstm_step.register_autograd(_step_backward, setup_context=_step_setup_context)
