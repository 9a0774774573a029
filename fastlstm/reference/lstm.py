"""Reference LSTM in plain PyTorch (differentiable by autograd).

Gate order is torch.nn.LSTM's (i, f, g, o); weights use nn.LSTM's shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def lstm_cell(
    x: Tensor,
    h: Tensor,
    c: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    w_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One LSTM step. x: (B, I), h: (B, P), c: (B, H) -> (h', c').

    >>> h, c = lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)
    """
    gates = x @ w_ih.t() + h @ w_hh.t()
    if b_ih is not None:
        gates = gates + b_ih + b_hh
    i, f, g, o = gates.chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    if w_hr is not None:
        h_new = h_new @ w_hr.t()
    return h_new, c_new


def lstm_direction(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    w_hr: Tensor | None = None,
    lengths: Tensor | None = None,
    reverse: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """One direction of one layer over a padded, time-major sequence.

    x: (T, B, I); h0: (B, P); c0: (B, H); lengths: (B,) int, each <= T, or None.
    Returns y (T, B, P) with zeros past each sequence's length, and the state
    after each sequence's last valid step: h_n (B, P), c_n (B, H). With
    ``reverse`` each sequence is read from its last valid step back to 0.

    >>> y, h_n, c_n = lstm_direction(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    """
    T = x.shape[0]
    h, c = h0, c0
    outputs: list[Tensor] = [x.new_zeros(())] * T
    steps = range(T - 1, -1, -1) if reverse else range(T)
    for t in steps:
        h_new, c_new = lstm_cell(x[t], h, c, w_ih, w_hh, b_ih, b_hh, w_hr)
        if lengths is None:
            h, c = h_new, c_new
            outputs[t] = h_new
        else:
            active = (t < lengths).to(x.device).unsqueeze(1)
            h = torch.where(active, h_new, h)
            c = torch.where(active, c_new, c)
            outputs[t] = torch.where(active, h_new, torch.zeros_like(h_new))
    if T == 0:
        return x.new_zeros((0, h0.shape[0], h0.shape[1])), h, c
    return torch.stack(outputs), h, c


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
) -> tuple[Tensor, Tensor, Tensor]:
    """Stacked (optionally bidirectional, projected) LSTM, time-major.

    x: (T, B, I). hx: (h0 (L*D, B, P), c0 (L*D, B, H)) or None. ``weights`` is
    nn.LSTM's ``_flat_weights`` order: per layer, per direction, w_ih, w_hh,
    [b_ih, b_hh], [w_hr]. Dropout (training only) follows every layer but the
    last. Returns output (T, B, D*P), h_n (L*D, B, P), c_n (L*D, B, H).

    >>> out, h_n, c_n = lstm(x, None, list(m._flat_weights), num_layers=m.num_layers)
    """
    D = 2 if bidirectional else 1
    per_dir = 2 + (2 if has_bias else 0) + (1 if proj_size > 0 else 0)
    B = x.shape[1]
    H = weights[1].shape[0] // 4
    P = proj_size if proj_size > 0 else H
    if hx is None:
        h0 = x.new_zeros(num_layers * D, B, P)
        c0 = x.new_zeros(num_layers * D, B, H)
    else:
        h0, c0 = hx
    layer_input = x
    h_n, c_n = [], []
    for layer in range(num_layers):
        outs = []
        for d in range(D):
            w = weights[(layer * D + d) * per_dir : (layer * D + d + 1) * per_dir]
            w_ih, w_hh = w[0], w[1]
            b_ih, b_hh = (w[2], w[3]) if has_bias else (None, None)
            w_hr = w[-1] if proj_size > 0 else None
            idx = layer * D + d
            y, h, c = lstm_direction(
                layer_input, h0[idx], c0[idx], w_ih, w_hh, b_ih, b_hh, w_hr, lengths, reverse=d == 1
            )
            outs.append(y)
            h_n.append(h)
            c_n.append(c)
        layer_input = torch.cat(outs, dim=-1) if D == 2 else outs[0]
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, p=dropout, training=True)
    return layer_input, torch.stack(h_n), torch.stack(c_n)


def lstm_recurrence(
    gx: Tensor,
    w_hh: Tensor,
    w_hr: Tensor | None,
    h0: Tensor,
    c0: Tensor,
    lengths: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Reference for the ``fastlstm::lstm_recurrence`` op (same layouts).

    gx: (T, B, D, 4H) input gates incl. biases; w_hh: (D, 4H, P);
    w_hr: (D, P, H) or None; h0: (D, B, P); c0: (D, B, H); lengths: (B,) or None.
    Returns y (T, B, D, P), h_n (D, B, P), c_n (D, B, H), gate activations
    (T, B, D, 4H) and cell states (T, B, D, H) (zeros past each length).
    """
    T, B, D, G = gx.shape
    H = G // 4
    ys, hs, cs, gate_seq, cell_seq = [], [], [], [], []
    for d in range(D):
        h, c = h0[d], c0[d]
        y = [None] * T
        gates_d = [None] * T
        cells_d = [None] * T
        steps = range(T - 1, -1, -1) if d == 1 else range(T)
        for t in steps:
            pre = gx[t, :, d] + h @ w_hh[d].t()
            i, f, g, o = torch.sigmoid(pre[:, :H]), torch.sigmoid(pre[:, H : 2 * H]), torch.tanh(
                pre[:, 2 * H : 3 * H]
            ), torch.sigmoid(pre[:, 3 * H :])
            c_new = f * c + i * g
            h_new = o * torch.tanh(c_new)
            if w_hr is not None:
                h_new = h_new @ w_hr[d].t()
            act = torch.cat([i, f, g, o], dim=-1)
            if lengths is not None:
                active = (t < lengths).to(gx.device).unsqueeze(1)
                h = torch.where(active, h_new, h)
                c = torch.where(active, c_new, c)
                h_new = torch.where(active, h_new, torch.zeros_like(h_new))
                act = torch.where(active, act, torch.zeros_like(act))
                c_new = torch.where(active, c_new, torch.zeros_like(c_new))
            else:
                h, c = h_new, c_new
            y[t], gates_d[t], cells_d[t] = h_new, act, c_new
        if T == 0:
            P = h0.shape[-1]
            ys.append(gx.new_zeros(0, B, P))
            gate_seq.append(gx.new_zeros(0, B, G))
            cell_seq.append(gx.new_zeros(0, B, H))
        else:
            ys.append(torch.stack(y))
            gate_seq.append(torch.stack(gates_d))
            cell_seq.append(torch.stack(cells_d))
        hs.append(h)
        cs.append(c)
    return (
        torch.stack(ys, dim=2),
        torch.stack(hs),
        torch.stack(cs),
        torch.stack(gate_seq, dim=2),
        torch.stack(cell_seq, dim=2),
    )
