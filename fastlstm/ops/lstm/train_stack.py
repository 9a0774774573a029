"""``fastlstm::lstm_stack``: a whole stacked (optionally bidirectional) LSTM for
training, one autograd node for every layer.

Per layer, ``fastlstm::lstm_layer`` costs a dispatcher call, an autograd node
and its Python glue in forward and again in backward; at small sizes (B = 1,
T = 24, H = 64) that glue is most of a training step. This op runs every layer
on the prepared weights and does the whole backward in one node. fp32 on a
SIMD CPU level runs each way as one ``_C`` call (``lstm_stack_train_fwd`` /
``_bwd``: per layer, top down, the fused reverse recurrence, then the weight
gradients and the layer input's gradient on torch's own sgemm, or on the
fixed-order GEMM under ``torch.use_deterministic_algorithms(True)``); otherwise
(:func:`backward_in_one_call`) per layer in Python with the same kernels.
No projection, no dropout between layers (those take the per-layer ops).

Eager calls from :func:`fastlstm.ops.lstm` take :class:`LstmStack`, an
``autograd.Function`` over the same forward and backward (the registered op's
dispatch and pytree work cost about 0.2 ms a step); traced and compiled calls
take the registered op.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastlstm import _ext
from fastlstm.ops._alloc import empty, pooled_empty
from fastlstm.ops.lstm import _checks, grads
from fastlstm.ops.lstm.prepared import prepared_weights, workspace
from fastlstm.ops.lstm.recurrence import project, recurrence, reverse_recurrence

# Without a process BLAS (no torch sgemm found), above this many multiply-adds
# in the backward's weight-gradient GEMMs (T*B * 4H * (I + H) per layer and
# direction) torch's GEMM beats the fixed-order one by more than the one-call
# backward saves: on the Intel Xeon at 2 threads the one call was 1.25x faster
# at 57M, even at 236M, 0.85x at 900M+ (docs/notes/2026-12-06-one-call-training.md).
FIXED_ORDER_MAX_MACS = 1 << 28


def backward_in_one_call(T: int, B: int, D: int, H: int, I: int, num_layers: int) -> bool:
    """Whether the backward runs as one ``_C`` call (the one place this is decided):
    under ``torch.use_deterministic_algorithms(True)`` (both routes then use the
    fixed-order GEMM, with the same bits), when the call can use torch's BLAS
    (``_C.has_process_sgemm``), else for small sizes."""
    if torch.are_deterministic_algorithms_enabled() or _ext._C.has_process_sgemm():
        return True
    macs = T * B * 4 * H * (I + H + (num_layers - 1) * (D * H + H)) * D
    return macs <= FIXED_ORDER_MAX_MACS


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


def forward(x, weights, h0, c0, lengths, num_layers: int, D: int, has_bias: bool):
    """The stack's forward (arguments checked): (y (T, B, D*H), h_n, c_n, saved,
    prepared weights), ``saved`` every layer's gate activations (T, B, D, 4H) and
    cell states (T, B, D, H), then the outputs (T, B, D, H) of every layer but the last."""
    prep = prepared_weights(weights, num_layers, D, has_bias, 0)
    T, B = x.shape[0], x.shape[1]
    H = h0.shape[-1]
    hn = empty(num_layers * D, B, H, like=x)
    cn = empty(num_layers * D, B, H, like=x)
    stack_plan = _one_call_plan(prep, weights, x, h0, c0)
    if stack_plan is not None:
        gates = [pooled_empty(T, B, D, 4 * H, like=x) for _ in range(num_layers)]
        cells = [pooled_empty(T, B, D, H, like=x) for _ in range(num_layers)]
        outputs = [empty(T, B, D, H, like=x) for _ in range(num_layers)]
        buf = _ext.buf
        saved = [(buf(g), buf(c), buf(y)) for g, c, y in zip(gates, cells, outputs)]
        _ext._C.lstm_stack_train_fwd(
            buf(x.contiguous()), buf(h0.contiguous()), buf(c0.contiguous()), buf(_dense(lengths)), stack_plan, saved,
            buf(hn), buf(cn), buf(workspace(T * B * D * 4 * H, x)), T, B, x.shape[2], D, H,
            torch.get_num_threads())
    else:
        gates, cells, outputs = [None] * num_layers, [None] * num_layers, [None] * num_layers
        layer_in = x
        for layer in range(num_layers):
            w_ih, bias, w_hh, _ = prep.layer(weights, layer)
            packed_ih, packed_hh = prep.packed(weights, layer)
            out = workspace(T * B * D * 4 * H, x).view(T * B, D * 4 * H) if x.dtype == torch.float32 else None
            gx = project(layer_in.reshape(T * B, layer_in.shape[-1]), w_ih, bias, D, out, packed_ih)
            states = slice(layer * D, (layer + 1) * D)
            y, hn[states], cn[states], gates[layer], cells[layer] = recurrence(
                gx.view(T, B, D, 4 * H), w_hh, None, h0[states], c0[states], lengths, True, packed_hh)
            outputs[layer] = y
            layer_in = y.view(T, B, D * H)
    saved = [t for pair in zip(gates, cells) for t in pair] + outputs[:-1]
    return outputs[-1].view(T, B, D * H), hn, cn, saved, prep


def _dense(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()


def _one_call_plan(prep, weights, x, h0, c0):
    """The prepared stack plan when the one-call kernels take these tensors, else None."""
    if not (x.dtype == h0.dtype == c0.dtype == torch.float32 and x.shape[0] * x.shape[1] > 0):
        return None
    return prep.stack_plan(weights)


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
    D, _ = _check(x, weights, h0, c0, lengths, num_layers, bidirectional, has_bias)
    return forward(x, weights, h0, c0, lengths, num_layers, D, has_bias)[:4]


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


def _saved(ctx) -> tuple:
    """(x, h0, c0, lengths, y, saved, weights) of a forward (either route's ctx)."""
    n_saved = ctx.config[3]
    x, h0, c0, lengths, y_top, *rest = ctx.saved_tensors
    return x, h0, c0, lengths, y_top, rest[:n_saved], rest[n_saved:]


def _needs(ctx) -> tuple:
    """(x, weights, h0, c0) flags of the registered op's needs_input_grad."""
    need_x, need_w, need_h, need_c = ctx.needs_input_grad[:4]
    return need_x, any(need_w) if isinstance(need_w, (list, tuple)) else need_w, need_h, need_c


def _op_backward(ctx, dy, dhn, dcn, _dsaved):
    x, h0, c0, lengths, y_top, saved, weights = _saved(ctx)
    if torch.is_grad_enabled():  # create_graph: a differentiable backward, through the reference
        from fastlstm.ops.lstm.double_backward import stack_grads

        return stack_grads(ctx, x, weights, h0, c0, lengths, dy, dhn, dcn)
    dx, dweights, dh0, dc0 = backward(x, weights, h0, c0, lengths, y_top, saved, dy, dhn, dcn, ctx.config,
                                      _needs(ctx))
    return dx, dweights, dh0, dc0, None, None, None, None


lstm_stack.register_autograd(_op_backward, setup_context=_setup_context)


class LstmStack(torch.autograd.Function):
    """The eager route to :func:`forward` and :func:`backward` (no dispatcher);
    the arguments are checked by the caller (:func:`fastlstm.ops.lstm`)."""

    @staticmethod
    def forward(ctx, x, h0, c0, lengths, num_layers, bidirectional, has_bias, *weights):
        D = 2 if bidirectional else 1
        y, hn, cn, saved, ctx.prep = forward(x, weights, h0, c0, lengths, num_layers, D, has_bias)
        ctx.save_for_backward(x, h0, c0, lengths, y, *saved, *weights)
        ctx.config = (num_layers, D, has_bias, len(saved))
        ctx.set_materialize_grads(False)
        return y, hn, cn

    @staticmethod
    def backward(ctx, dy, dhn, dcn):
        x, h0, c0, lengths, y_top, saved, weights = _saved(ctx)
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph: as the registered op
            from fastlstm.ops.lstm.double_backward import stack_grads

            ctx_like = _OpNeeds((needs[0], needs[7:], needs[1], needs[2]), ctx.config)
            dx, dweights, dh0, dc0 = stack_grads(ctx_like, x, weights, h0, c0, lengths, dy, dhn, dcn)[:4]
        else:
            # (ctx.prep: the forward's prepared weights; autograd has checked that
            # the saved weights did not change since.)
            dx, dweights, dh0, dc0 = backward(x, weights, h0, c0, lengths, y_top, saved, dy, dhn, dcn, ctx.config,
                                              (needs[0], any(needs[7:]), needs[1], needs[2]), ctx.prep)
        return (dx, dh0, dc0, None, None, None, None, *dweights)


class _OpNeeds:
    """What stack_grads reads of the registered op's ctx."""

    def __init__(self, needs_input_grad, config) -> None:
        self.needs_input_grad, self.config = needs_input_grad, config


def backward(x, weights, h0, c0, lengths, y_top, saved, dy, dhn, dcn, config, needs, prep=None):
    """(dx, d weights (None where not wanted), dh0, dc0) of the stack; ``needs``:
    the (x, any weight, h0, c0) flags; ``prep``: the prepared weights (looked up when None)."""
    num_layers, D, has_bias, _ = config
    need_x, need_w, need_h, need_c = needs
    T, B, I = x.shape
    H = h0.shape[-1]
    if prep is None:
        prep = prepared_weights(weights, num_layers, D, has_bias, 0)
    # (A compiler traces the registered op's backward with fake tensors: torch ops only.)
    stack_plan = _one_call_plan(prep, weights, x, h0, c0) if grads.plain_eager(x) else None
    if stack_plan is None or not backward_in_one_call(T, B, D, H, I, num_layers):
        return _backward_per_layer(prep, x, weights, h0, c0, lengths, y_top, saved, dy, dhn, dcn, config, needs)
    buf = _ext.buf
    G = 4 * H
    dh0, dc0 = empty(*h0.shape, like=x), empty(*c0.shape, like=x)
    dx = empty(T, B, I, like=x) if need_x else None
    layer_weights, layer_saved = [], []
    for layer in range(num_layers):
        w_ih = prep.layer(weights, layer)[0]
        layer_weights.append((buf(w_ih), _ext.NO_BUF, stack_plan[layer][2], stack_plan[layer][3]))
        y = y_top if layer == num_layers - 1 else saved[2 * num_layers + layer]
        layer_saved.append((buf(saved[2 * layer]), buf(saved[2 * layer + 1]), buf(y)))
    dweights, layer_grads = _weight_grads_buffers(weights, num_layers, D, has_bias, x) if need_w else (
        [None] * len(weights), [(_ext.NO_BUF,) * 4] * num_layers)
    dy = dy.contiguous() if dy is not None else x.new_zeros(T, B, D * H)
    h_prev = workspace(T * B * D * H, x, "h_prev") if need_w and (lengths is not None or T < 2) else None
    _ext._C.lstm_stack_train_bwd(
        buf(x.contiguous()), buf(h0.contiguous()), buf(c0.contiguous()), buf(_dense(lengths)), layer_weights, layer_saved,
        layer_grads, buf(dy), buf(_dense(dhn)),
        buf(_dense(dcn)), buf(dx), buf(dh0), buf(dc0),
        buf(workspace(T * B * D * G, x, "dgates")),
        buf(workspace(T * B * D * H, x, "d_out") if num_layers > 1 else None), buf(h_prev), T, B, I, D, H,
        torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    del prep  # (held to here: it owns the plan's buffers)
    return dx, dweights, dh0 if need_h else None, dc0 if need_c else None


def _weight_grads_buffers(weights, num_layers: int, D: int, has_bias: bool, like: Tensor):
    """The parameters' gradients as views of one buffer (each parameter's region
    its own), and per layer the (dw_ih, dw_hh, db_ih, db_hh) buffers the kernel
    writes: each direction's parameter is a contiguous slice of them."""
    n = (4 if has_bias else 2) * D
    per = n // D
    # Per layer: w_ih of each direction, then w_hh of each, then b_ih, then b_hh.
    sizes = [weights[layer * n + d * per + k].numel() for layer in range(num_layers) for k in range(per)
             for d in range(D)]
    flat = empty(sum(sizes), like=like)
    parts = flat.split(sizes)
    dweights: list = [None] * len(weights)
    layer_grads = []
    address, item, offset = flat.data_ptr(), flat.element_size(), 0
    for layer in range(num_layers):
        block = []
        for k in range(per):
            numel = sum(sizes[layer * n + k * D : layer * n + (k + 1) * D])
            block.append((address + offset * item, numel, item, flat))
            offset += numel
        layer_grads.append(tuple(block) + ((_ext.NO_BUF,) * 2 if not has_bias else ()))
        for j in range(n):
            k, d = divmod(j, D)
            i = layer * n + d * per + k
            dweights[i] = parts[layer * n + j].view(weights[i].shape)
    return dweights, layer_grads


def _backward_per_layer(prep, x, weights, h0, c0, lengths, y_top, saved, dy, dhn, dcn, config, needs):
    num_layers, D, has_bias, _ = config
    need_x, need_w, need_h, need_c = needs
    eager = grads.plain_eager(x)
    n = (4 if has_bias else 2) * D
    T, B = x.shape[0], x.shape[1]
    H = h0.shape[-1]
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
    return dx, dweights, dh0, dc0
