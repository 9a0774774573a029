"""``fastlstm::lstm_stack``: a whole stacked (optionally bidirectional) LSTM for
training, one autograd node for every layer.

Per layer, ``fastlstm::lstm_layer`` costs a dispatcher call, an autograd node
and its Python glue in forward and again in backward; at small sizes (B = 1,
T = 24, H = 64) that glue is most of a training step. This op runs every layer
in one call on the prepared weights and does the whole backward in one node:
per layer, top down, the fused reverse recurrence, then ``dx`` (the layer
below's output gradient) and the weight gradients (:func:`grads.weight_grads`).
No projection, no dropout between layers (those take the per-layer ops).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastlstm.ops.lstm import _checks, grads
from fastlstm.ops.lstm.prepared import prepared_weights, workspace
from fastlstm.ops.lstm.recurrence import project, recurrence, reverse_recurrence


def _per_layer(weights, num_layers: int, D: int, has_bias: bool) -> int:
    n = (4 if has_bias else 2) * D
    if len(weights) != n * num_layers:
        raise ValueError(f"weights must hold {n * num_layers} tensors for this configuration, got {len(weights)}")
    return n


def _check(x, weights, h0, c0, lengths, num_layers, bidirectional, has_bias):
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    D = 2 if bidirectional else 1
    n = _per_layer(weights, num_layers, D, has_bias)
    if h0.dim() != 3 or c0.dim() != 3 or h0.shape[0] != num_layers * D or c0.shape[0] != num_layers * D:
        raise ValueError(f"h0 and c0 must be (layers*directions={num_layers * D}, B, hidden), "
                         f"got {tuple(h0.shape)} and {tuple(c0.shape)}")
    for layer in range(num_layers):
        # (A zero-stride stand-in for the layer below's output: no allocation.)
        layer_in = x if layer == 0 else x.as_strided((x.shape[0], x.shape[1], D * h0.shape[-1]), (0, 0, 0))
        _checks.check_layer_args(layer_in, list(weights[layer * n : (layer + 1) * n]),
                                 h0[layer * D : (layer + 1) * D], c0[layer * D : (layer + 1) * D], lengths, has_bias)
    return D, n


@torch.library.custom_op("fastlstm::lstm_stack", mutates_args=(), device_types="cpu")
def lstm_stack(
    x: Tensor, weights: list[Tensor], h0: Tensor, c0: Tensor, lengths: Tensor | None,
    num_layers: int, bidirectional: bool, has_bias: bool,
) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    """Stacked LSTM without projection: x (T, B, I), ``weights`` in nn.LSTM's
    ``_flat_weights`` order, h0, c0 (L*D, B, H). Returns y (T, B, D*H), h_n,
    c_n (L*D, B, H) and what backward reads: every layer's gate activations
    (T, B, D, 4H) and cell states (T, B, D, H), then the outputs (T, B, D, H) of
    every layer but the last."""
    D, n = _check(x, weights, h0, c0, lengths, num_layers, bidirectional, has_bias)
    prep = prepared_weights(weights, num_layers, D, has_bias, 0)
    T, B = x.shape[0], x.shape[1]
    H = h0.shape[-1]
    hn = x.new_empty(num_layers * D, B, H)
    cn = x.new_empty(num_layers * D, B, H)
    saved: list[Tensor] = []
    outputs: list[Tensor] = []
    layer_in = x
    for layer in range(num_layers):
        w_ih, bias, w_hh, _ = prep.layer(weights, layer)
        packed_ih, packed_hh = prep.packed(weights, layer)
        out = workspace(T * B * D * 4 * H, x).view(T * B, D * 4 * H) if x.dtype == torch.float32 else None
        gx = project(layer_in.reshape(T * B, layer_in.shape[-1]), w_ih, bias, D, out, packed_ih).view(T, B, D, 4 * H)
        states = slice(layer * D, (layer + 1) * D)
        y, hn[states], cn[states], gates, cells = recurrence(gx, w_hh, None, h0[states], c0[states], lengths, True,
                                                            packed_hh)
        saved += [gates, cells]
        outputs.append(y)
        layer_in = y.view(T, B, D * H)
    return layer_in, hn, cn, saved + outputs[:-1]


@lstm_stack.register_fake
def _(x, weights, h0, c0, lengths, num_layers, bidirectional, has_bias):
    D, _ = _check(x, weights, h0, c0, lengths, num_layers, bidirectional, has_bias)
    T, B = x.shape[0], x.shape[1]
    H = h0.shape[-1]
    saved = []
    for _ in range(num_layers):
        saved += [x.new_empty(T, B, D, 4 * H), x.new_empty(T, B, D, H)]
    saved += [x.new_empty(T, B, D, H) for _ in range(num_layers - 1)]
    return x.new_empty(T, B, D * H), x.new_empty(num_layers * D, B, H), x.new_empty(num_layers * D, B, H), saved


def _setup_context(ctx, inputs, output):
    x, weights, h0, c0, lengths, num_layers, bidirectional, has_bias = inputs
    saved = output[3]
    ctx.save_for_backward(x, h0, c0, lengths, output[0], *saved, *weights)
    ctx.config = (num_layers, 2 if bidirectional else 1, has_bias, len(saved))
    ctx.mark_non_differentiable(*saved)
    ctx.set_materialize_grads(False)


def _backward(ctx, dy, dhn, dcn, _dsaved):
    num_layers, D, has_bias, n_saved = ctx.config
    x, h0, c0, lengths, y_top, *rest = ctx.saved_tensors
    saved, weights = rest[:n_saved], rest[n_saved:]
    if torch.is_grad_enabled():  # create_graph: a differentiable backward, through the reference
        from fastlstm.ops.lstm.double_backward import stack_grads

        return stack_grads(ctx, x, weights, h0, c0, lengths, dy, dhn, dcn)
    prep = prepared_weights(weights, num_layers, D, has_bias, 0)
    eager = grads.plain_eager(x)
    n = (4 if has_bias else 2) * D
    T, B = x.shape[0], x.shape[1]
    H = h0.shape[-1]
    need_x, need_w, need_h, need_c = ctx.needs_input_grad[:4]
    need_w = any(need_w) if isinstance(need_w, (list, tuple)) else need_w
    dweights: list = [None] * len(weights)
    dh0 = torch.empty_like(h0) if need_h else None
    dc0 = torch.empty_like(c0) if need_c else None
    dx = None
    d_out = dy.view(T, B, D, H) if dy is not None else None
    for layer in range(num_layers - 1, -1, -1):
        gates, cells = saved[2 * layer : 2 * layer + 2]
        y = y_top.view(T, B, D, H) if layer == num_layers - 1 else saved[2 * num_layers + layer]
        states = slice(layer * D, (layer + 1) * D)
        w_ih, _, w_hh, _ = prep.layer(weights, layer)
        packed_hh = prep.packed(weights, layer)[1] if eager else None
        dgates, dh0_l, dc0_l, _ = reverse_recurrence(
            d_out, None if dhn is None else dhn[states], None if dcn is None else dcn[states], w_hh, None,
            h0[states], c0[states], y, gates, cells, lengths, reuse=eager, packed=packed_hh)
        if need_h:
            dh0[states] = dh0_l
        if need_c:
            dc0[states] = dc0_l
        layer_in = x if layer == 0 else saved[2 * num_layers + layer - 1].view(T, B, D * H)
        if need_w:
            dw_ih, dw_hh, db = grads.weight_grads(dgates, y, h0[states], lengths, layer_in, has_bias)
            G = 4 * H
            base = layer * n
            per = n // D
            for d in range(D):
                i = base + d * per
                dweights[i], dweights[i + 1] = dw_ih[d * G : (d + 1) * G], dw_hh[d]
                if has_bias:
                    # b_ih and b_hh get equal gradients, in separate tensors (a
                    # shared one would alias their .grad).
                    dweights[i + 2], dweights[i + 3] = db[d * G : (d + 1) * G], db[d * G : (d + 1) * G].clone()
        if layer > 0 or need_x:
            d_in = grads.input_grad(dgates.reshape(T * B, D * 4 * H), w_ih).view(T, B, -1)
            if layer == 0:
                dx = d_in
            else:
                d_out = d_in.view(T, B, D, H)
    return dx, dweights, dh0, dc0, None, None, None, None


lstm_stack.register_autograd(_backward, setup_context=_setup_context)
