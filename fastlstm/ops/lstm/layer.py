"""``fastlstm::lstm_layer``: one whole layer (projection + recurrence) for training.

Training through lstm_input_projection + lstm_recurrence puts a dozen small
autograd nodes per layer around the kernels (weight concatenation, bias sum,
the previous-hidden stack, views); at batch 1 their glue costs as much as the
kernels. This op takes the layer's parameters as nn.LSTM holds them, reads
their kernel forms from the prepared weights (one build per version, shared
by forward and backward), and does the whole backward in one node.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastlstm.ops.lstm import _checks, grads
from fastlstm.ops.lstm.prepared import prepared_weights, workspace
from fastlstm.ops.lstm.recurrence import project, recurrence, reverse_recurrence


def _prepare(weights: list[Tensor], has_bias: bool):
    D = len(weights) // (4 if has_bias else 2)
    return prepared_weights(weights, 1, D, has_bias, 0)


@torch.library.custom_op("fastlstm::lstm_layer", mutates_args=(), device_types="cpu")
def lstm_layer(
    x: Tensor, weights: list[Tensor], h0: Tensor, c0: Tensor, lengths: Tensor | None, has_bias: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One LSTM layer, one or both directions, without projection (proj_size = 0).

    x: (T, B, I); weights: per direction ``w_ih, w_hh[, b_ih, b_hh]`` as in
    nn.LSTM's ``_flat_weights``; h0, c0: (D, B, H); lengths: (B,) int64 or None.
    Returns y (T, B, D, H), h_n, c_n (D, B, H) and the gate activations and
    cell states backward reads (T, B, D, 4H), (T, B, D, H).
    """
    _checks.check_layer_args(x, weights, h0, c0, lengths, has_bias)
    prep = _prepare(weights, has_bias)
    w_ih, bias, w_hh, _ = prep.layer(weights, 0)
    packed_ih, packed_hh = prep.packed(weights, 0)
    T, B, I = x.shape
    D, G = w_hh.shape[0], w_hh.shape[1]
    # gx never leaves this call: it goes to the thread's workspace.
    out = workspace(T * B * D * G, x).view(T * B, D * G) if x.dtype == torch.float32 else None
    gx = project(x.reshape(T * B, I), w_ih, bias, D, out, packed_ih).view(T, B, D, G)
    return recurrence(gx, w_hh, None, h0, c0, lengths, True, packed_hh)


@lstm_layer.register_fake
def _(x, weights, h0, c0, lengths, has_bias):
    D = _checks.check_layer_args(x, weights, h0, c0, lengths, has_bias)
    T, B, _ = x.shape
    H = weights[1].shape[1]
    return (x.new_empty(T, B, D, H), x.new_empty(D, B, H), x.new_empty(D, B, H),
            x.new_empty(T, B, D, 4 * H), x.new_empty(T, B, D, H))


def _layer_setup_context(ctx, inputs, output):
    x, weights, h0, c0, lengths, has_bias = inputs
    y, _, _, gates, cells = output
    ctx.save_for_backward(x, h0, c0, lengths, y, gates, cells, *weights)
    ctx.has_bias = has_bias
    ctx.mark_non_differentiable(gates, cells)
    # Unused outputs get None, not zeros: autograd would otherwise fill a
    # gradient the size of gates and cells for every layer, every step.
    ctx.set_materialize_grads(False)


def _layer_backward(ctx, dy, dhn, dcn, _dgates, _dcells):
    x, h0, c0, lengths, y, gates, cells, *weights = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph: a differentiable backward, through the reference
        from fastlstm.ops.lstm.double_backward import layer_grads

        return layer_grads(ctx, x, weights, h0, c0, lengths, dy, dhn, dcn)
    prep = _prepare(weights, ctx.has_bias)
    w_ih, _, w_hh, _ = prep.layer(weights, 0)
    # (Traced backwards reach the kernel through the registered op, which finds its own.)
    packed_hh = prep.packed(weights, 0)[1] if grads.plain_eager(gates) else None
    # d gates feeds only the GEMMs below: none of the gradients returned is a view of it.
    dgates, dh0, dc0, _ = reverse_recurrence(dy, dhn, dcn, w_hh, None, h0, c0, y, gates, cells, lengths,
                                             reuse=True, packed=packed_hh)
    T, B, D, G = dgates.shape
    need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    need_w = any(need_w) if isinstance(need_w, (list, tuple)) else need_w
    dx = grads.input_grad(dgates.view(T * B, D * G), w_ih).view(x.shape) if need_x else None
    dweights = [None] * len(weights)  # (a list like the input, even when unused)
    if need_w:
        dw_ih, dw_hh, db = grads.weight_grads(dgates, y, h0, lengths, x, ctx.has_bias)
        dweights = []
        for d in range(D):
            dweights += [dw_ih[d * G : (d + 1) * G], dw_hh[d]]
            if ctx.has_bias:
                # b_ih and b_hh get equal gradients, in separate tensors (a
                # shared one would alias their .grad).
                dweights += [db[d * G : (d + 1) * G], db[d * G : (d + 1) * G].clone()]
    return dx, dweights, dh0, dc0, None, None


lstm_layer.register_autograd(_layer_backward, setup_context=_layer_setup_context)
