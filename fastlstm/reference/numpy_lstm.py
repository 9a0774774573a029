"""A NumPy-only LSTM (forward): an oracle independent of torch.

The same math and layouts as :mod:`fastlstm.reference.lstm` and
``torch.nn.LSTM``: gate order (i, f, g, o), weights in nn.LSTM's shapes and
``_flat_weights`` order, time-major ``(T, B, I)`` input. Written to be read
beside the equations; this module never imports torch, so it can check the
torch-free runtime too.

>>> w = [p.detach().numpy() for p in torch.nn.LSTM(3, 4)._flat_weights]
>>> y, h_n, c_n = lstm(np.random.randn(6, 2, 3), None, w, num_layers=1)
"""

from __future__ import annotations

import numpy as np

__all__ = ["lstm", "lstm_cell", "lstm_direction", "sigmoid"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), written like torch's so float64 results agree to rounding."""
    with np.errstate(over="ignore"):  # exp(-x) -> inf gives the right limit 0
        return 1.0 / (1.0 + np.exp(-x))


def lstm_cell(
    x: np.ndarray,
    h: np.ndarray,
    c: np.ndarray,
    w_ih: np.ndarray,
    w_hh: np.ndarray,
    b_ih: np.ndarray | None = None,
    b_hh: np.ndarray | None = None,
    w_hr: np.ndarray | None = None,
    *,
    return_gates: bool = False,
):
    """One step. x: (B, I), h: (B, P), c: (B, H) -> (h', c'), plus the
    activations (i, f, g, o), each (B, H), when ``return_gates``.

        i = σ(W_ii x + W_hi h + b_i)    f = σ(W_if x + W_hf h + b_f)
        g = tanh(W_ig x + W_hg h + b_g) o = σ(W_io x + W_ho h + b_o)
        c' = f ⊙ c + i ⊙ g               h' = W_hr (o ⊙ tanh(c'))

    >>> h, c = lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)
    """
    pre = x @ w_ih.T + h @ w_hh.T
    if b_ih is not None:
        pre = pre + b_ih + b_hh
    zi, zf, zg, zo = np.split(pre, 4, axis=-1)
    i, f, g, o = sigmoid(zi), sigmoid(zf), np.tanh(zg), sigmoid(zo)
    c_new = f * c + i * g
    h_new = o * np.tanh(c_new)
    if w_hr is not None:
        h_new = h_new @ w_hr.T
    if return_gates:
        return h_new, c_new, (i, f, g, o)
    return h_new, c_new


def lstm_direction(
    x: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray,
    w_ih: np.ndarray,
    w_hh: np.ndarray,
    b_ih: np.ndarray | None = None,
    b_hh: np.ndarray | None = None,
    w_hr: np.ndarray | None = None,
    lengths: np.ndarray | None = None,
    reverse: bool = False,
):
    """One direction of one layer. x: (T, B, I); h0: (B, P); c0: (B, H);
    lengths: (B,) ints <= T or None. Returns y (T, B, P) (zeros past each
    length), h_n (B, P), c_n (B, H) after each sequence's last valid step, and
    the gates (T, B, 4H) and cells (T, B, H) (zeros past each length).

    >>> y, h_n, c_n, gates, cells = lstm_direction(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    """
    T, B = x.shape[0], x.shape[1]
    H = w_hh.shape[0] // 4
    h, c = h0, c0
    y = np.zeros((T, B, h0.shape[-1]), dtype=x.dtype)
    gates = np.zeros((T, B, 4 * H), dtype=x.dtype)
    cells = np.zeros((T, B, H), dtype=x.dtype)
    for t in range(T - 1, -1, -1) if reverse else range(T):
        h_new, c_new, act = lstm_cell(x[t], h, c, w_ih, w_hh, b_ih, b_hh, w_hr, return_gates=True)
        # Sequences shorter than T keep their state and emit zeros past their end.
        active = np.ones((B, 1), dtype=bool) if lengths is None else (t < np.asarray(lengths))[:, None]
        h = np.where(active, h_new, h)
        c = np.where(active, c_new, c)
        y[t] = np.where(active, h_new, 0.0)
        gates[t] = np.where(active, np.concatenate(act, axis=-1), 0.0)
        cells[t] = np.where(active, c_new, 0.0)
    return y, h, c, gates, cells


def lstm(
    x: np.ndarray,
    hx: tuple[np.ndarray, np.ndarray] | None,
    weights: list[np.ndarray],
    *,
    num_layers: int,
    bidirectional: bool = False,
    has_bias: bool = True,
    proj_size: int = 0,
    lengths: np.ndarray | None = None,
    return_gates: bool = False,
):
    """Stacked, optionally bidirectional and projected LSTM (inference: no dropout).

    x: (T, B, I); hx: (h0 (L*D, B, P), c0 (L*D, B, H)) or None; ``weights`` as
    arrays in nn.LSTM's ``_flat_weights`` order. Returns output (T, B, D*P),
    h_n (L*D, B, P), c_n (L*D, B, H); with ``return_gates`` also a list of
    ``(layer, gates (T, B, D, 4H), cells (T, B, D, H))`` like ``fastlstm.ops.lstm``'s record.

    >>> out, h_n, c_n = lstm(x, None, [w.detach().numpy() for w in m._flat_weights], num_layers=2)
    """
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must be (T, B, I), got shape {x.shape}")
    D = 2 if bidirectional else 1
    per_dir = 2 + (2 if has_bias else 0) + (1 if proj_size > 0 else 0)
    if len(weights) != num_layers * D * per_dir:
        raise ValueError(f"weights: expected {num_layers * D * per_dir} arrays, got {len(weights)}")
    B = x.shape[1]
    H = weights[1].shape[0] // 4
    P = proj_size if proj_size > 0 else H
    if hx is None:
        h0 = np.zeros((num_layers * D, B, P), dtype=x.dtype)
        c0 = np.zeros((num_layers * D, B, H), dtype=x.dtype)
    else:
        h0, c0 = hx
    layer_input = x
    h_n, c_n, record = [], [], []
    for layer in range(num_layers):
        outs, gates, cells = [], [], []
        for d in range(D):
            w = weights[(layer * D + d) * per_dir : (layer * D + d + 1) * per_dir]
            b_ih, b_hh = (w[2], w[3]) if has_bias else (None, None)
            w_hr = w[-1] if proj_size > 0 else None
            idx = layer * D + d
            y, h, c, g, cs = lstm_direction(
                layer_input, h0[idx], c0[idx], w[0], w[1], b_ih, b_hh, w_hr, lengths, reverse=d == 1
            )
            outs.append(y)
            gates.append(g)
            cells.append(cs)
            h_n.append(h)
            c_n.append(c)
        layer_input = np.concatenate(outs, axis=-1)
        record.append((layer, np.stack(gates, axis=2), np.stack(cells, axis=2)))
    result = (layer_input, np.stack(h_n), np.stack(c_n))
    return result + (record,) if return_gates else result
