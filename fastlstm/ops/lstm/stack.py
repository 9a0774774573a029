""":func:`lstm`, the stacked, bidirectional, projected LSTM, and :func:`plan`, the
pure function that chooses how a call runs."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from fastlstm import _backends, _ext
from fastlstm import reference as _reference
from fastlstm.ops import dropout as _dropout
from fastlstm.ops._alloc import empty
from fastlstm.ops.lstm import _checks, grads
from fastlstm.ops.lstm.prepared import PreparedWeights, layer_parts, prepared_weights, workspace
from fastlstm.ops.lstm.recurrence import project, recurrence
from fastlstm.ops.lstm.train_stack import LstmStack


class Plan(NamedTuple):
    """How one :func:`lstm` call runs.

    ``path``: "stack" (every layer in one kernel call), "direct" (the kernels
    per layer, no dispatcher), "stack_fn" (eager training: one autograd node for
    every layer, :class:`~fastlstm.ops.lstm.train_stack.LstmStack`), "stack_op"
    (the same through the registered ``fastlstm::lstm_stack``, which a compiler
    records), "layer_op" (training with dropout between layers: one
    ``fastlstm::lstm_layer`` node per layer) or "ops" (per layer through the registered projection and
    recurrence ops, or the backend's). ``weights``: "prepared" (the kernels'
    forms from the prepared weights) or "differentiable" (built with autograd
    ops, so gradients reach the parameters or a tracer records them).
    ``save``: the kernels write the gate activations (backward or recording).
    ``tracing`` (torch.jit.trace) and ``compiling`` (torch.compile) route through
    the registered ops, which a tracer records (a direct kernel call it would not see).
    """

    path: str
    weights: str
    save: bool


def plan(*, backend: str, dtype: torch.dtype, state_dtype: torch.dtype, proj_size: int, needs_grad: bool,
         grads_to_weights: bool, record: bool, eager: bool, tracing: bool, dropout_between: bool,
         empty_input: bool, compiling: bool = False) -> Plan:
    """The execution path of an :func:`lstm` call (pure: no tensors, no state).

    >>> plan(backend="cpu", dtype=torch.float32, state_dtype=torch.float32, proj_size=0, needs_grad=False,
    ...      grads_to_weights=False, record=False, eager=True, tracing=False, dropout_between=False,
    ...      empty_input=False).path
    'stack'
    """
    save = record or needs_grad
    cpu_eager = backend == "cpu" and eager and not tracing
    if cpu_eager and not save:
        fp32 = dtype == state_dtype == torch.float32
        stack = proj_size == 0 and fp32 and not dropout_between and not empty_input
        return Plan("stack" if stack else "direct", "prepared", False)
    if backend == "cpu" and save and proj_size == 0 and not record and not tracing:
        if not dropout_between:
            return Plan("stack_fn" if cpu_eager else "stack_op", "prepared", True)
        if grads_to_weights:
            return Plan("layer_op", "prepared", True)
    # A tracer or compiler must record how the kernels' weights derive from the parameters.
    return Plan("ops", "differentiable" if grads_to_weights or tracing or compiling else "prepared", save)


def _recurrence_fn(backend: str):
    """Recurrence implementation per backend (the op for compiled backends)."""
    if backend == "reference":
        return lambda gx, w_hh, w_hr, h0, c0, lengths, save: _reference.lstm_recurrence(
            gx, w_hh, w_hr, h0, c0, lengths
        )
    if backend in ("cpu", "cuda"):
        return torch.ops.fastlstm.lstm_recurrence
    if backend == "triton":
        from fastlstm.triton import lstm as triton_lstm

        return triton_lstm.lstm_recurrence
    raise AssertionError(backend)


def _stack_inference(x, h0_all, c0_all, lengths, prep: PreparedWeights, stack_plan, D, H):
    """Inference through every layer in one kernel call (fp32, no projection).
    ``prep`` owns every buffer in ``stack_plan`` and is held until the call returns."""
    T, B, I = x.shape
    L = len(stack_plan)
    x = x.contiguous()
    h0_all, c0_all = h0_all.contiguous(), c0_all.contiguous()
    lengths = lengths.contiguous() if lengths is not None else None
    y = empty(T, B, D * H, like=x)
    hn = empty(L * D, B, H, like=x)
    cn = empty(L * D, B, H, like=x)
    threads = torch.get_num_threads()
    # The wavefront projects into chunk buffers of its own: no whole-sequence gx.
    n_gx = 0 if _ext._C.lstm_stack_uses_wavefront(T, B, D, H, L, threads) else T * B * D * 4 * H
    ws = workspace(n_gx + (T * B * D * H if L > 1 else 0), x)
    gx_ws = ws[:n_gx] if n_gx else None
    mid_ws = ws[n_gx:] if L > 1 else None
    buf = _ext.buf
    _ext._C.lstm_stack_fwd(
        buf(x), buf(h0_all), buf(c0_all), buf(lengths), stack_plan, buf(y), buf(hn), buf(cn),
        buf(gx_ws), buf(mid_ws), T, B, I, D, H, threads,
    )
    del prep  # (held to here: it owns the plan's buffers)
    return y, hn, cn


def lstm(
    x: Tensor,
    hx: tuple[Tensor, Tensor] | None,
    weights: list[Tensor],
    *,
    num_layers: int,
    bidirectional: bool = False,
    has_bias: bool = True,
    proj_size: int = 0,
    dropout: float = 0.0,
    training: bool = False,
    lengths: Tensor | None = None,
    backend: str | None = None,
    record: list | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Stacked, optionally bidirectional and projected LSTM (time-major).

    x: (T, B, I); hx: (h0 (L*D, B, P), c0 (L*D, B, H)) or None; ``weights`` in
    nn.LSTM's ``_flat_weights`` order; lengths: (B,) int64 CPU or None (padded
    input: outputs past each length are zero, states are each sequence's last).
    Returns output (T, B, D*P), h_n (L*D, B, P), c_n (L*D, B, H).
    When ``record`` is a list, the kernels' gate activations (T, B, D, 4H) and
    cell states (T, B, D, H) of every layer are appended to it as
    ``(layer, gates, cells)`` (for inspection; costs nothing otherwise).

    >>> m = torch.nn.LSTM(8, 16, num_layers=2)
    >>> out, h_n, c_n = lstm(torch.randn(5, 3, 8), None, list(m._flat_weights), num_layers=2)
    """
    if isinstance(x, Tensor) and weights and torch.is_autocast_enabled(x.device.type):
        return _lstm_autocast(x, hx, weights, num_layers=num_layers, bidirectional=bidirectional,
                              has_bias=has_bias, proj_size=proj_size, dropout=dropout, training=training,
                              lengths=lengths, backend=backend, record=record)
    D = 2 if bidirectional else 1
    per_dir = 2 + (2 if has_bias else 0) + (1 if proj_size > 0 else 0)
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be an int >= 1, got {num_layers!r}")
    if not isinstance(weights, (list, tuple)) or len(weights) < 2 or not isinstance(weights[1], Tensor):
        raise ValueError(f"weights must hold {num_layers * D * per_dir} tensors for this configuration")
    H = weights[1].shape[0] // 4
    P = proj_size if proj_size > 0 else H
    _checks.check_lstm_args(x, hx, weights, num_layers=num_layers, D=D, per_dir=per_dir, H=H, P=P, lengths=lengths)
    backend = _backends.resolve(backend, x.device, x.dtype, proj=proj_size > 0)
    T, B = x.shape[0], x.shape[1]
    if hx is None:
        h0_all = x.new_zeros(num_layers * D, B, P)
        c0_all = x.new_zeros(num_layers * D, B, H)
    else:
        h0_all, c0_all = hx
    grad = torch.is_grad_enabled()
    grads_to_weights = grad and any(w.requires_grad for w in weights)
    chosen = plan(
        backend=backend, dtype=x.dtype, state_dtype=torch.promote_types(h0_all.dtype, c0_all.dtype),
        proj_size=proj_size, needs_grad=grad and (x.requires_grad or grads_to_weights or h0_all.requires_grad
                                                  or c0_all.requires_grad),
        grads_to_weights=grads_to_weights, record=record is not None, eager=grads.plain_eager(x),
        tracing=torch.jit.is_tracing(), dropout_between=training and dropout > 0 and num_layers > 1,
        empty_input=T * B == 0, compiling=torch.compiler.is_compiling(),
    )
    prep = None
    if chosen.path == "stack_fn":
        return LstmStack.apply(x, h0_all, c0_all, lengths, num_layers, bidirectional, has_bias, *weights)
    if chosen.path == "stack_op":
        return _stack_train(x, h0_all, c0_all, weights, lengths, num_layers, bidirectional, has_bias)
    if chosen.weights == "prepared" and backend == "cpu" and chosen.path != "layer_op":
        prep = prepared_weights(weights, num_layers, D, has_bias, proj_size)
    if chosen.path == "stack":
        stack_plan = prep.stack_plan(weights)
        if stack_plan is not None:
            return _stack_inference(x, h0_all, c0_all, lengths, prep, stack_plan, D, H)
        chosen = chosen._replace(path="direct")
    recurrence_op = _recurrence_fn(backend)
    layer_input = x
    h_n, c_n = [], []
    for layer in range(num_layers):
        h0 = h0_all[layer * D : (layer + 1) * D]
        c0 = c0_all[layer * D : (layer + 1) * D]
        if chosen.path == "layer_op":
            own = weights[layer * D * per_dir : (layer + 1) * D * per_dir]
            y, hn, cn, _, _ = torch.ops.fastlstm.lstm_layer(layer_input, own, h0, c0, lengths, has_bias)
        else:
            if prep is not None:
                w_ih, bias, w_hh, w_hr = prep.layer(weights, layer)
            else:
                dirs = [weights[(layer * D + d) * per_dir : (layer * D + d + 1) * per_dir] for d in range(D)]
                w_ih, bias, w_hh, w_hr = layer_parts(dirs, has_bias, proj_size > 0)
            flat_in = layer_input.reshape(T * B, layer_input.shape[-1])
            if chosen.path == "direct":
                packed_ih, packed_hh = prep.packed(weights, layer)
                ws = workspace(T * B * D * 4 * H, x).view(T * B, D * 4 * H) if x.dtype == torch.float32 else None
                gx = project(flat_in, w_ih, bias, D, ws, packed_ih).view(T, B, D, 4 * H)
                _checks.check_recurrence_args(gx, w_hh, w_hr, h0, c0, lengths)
                y, hn, cn, gates, cells = recurrence(gx, w_hh, w_hr, h0, c0, lengths, False, packed_hh)
            else:
                if backend == "cpu":
                    gx = torch.ops.fastlstm.lstm_input_projection(flat_in, w_ih, bias, D)
                elif bias is not None:
                    gx = torch.addmm(bias, flat_in, w_ih.t())
                else:
                    gx = flat_in @ w_ih.t()
                gx = gx.view(T, B, D, 4 * H)
                y, hn, cn, gates, cells = recurrence_op(gx, w_hh, w_hr, h0, c0, lengths, chosen.save)
            if record is not None:
                record.append((layer, gates.detach(), cells.detach()))
        h_n.append(hn)
        c_n.append(cn)
        layer_input = y.reshape(T, B, D * P)
        if dropout > 0 and training and layer < num_layers - 1:
            if backend == "cpu":
                layer_input = _dropout.dropout(layer_input, dropout)
            else:
                layer_input = F.dropout(layer_input, p=dropout, training=True)
    return layer_input, torch.cat(h_n), torch.cat(c_n)


def _stack_train(x, h0_all, c0_all, weights, lengths, num_layers, bidirectional, has_bias):
    y, h_n, c_n, _ = torch.ops.fastlstm.lstm_stack(x, list(weights), h0_all, c0_all, lengths, num_layers,
                                                   bidirectional, has_bias)
    return y, h_n, c_n


def _lstm_autocast(x, hx, weights, **kwargs):
    """Autocast policy (docs/reliability.md): the LSTM computes in its weights'
    dtype (fp32 kernels, not a bf16 reference loop) with autocast off, and its
    outputs come back in the autocast dtype, the dtype torch.nn.LSTM returns there."""
    device = x.device.type
    low = torch.get_autocast_dtype(device)
    dtype = weights[0].dtype
    with torch.autocast(device, enabled=False):
        hx = None if hx is None else tuple(t.to(dtype) for t in hx)
        out, h_n, c_n = lstm(x.to(dtype), hx, weights, **kwargs)
    return out.to(low), h_n.to(low), c_n.to(low)
