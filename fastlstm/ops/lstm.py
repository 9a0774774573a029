"""LSTM ops: the ``fastlstm::lstm_recurrence`` custom op (with its backward op,
fake kernels and autograd) and :func:`lstm`, the stacked/bidirectional LSTM
built on it.

Layouts are time-major. The input projection of every step is one GEMM per
layer (the SIMD projection kernel in fp32, else torch); the recurrence kernels
do only the sequential part (see ``csrc/include/fastlstm/lstm_params.h``).
Plain fp32 inference without projections runs the whole stack in one kernel
call (``_C.lstm_stack_fwd``) with its packed weights cached per set of weights.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils import _python_dispatch

from fastlstm import _backends, _ext
from fastlstm import reference as _reference
from fastlstm.ops import _fixed_order
from fastlstm.ops import dropout as _dropout
from fastlstm.ops._alloc import empty, pooled_empty, release_pool

# --------------------------------------------------------------------------
# fastlstm::lstm_recurrence
# --------------------------------------------------------------------------


def _buf(t: Tensor | None) -> tuple[int, int]:
    """(address, numel) of a dense tensor, (0, 0) for None (``_ext.buf`` for tensors only, cheaper)."""
    return (0, 0) if t is None else (t.data_ptr(), t.numel())


def _dims(gx: Tensor, w_hh: Tensor) -> tuple[int, int, int, int, int]:
    T, B, D, G = gx.shape
    return T, B, D, G // 4, w_hh.shape[-1]


def _check_lengths(lengths: Tensor | None) -> Tensor | None:
    if lengths is None:
        return None
    if lengths.device.type != "cpu" or lengths.dtype != torch.int64:
        raise TypeError(f"lengths must be an int64 CPU tensor, got {lengths.dtype} on {lengths.device}")
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be 1-D (batch,), got shape {tuple(lengths.shape)}")
    return lengths.contiguous()


class _Lru:
    """A small thread-safe least-recently-used map (the op layer's weight caches)."""

    def __init__(self, size: int):
        self._items: OrderedDict = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


# Packed recurrent weights for the SIMD kernels, cached against the weight
# tensor's storage address, shape, strides and the active CPU level; an entry
# remembers the version it was packed at and is repacked in place of the old
# one when the tensor changes. An entry keeps its weight tensor alive, so no
# other tensor can take that address while the entry exists.
_PACK_CACHE = _Lru(64)


def _packed(w: Tensor, D: int, H: int, P: int, forward_only: bool = False) -> Tensor | None:
    """``w`` (D, 4H, P) packed for the active kernel (``forward_only``: w_ih, P = input
    size), or None when the active kernel reads the weights directly."""
    if w.dtype != torch.float32 or _ext._C is None:
        return None
    capability = _ext._C.cpu_capability()
    try:
        key, version = (w.data_ptr(), tuple(w.shape), w.stride(), capability, forward_only), w._version
    except RuntimeError:  # inference tensors have no version counter: pack, don't cache
        key = None
    hit = _PACK_CACHE.get(key) if key is not None else None
    if hit is not None and hit[0] == version:
        return hit[2]
    n = _ext._C.lstm_packed_weights_size("float32", D, H, P, forward_only)
    if n == 0:
        return None
    # A new version of the same tensor (an optimizer step) is packed over the
    # old one: a fresh buffer would page-fault in (about 0.2 ms per MB here).
    packed = hit[2] if hit is not None and hit[2].numel() == n else torch.empty(n, dtype=torch.float32)
    _ext._C.lstm_pack_weights("float32", _buf(w.contiguous()), _buf(packed), D, H, P, forward_only)
    if key is not None:
        _PACK_CACHE.put(key, (version, w.detach(), packed))
    return packed


def _prime_packed(w: Tensor, sources: list[Tensor], D: int, H: int, P: int, forward_only: bool) -> None:
    """Training through lstm_recurrence builds the stacked ``w`` afresh every
    call (it must stay in the autograd graph); its packed form is cached
    against the source parameters instead, and registered under ``w`` so the
    ops find it without repacking."""
    if w.dtype != torch.float32 or _ext._C is None or torch.compiler.is_compiling() or type(w) is not Tensor:
        return
    try:
        capability = _ext._C.cpu_capability()
        src_key = ("sources", capability, forward_only, tuple(w.shape)) + tuple(
            (t.data_ptr(), t.stride()) for t in sources
        )
        src_versions = tuple(t._version for t in sources)
        w_key = (w.data_ptr(), tuple(w.shape), w.stride(), capability, forward_only)
    except RuntimeError:
        return
    hit = _PACK_CACHE.get(src_key)
    if hit is None or hit[0] != src_versions:
        packed = _packed(w.detach(), D, H, P, forward_only)
        if packed is not None:
            _PACK_CACHE.put(src_key, (src_versions, [t.detach() for t in sources], packed))
    else:
        _PACK_CACHE.put(w_key, (w._version, w.detach(), hit[2]))


def _input_projection_impl(x: Tensor, w_ih: Tensor, bias: Tensor | None, directions: int) -> Tensor:
    """Input gates of every step for one layer, all directions: x · w_ihᵀ + bias.

    x: (N, I); w_ih: (D*4H, I) (directions concatenated); bias: (D*4H,) or None.
    Returns (N, D*4H). fp32 runs the SIMD kernel on the fastlstm thread pool
    (no torch intra-op threads); otherwise torch's GEMM.

    >>> gx = lstm_input_projection(torch.randn(10, 8), torch.randn(64, 8), None, 1)
    """
    return _project(x, w_ih, bias, directions, None)


def _project(x: Tensor, w_ih: Tensor, bias: Tensor | None, directions: int, out: Tensor | None) -> Tensor:
    """Body of lstm_input_projection; ``out`` (N, D*4H) is an optional destination."""
    N, I = x.shape
    G = w_ih.shape[0] // directions
    packed = _packed(w_ih, directions, G // 4, I, True) if N > 0 and I > 0 else None
    if packed is None:
        return torch.addmm(bias, x, w_ih.t()) if bias is not None else x @ w_ih.t()
    x = x.contiguous()
    bias = bias.contiguous() if bias is not None else None
    gx = empty(N, directions * G, like=x) if out is None else out
    _ext._C.lstm_input_projection(
        "float32", _buf(x), _buf(packed), _buf(bias), _buf(gx),
        N, directions, G // 4, I, torch.get_num_threads(),
    )
    return gx


lstm_input_projection = torch.library.custom_op(
    "fastlstm::lstm_input_projection", _input_projection_impl, mutates_args=(), device_types="cpu"
)


@lstm_input_projection.register_fake
def _(x, w_ih, bias, directions):
    return x.new_empty(x.shape[0], w_ih.shape[0])


def _projection_setup_context(ctx, inputs, output):
    x, w_ih, bias, _ = inputs
    ctx.save_for_backward(x, w_ih)
    ctx.has_bias = bias is not None


def _projection_backward(ctx, dgx):
    x, w_ih = ctx.saved_tensors
    dx = dgx @ w_ih if ctx.needs_input_grad[0] else None
    dw = _fixed_order.mm_tn(x, dgx).t() if ctx.needs_input_grad[1] else None
    db = _fixed_order.colsum(dgx) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return dx, dw, db, None


lstm_input_projection.register_autograd(_projection_backward, setup_context=_projection_setup_context)


def _check_recurrence_args(gx, w_hh, w_hr, h0, c0, lengths) -> None:
    """Shapes, dtypes and devices of lstm_recurrence's tensors, checked before
    anything reaches the kernel (whose size checks cannot see dtype or device:
    a float64 buffer with the right element count would otherwise be read as float32)."""
    if gx.dim() != 4 or gx.shape[-1] % 4 != 0 or gx.shape[-1] == 0:
        raise ValueError(f"gx must be (T, B, D, 4*hidden) with hidden >= 1, got shape {tuple(gx.shape)}")
    T, B, D, G = gx.shape
    H = G // 4
    if w_hh.dim() != 3 or w_hh.shape[0] != D or w_hh.shape[1] != G:
        raise ValueError(f"w_hh must be (D={D}, 4*hidden={G}, proj), got shape {tuple(w_hh.shape)}")
    P = w_hh.shape[2]
    expected = {"h0": (D, B, P), "c0": (D, B, H)}
    if w_hr is not None:
        expected["w_hr"] = (D, P, H)
    elif P != H:
        raise ValueError(f"w_hh's last dim ({P}) must equal hidden ({H}) when w_hr is None")
    named = {"w_hh": w_hh, "w_hr": w_hr, "h0": h0, "c0": c0}
    for name, shape in expected.items():
        if tuple(named[name].shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(named[name].shape)}")
    for name, t in named.items():
        if t is None:
            continue
        if t.dtype != gx.dtype:
            raise TypeError(f"{name} dtype ({t.dtype}) does not match gx dtype ({gx.dtype})")
        if t.device != gx.device:
            raise RuntimeError(f"{name} is on {t.device} but gx is on {gx.device}")
    if lengths is not None:
        _check_lengths(lengths)
        if lengths.shape[0] != B:
            raise ValueError(f"lengths must have batch={B} elements, got {lengths.shape[0]}")



def _recurrence_impl(
    gx: Tensor,
    w_hh: Tensor,
    w_hr: Tensor | None,
    h0: Tensor,
    c0: Tensor,
    lengths: Tensor | None,
    save_for_backward: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Fused LSTM recurrence for one layer, one or both directions.

    gx: (T, B, D, 4H) = x·W_ihᵀ + b_ih + b_hh; w_hh: (D, 4H, P); w_hr: (D, P, H)
    or None; h0: (D, B, P); c0: (D, B, H); lengths: (B,) int64 CPU or None.
    Direction 1 runs in reverse time. Returns y (T, B, D, P), h_n (D, B, P),
    c_n (D, B, H), and when ``save_for_backward`` the gate activations
    (T, B, D, 4H) and cell states (T, B, D, H) backward needs (else empty).

    >>> y, h_n, c_n, _, _ = lstm_recurrence(gx, w_hh, None, h0, c0, None, False)
    """
    _check_recurrence_args(gx, w_hh, w_hr, h0, c0, lengths)
    T, B, D, H, P = _dims(gx, w_hh)
    gx, w_hh, h0, c0 = gx.contiguous(), w_hh.contiguous(), h0.contiguous(), c0.contiguous()
    w_hr = w_hr.contiguous() if w_hr is not None else None
    lengths = _check_lengths(lengths)
    y = empty(T, B, D, P, like=gx)
    hn = empty(D, B, P, like=gx)
    cn = empty(D, B, H, like=gx)
    # Saved for backward and released after it: pooled (see pooled_empty).
    gates = pooled_empty(T, B, D, 4 * H, like=gx) if save_for_backward else gx.new_empty(0)
    cells = pooled_empty(T, B, D, H, like=gx) if save_for_backward else gx.new_empty(0)
    buf = _buf
    _ext._C.lstm_recurrence_fwd(
        _ext.dtype_name(gx.dtype),
        buf(gx), buf(w_hh), buf(w_hr), buf(h0), buf(c0), buf(lengths),
        buf(y), buf(hn), buf(cn),
        buf(gates) if save_for_backward else (0, 0),
        buf(cells) if save_for_backward else (0, 0),
        T, B, D, H, P, torch.get_num_threads(), buf(_packed(w_hh, D, H, P)),
    )
    return y, hn, cn, gates, cells


lstm_recurrence = torch.library.custom_op(
    "fastlstm::lstm_recurrence", _recurrence_impl, mutates_args=(), device_types="cpu"
)


@lstm_recurrence.register_fake
def _(gx, w_hh, w_hr, h0, c0, lengths, save_for_backward):
    _check_recurrence_args(gx, w_hh, w_hr, h0, c0, lengths)
    T, B, D, H, P = _dims(gx, w_hh)
    y = gx.new_empty(T, B, D, P)
    hn = gx.new_empty(D, B, P)
    cn = gx.new_empty(D, B, H)
    gates = gx.new_empty(T, B, D, 4 * H) if save_for_backward else gx.new_empty(0)
    cells = gx.new_empty(T, B, D, H) if save_for_backward else gx.new_empty(0)
    return y, hn, cn, gates, cells


@torch.library.custom_op("fastlstm::lstm_recurrence_backward", mutates_args=(), device_types="cpu")
def lstm_recurrence_backward(
    dy: Tensor,
    dhn: Tensor,
    dcn: Tensor,
    w_hh: Tensor,
    w_hr: Tensor | None,
    c0: Tensor,
    gates: Tensor,
    cells: Tensor,
    lengths: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fused reverse recurrence. Returns d gx (T, B, D, 4H), d h0 (D, B, P),
    d c0 (D, B, H) and, when projecting, the gradient w.r.t. every projected
    hidden output (T, B, D, P) for dW_hr (else empty)."""
    return _recurrence_backward_impl(dy, dhn, dcn, w_hh, w_hr, c0, gates, cells, lengths, None)


def _recurrence_backward_impl(dy, dhn, dcn, w_hh, w_hr, c0, gates, cells, lengths, dgates: Tensor | None):
    """Body of lstm_recurrence_backward; ``dgates`` (T, B, D, 4H) is an optional destination."""
    T, B, D, G = gates.shape
    H, P = G // 4, w_hh.shape[-1]
    dy, dhn, dcn = dy.contiguous(), dhn.contiguous(), dcn.contiguous()
    w_hh, c0 = w_hh.contiguous(), c0.contiguous()
    w_hr = w_hr.contiguous() if w_hr is not None else None
    gates, cells = gates.contiguous(), cells.contiguous()
    lengths = _check_lengths(lengths)
    dgates = empty(T, B, D, G, like=dy) if dgates is None else dgates
    dh0 = empty(D, B, P, like=dy)
    dc0 = empty(D, B, H, like=dy)
    dhproj = empty(T, B, D, P, like=dy) if w_hr is not None else dy.new_empty(0)
    buf = _buf
    _ext._C.lstm_recurrence_bwd(
        _ext.dtype_name(dy.dtype),
        buf(dy), buf(dhn), buf(dcn), buf(w_hh), buf(w_hr), buf(c0), buf(gates), buf(cells),
        buf(lengths), buf(dgates), buf(dh0), buf(dc0), buf(dhproj) if w_hr is not None else (0, 0),
        T, B, D, H, P, torch.get_num_threads(), buf(_packed(w_hh, D, H, P)),
    )
    return dgates, dh0, dc0, dhproj


@lstm_recurrence_backward.register_fake
def _(dy, dhn, dcn, w_hh, w_hr, c0, gates, cells, lengths):
    T, B, D, G = gates.shape
    H, P = G // 4, w_hh.shape[-1]
    dhproj = dy.new_empty(T, B, D, P) if w_hr is not None else dy.new_empty(0)
    return dy.new_empty(T, B, D, G), dy.new_empty(D, B, P), dy.new_empty(D, B, H), dhproj


def _previous_hidden(y: Tensor, h0: Tensor, lengths: Tensor | None) -> Tensor:
    """The hidden state each step consumed: (T, B, D, P), in processing order per direction."""
    T = y.shape[0]
    # [:T] keeps T = 0 empty (y[:-1] is then empty too, not one row shorter).
    fwd = torch.cat([h0[0].unsqueeze(0), y[:-1, :, 0]], dim=0)[:T]
    if y.shape[2] == 1:
        return fwd.unsqueeze(2)
    rev = torch.cat([y[1:, :, 1], h0[1].unsqueeze(0)], dim=0)[:T]
    steps = torch.arange(T, device=y.device).unsqueeze(1)
    limit = lengths.to(y.device).unsqueeze(0) if lengths is not None else torch.full_like(steps, T)
    first = (steps + 1 >= limit).unsqueeze(-1)  # the reverse direction starts from h0 here
    rev = torch.where(first, h0[1].unsqueeze(0).expand_as(rev), rev)
    return torch.stack([fwd, rev], dim=2)


def _dw_hh(dgates: Tensor, y: Tensor, h0: Tensor, lengths: Tensor | None) -> Tensor:
    """sum over steps of dgates_t^T · h_prev_t per direction: (D, 4H, H)."""
    T, B, D, G = dgates.shape
    # (Traced graphs take the general form: the strided views below would
    # specialise on T.)
    if not _plain_eager(dgates) or lengths is not None or T < 2:
        hprev = _previous_hidden(y, h0, lengths)
        return torch.stack([_fixed_order.mm_tn(hprev[:, :, d].reshape(T * B, y.shape[-1]), dgates[:, :, d].reshape(T * B, G)).t()
                            for d in range(D)])
    # Full-length sequences: h_prev is y shifted by one step (h0 at the start),
    # read in place through strided views instead of a stacked copy.
    out = []
    for d in range(D):
        first, rest = (0, slice(1, None)) if d == 0 else (T - 1, slice(None, T - 1))
        prev = slice(None, T - 1) if d == 0 else slice(1, None)
        dg, hy = dgates[rest, :, d].reshape(-1, G), y[prev, :, d].reshape(-1, y.shape[-1])
        # Computed transposed, (H, 4H): the kernel vectorises along 4H.
        out.append(_fixed_order.mm_tn(hy, dg, _fixed_order.mm_tn(h0[d], dgates[first, :, d])).t())
    return torch.stack(out)


def _reverse_recurrence(dy, dhn, dcn, w_hh, w_hr, h0, c0, y, gates, cells, lengths, reuse: bool = False):
    """The fused reverse recurrence, with zeros for output gradients autograd
    left out. ``reuse``: d gates goes to the thread's "dgates" workspace (the
    caller lets no view of it escape)."""
    dy = torch.zeros_like(y) if dy is None else dy
    dhn = torch.zeros_like(h0) if dhn is None else dhn
    dcn = torch.zeros_like(c0) if dcn is None else dcn
    if reuse and gates.dtype == torch.float32 and _plain_eager(gates):
        dgates = _workspace(gates.numel(), gates, "dgates").view(gates.shape)
        return _recurrence_backward_impl(dy, dhn, dcn, w_hh, w_hr, c0, gates, cells, lengths, dgates)
    return torch.ops.fastlstm.lstm_recurrence_backward(dy, dhn, dcn, w_hh, w_hr, c0, gates, cells, lengths)


def _setup_context(ctx, inputs, output):
    gx, w_hh, w_hr, h0, c0, lengths, save_for_backward = inputs
    y, _, _, gates, cells = output
    ctx.save_for_backward(w_hh, w_hr, h0, c0, lengths, y, gates, cells)
    ctx.saved_gates = save_for_backward
    ctx.mark_non_differentiable(gates, cells)
    # Unused outputs get None, not zeros: autograd would otherwise fill a
    # gradient the size of gates and cells for every layer, every step.
    ctx.set_materialize_grads(False)


def _backward(ctx, dy, dhn, dcn, _dgates, _dcells):
    w_hh, w_hr, h0, c0, lengths, y, gates, cells = ctx.saved_tensors
    if not ctx.saved_gates:
        raise RuntimeError(
            "fastlstm::lstm_recurrence was run with save_for_backward=False; cannot differentiate it"
        )
    dgates, dh0, dc0, dhproj = _reverse_recurrence(dy, dhn, dcn, w_hh, w_hr, h0, c0, y, gates, cells, lengths)
    # Weight gradients as large GEMMs over all steps.
    T, B, D, G = dgates.shape
    H = G // 4
    dw_hh = _dw_hh(dgates, y, h0, lengths)
    dw_hr = None
    if w_hr is not None:
        hpre = gates[..., 3 * H :] * torch.tanh(cells)
        P = dhproj.shape[-1]
        dw_hr = torch.stack([_fixed_order.mm_tn(dhproj[:, :, d].reshape(T * B, P), hpre[:, :, d].reshape(T * B, H))
                             for d in range(D)])
    return dgates, dw_hh, dw_hr, dh0, dc0, None, None


lstm_recurrence.register_autograd(_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------
# fastlstm::lstm_layer: one whole layer (projection + recurrence) for training
# --------------------------------------------------------------------------
#
# Training through lstm_input_projection + lstm_recurrence puts a dozen small
# autograd nodes per layer around the kernels (weight concatenation, bias sum,
# the previous-hidden stack, views); at batch 1 their glue cost as much as
# the kernels. This op takes the layer's parameters as nn.LSTM holds them and
# does the whole backward in one node: the fused reverse recurrence, then
# dx, dW_ih, the bias gradient and dW_hh as GEMMs over all steps.


# A layer's weights as the kernels take them, per set of parameters (see
# _layer_parts). Keyed like _PACK_CACHE, with the parameters' versions kept
# in the entry.
_LAYER_CACHE = _Lru(32)


def _layer_parts(weights: list[Tensor], has_bias: bool):
    """(w_ih (D*4H, I), fused bias or None, w_hh (D, 4H, H)) built from one layer's
    per-direction parameters (no autograd). Forward and backward of a training
    step share one build; when an optimizer step has changed the parameters,
    the build is refreshed in place, so its packed forms are replaced in
    _PACK_CACHE rather than added beside stale ones."""
    per_dir = 4 if has_bias else 2
    key = None
    # Only fp32 packs its weights, and those are cached by version anyway;
    # other dtypes rebuild, so in-place edits that bypass the version counter
    # (gradcheck's perturbations) are always seen there.
    if weights[0].dtype == torch.float32:
        try:
            key = (has_bias,) + tuple((w.data_ptr(), tuple(w.shape), w.stride()) for w in weights)
            versions = tuple(w._version for w in weights)
        except RuntimeError:  # inference tensors carry no version counter
            key = None
    hit = _LAYER_CACHE.get(key) if key is not None else None
    if hit is not None and hit[0] == versions:
        return hit[2]
    with torch.no_grad():
        built = _layer_weights(weights, 1, len(weights) // per_dir, per_dir, has_bias, 0)[0]
        built = tuple(None if t is None else t.contiguous() for t in built[:3])
        if hit is not None:
            # Copy into the old build, except where a part is a parameter
            # itself (one direction): that one is already current.
            for old, new in zip(hit[2], built):
                if old is not None and old.data_ptr() != new.data_ptr():
                    old.copy_(new)
            built = hit[2]
    if key is not None:
        _LAYER_CACHE.put(key, (versions, [w.detach() for w in weights], built))
    return built


def _check_layer_args(x, weights, h0, c0, lengths, has_bias) -> int:
    per_dir = 4 if has_bias else 2
    if len(weights) not in (per_dir, 2 * per_dir):
        raise ValueError(f"weights must hold {per_dir} tensors per direction (1 or 2 directions), got {len(weights)}")
    if x.dim() != 3:
        raise ValueError(f"x must be (T, B, input_size), got shape {tuple(x.shape)}")
    D = len(weights) // per_dir
    G, I = weights[0].shape
    H = G // 4
    if I != x.shape[-1] or weights[1].shape != (G, H):
        raise ValueError(f"w_ih must be (4*hidden, {x.shape[-1]}) and w_hh (4*hidden, hidden), got "
                         f"{tuple(weights[0].shape)} and {tuple(weights[1].shape)}")
    for name, t in (("h0", h0), ("c0", c0)):
        if tuple(t.shape) != (D, x.shape[1], H):
            raise ValueError(f"{name} must have shape {(D, x.shape[1], H)}, got {tuple(t.shape)}")
    return D


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
    _check_layer_args(x, weights, h0, c0, lengths, has_bias)
    w_ih, bias, w_hh = _layer_parts(weights, has_bias)
    T, B, I = x.shape
    D, G, H = w_hh.shape[0], w_hh.shape[1], w_hh.shape[2]
    # gx never leaves this call: it goes to the thread's workspace.
    out = _workspace(T * B * D * G, x).view(T * B, D * G) if x.dtype == torch.float32 else None
    gx = _project(x.reshape(T * B, I), w_ih, bias, D, out).view(T, B, D, G)
    return _recurrence_impl(gx, w_hh, None, h0, c0, lengths, True)


@lstm_layer.register_fake
def _(x, weights, h0, c0, lengths, has_bias):
    D = _check_layer_args(x, weights, h0, c0, lengths, has_bias)
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
    w_ih, _, w_hh = _layer_parts(weights, ctx.has_bias)
    # d gates feeds only the GEMMs below: none of the gradients returned is a view of it.
    dgates, dh0, dc0, _ = _reverse_recurrence(dy, dhn, dcn, w_hh, None, h0, c0, y, gates, cells, lengths, reuse=True)
    T, B, D, G = dgates.shape
    flat = dgates.view(T * B, D * G)
    need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    dx = (flat @ w_ih).view(x.shape) if need_x else None
    dweights = None
    if need_w:
        dw_ih = _fixed_order.mm_tn(x.reshape(T * B, x.shape[-1]), flat).t()  # transposed, as in _dw_hh
        dw_hh = _dw_hh(dgates, y, h0, lengths)
        db = _fixed_order.colsum(flat) if ctx.has_bias else None
        dweights = []
        for d in range(D):
            dweights += [dw_ih[d * G : (d + 1) * G], dw_hh[d]]
            if ctx.has_bias:
                # b_ih and b_hh get equal gradients, in separate tensors (a
                # shared one would alias their .grad).
                dweights += [db[d * G : (d + 1) * G], db[d * G : (d + 1) * G].clone()]
    return dx, dweights, dh0, dc0, None, None


lstm_layer.register_autograd(_layer_backward, setup_context=_layer_setup_context)


# --------------------------------------------------------------------------
# Stacked, bidirectional LSTM
# --------------------------------------------------------------------------


def _plain_eager(x: Tensor) -> bool:
    """True when calling the ops' implementations directly is equivalent to
    going through the dispatcher: eager, a plain CPU tensor, no tracing and no
    torch function / dispatch mode that would want to see the op. Skipping
    the custom-op machinery saves tens of microseconds per call (inference only:
    autograd needs the registered ops)."""
    return (
        type(x) is Tensor
        and not torch.compiler.is_compiling()
        and not torch._C._is_torch_function_mode_enabled()
        and _python_dispatch._get_current_dispatch_mode() is None
    )


_WORKSPACE = threading.local()


def _workspace(numel: int, like: Tensor, slot: str = "gx") -> Tensor:
    """A per-thread float buffer reused across calls for temporaries that never
    escape a call: the input gates of a forward (slot "gx") and the gate
    gradients of a layer's backward (slot "dgates"). A fresh multi-megabyte
    allocation is returned to the OS when freed, and faulting its pages back in
    on every call costs as much as the kernels at large batch (S2 training:
    40 -> 34 ms)."""
    buf = getattr(_WORKSPACE, slot, None)
    if buf is None or buf.numel() < numel or buf.dtype != like.dtype:
        buf = torch.empty(numel, dtype=like.dtype)
        setattr(_WORKSPACE, slot, buf)
    return buf[:numel]


def empty_cache() -> None:
    """Frees the CPU buffers fastlstm keeps between calls: the pool of large
    saved gate activations, the calling thread's workspaces (input gates,
    gate gradients) and the packed and concatenated weights. They are built
    again on next use. The weight caches notice changes through the
    parameters' version counters (optimizer steps, in-place ops,
    load_state_dict); after editing weights through ``.data``, which
    bypasses them, call this.

    >>> fastlstm.ops.empty_cache()
    """
    for slot in list(vars(_WORKSPACE)):
        delattr(_WORKSPACE, slot)
    release_pool()
    for cache in (_PACK_CACHE, _LAYER_CACHE, _WEIGHT_CACHE, _PLAN_CACHE):
        cache.clear()


def _recurrence(backend: str):
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


def _stack(tensors: list[Tensor]) -> Tensor:
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def _layer_weights(weights, num_layers, D, per_dir, has_bias, proj_size, prime=False):
    """Per layer: (w_ih of both directions (D*4H, I), fused bias (D*4H) or None,
    w_hh (D, 4H, P), w_hr (D, P, H) or None), built with differentiable ops."""
    out = []
    for layer in range(num_layers):
        dirs = [weights[(layer * D + d) * per_dir : (layer * D + d + 1) * per_dir] for d in range(D)]
        w_ih = torch.cat([w[0] for w in dirs]) if D == 2 else dirs[0][0]
        bias = None
        if has_bias:
            bias = torch.cat([w[2] + w[3] for w in dirs]) if D == 2 else dirs[0][2] + dirs[0][3]
        w_hh = _stack([w[1] for w in dirs])
        w_hr = _stack([w[-1] for w in dirs]) if proj_size > 0 else None
        if prime:
            H, P = w_hh.shape[1] // 4, w_hh.shape[2]
            _prime_packed(w_ih, [w[0] for w in dirs], D, H, w_ih.shape[1], True)
            _prime_packed(w_hh, [w[1] for w in dirs], D, H, P, False)
        out.append((w_ih, bias, w_hh, w_hr))
    return out


# Concatenated weights and fused biases for inference, per set of weights
# (storage address + version counter of every tensor). Entries keep their
# weights alive so an address cannot be reused by another tensor meanwhile.
_WEIGHT_CACHE = _Lru(16)


def _cached_layer_weights(weights, num_layers, D, per_dir, has_bias, proj_size):
    try:
        key = (num_layers, D, has_bias, proj_size) + tuple((w.data_ptr(), w._version) for w in weights)
    except RuntimeError:  # inference tensors carry no version counter
        return _layer_weights(weights, num_layers, D, per_dir, has_bias, proj_size)
    hit = _WEIGHT_CACHE.get(key)
    if hit is not None:
        return hit[1]
    # Built outside inference mode so the results have version counters (the
    # packed-weight cache keys on them) and stay usable in any later mode.
    with torch.inference_mode(False), torch.no_grad():
        built = _layer_weights([w.detach() for w in weights], num_layers, D, per_dir, has_bias, proj_size)
        built = [tuple(None if t is None else t.contiguous() for t in layer) for layer in built]
    _WEIGHT_CACHE.put(key, (list(weights), built))
    return built


# lstm_stack_fwd's per-layer buffers for a set of weights, keyed like
# _WEIGHT_CACHE plus the CPU level (the packed layouts depend on it). An entry
# holds every tensor its addresses point into.
_PLAN_CACHE = _Lru(16)


def _stack_plan(weights, num_layers, D, per_dir, has_bias):
    """Per layer (w_ih_packed, bias, w_hh, w_hh_packed) buffers for
    ``_C.lstm_stack_fwd``, or None when the active kernel takes no packed weights."""
    capability = _ext._C.cpu_capability()
    try:
        key = (capability, num_layers, D, has_bias) + tuple((w.data_ptr(), w._version) for w in weights)
    except RuntimeError:  # inference tensors: build every call
        key = None
    hit = _PLAN_CACHE.get(key) if key is not None else None
    if hit is not None:
        return hit[1]
    keep, plan = [], []
    for w_ih, bias, w_hh, _ in _cached_layer_weights(weights, num_layers, D, per_dir, has_bias, 0):
        H = w_hh.shape[1] // 4
        packed_ih = _packed(w_ih, D, H, w_ih.shape[1], True)
        packed_hh = _packed(w_hh, D, H, H)
        if packed_ih is None or packed_hh is None:
            return None
        keep += [w_ih, bias, w_hh, packed_ih, packed_hh]
        plan.append((_buf(packed_ih), _buf(bias), _buf(w_hh), _buf(packed_hh)))
    if key is not None:
        _PLAN_CACHE.put(key, ((list(weights), keep), plan))
    return plan


def _stack_inference(x, h0_all, c0_all, lengths, plan, D, H):
    """Inference through every layer in one kernel call (fp32, no projection)."""
    T, B, I = x.shape
    L = len(plan)
    x = x.contiguous()
    h0_all, c0_all = h0_all.contiguous(), c0_all.contiguous()
    lengths = lengths.contiguous() if lengths is not None else None
    y = empty(T, B, D * H, like=x)
    hn = empty(L * D, B, H, like=x)
    cn = empty(L * D, B, H, like=x)
    threads = torch.get_num_threads()
    # The wavefront projects into chunk buffers of its own: no whole-sequence gx.
    n_gx = 0 if _ext._C.lstm_stack_uses_wavefront(T, B, D, H, L, threads) else T * B * D * 4 * H
    ws = _workspace(n_gx + (T * B * D * H if L > 1 else 0), x)
    _ext._C.lstm_stack_fwd(
        _buf(x), _buf(h0_all), _buf(c0_all), _buf(lengths), plan, _buf(y), _buf(hn), _buf(cn),
        _buf(ws[:n_gx]) if n_gx else (0, 0), _buf(ws[n_gx:]) if L > 1 else (0, 0), T, B, I, D, H, threads,
    )
    return y, hn, cn


def _check_lstm_args(x, hx, weights, n_weights: int, lengths) -> None:
    # Clear errors naming the argument, before any GEMM or kernel sees them.
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(f"x must be a 3-D (T, B, input_size) tensor, got {getattr(x, 'shape', type(x))}")
    if len(weights) != n_weights:
        raise ValueError(f"weights must hold {n_weights} tensors for this configuration, got {len(weights)}")
    for w in weights:
        if w.dtype != x.dtype:
            raise ValueError(f"x dtype ({x.dtype}) does not match weight dtype ({w.dtype})")
        if w.device != x.device:
            raise RuntimeError(f"x is on {x.device} but a weight is on {w.device}")
    if hx is not None:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError("hx must be a tuple (h0, c0) or None")
        for name, t in zip(("h0", "c0"), hx):
            if t.dim() != 3 or t.shape[1] != x.shape[1]:
                raise ValueError(f"hx: {name} must be (layers*directions, B={x.shape[1]}, ·), got {tuple(t.shape)}")
    if lengths is not None:
        _check_lengths(lengths)
        if lengths.shape[0] != x.shape[1]:
            raise ValueError(f"lengths must have B={x.shape[1]} elements, got {lengths.shape[0]}")


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
    if torch.is_autocast_enabled(x.device.type) and weights:
        return _lstm_autocast(x, hx, weights, num_layers=num_layers, bidirectional=bidirectional,
                              has_bias=has_bias, proj_size=proj_size, dropout=dropout, training=training,
                              lengths=lengths, backend=backend, record=record)
    D = 2 if bidirectional else 1
    per_dir = 2 + (2 if has_bias else 0) + (1 if proj_size > 0 else 0)
    _check_lstm_args(x, hx, weights, num_layers * D * per_dir, lengths)
    backend = _backends.resolve(backend, x.device, x.dtype, proj=proj_size > 0)
    recurrence = _recurrence(backend)
    T, B = x.shape[0], x.shape[1]
    H = weights[1].shape[0] // 4
    P = proj_size if proj_size > 0 else H
    if hx is None:
        h0_all = x.new_zeros(num_layers * D, B, P)
        c0_all = x.new_zeros(num_layers * D, B, H)
    else:
        h0_all, c0_all = hx
    # Recording needs the kernels to write their gates, as for backward.
    save = record is not None or torch.is_grad_enabled() and (
        x.requires_grad
        or any(w.requires_grad for w in weights)
        or h0_all.requires_grad
        or c0_all.requires_grad
    )
    direct = backend == "cpu" and not save and _plain_eager(x)
    if (
        direct
        and proj_size == 0
        and x.dtype == h0_all.dtype == c0_all.dtype == torch.float32
        and not (training and dropout > 0 and num_layers > 1)
        and T * B > 0
    ):
        plan = _stack_plan(weights, num_layers, D, per_dir, has_bias)
        if plan is not None:
            return _stack_inference(x, h0_all, c0_all, lengths, plan, D, H)
    layer_input = x
    h_n, c_n = [], []
    grads_to_weights = torch.is_grad_enabled() and any(w.requires_grad for w in weights)
    # Training on the CPU kernels: one fused op per layer (see lstm_layer).
    whole_layers = backend == "cpu" and grads_to_weights and proj_size == 0 and record is None
    if whole_layers:
        layer_weights = None
    elif grads_to_weights:
        layer_weights = _layer_weights(weights, num_layers, D, per_dir, has_bias, proj_size, prime=backend == "cpu")
    else:
        layer_weights = _cached_layer_weights(weights, num_layers, D, per_dir, has_bias, proj_size)
    if direct:
        recurrence = _recurrence_impl
    for layer in range(num_layers):
        h0 = h0_all[layer * D : (layer + 1) * D]
        c0 = c0_all[layer * D : (layer + 1) * D]
        if whole_layers:
            own = weights[layer * D * per_dir : (layer + 1) * D * per_dir]
            y, hn, cn, _, _ = torch.ops.fastlstm.lstm_layer(layer_input, own, h0, c0, lengths, has_bias)
        else:
            w_ih, bias, w_hh, w_hr = layer_weights[layer]
            flat_in = layer_input.reshape(T * B, layer_input.shape[-1])
            if direct:
                ws = _workspace(T * B * D * 4 * H, x).view(T * B, D * 4 * H) if x.dtype == torch.float32 else None
                gx = _project(flat_in, w_ih, bias, D, ws)
            elif backend == "cpu":
                gx = torch.ops.fastlstm.lstm_input_projection(flat_in, w_ih, bias, D)
            elif bias is not None:
                gx = torch.addmm(bias, flat_in, w_ih.t())
            else:
                gx = flat_in @ w_ih.t()
            gx = gx.view(T, B, D, 4 * H)
            y, hn, cn, gates, cells = recurrence(gx, w_hh, w_hr, h0, c0, lengths, save)
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
