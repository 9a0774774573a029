"""Runtime layers: numpy in, numpy out, kernels from ``fastlstm._C``.

A layer is built from ``(config, tensors)`` exactly as stored in an exported
file, validates both (ValueError on mismatch), and runs with ``run(x, state)``.
New layer types register themselves with :func:`register_layer`; the model
graph (``fastlstm.runtime.model``) only knows this registry.
"""

from __future__ import annotations

import os

import numpy as np

from fastlstm._ext import NO_BUF, _C, buf
from fastlstm.runtime.quant import PackedWeight, int8_linear, quantize_rows, require_kernels

LAYER_TYPES: dict[str, type] = {}
_threads = [max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))]


def set_num_threads(n: int) -> None:
    """Threads the runtime kernels may use (directions, then batch slices, run in parallel)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    _threads[0] = n


def get_num_threads() -> int:
    return _threads[0]


def register_layer(cls):
    """Class decorator: makes ``cls`` loadable under ``cls.TYPE``; ``cls.KEYS`` lists its config fields
    (anything else in a file's layer config is rejected as corruption). An instance sets
    ``in_features`` and ``out_features`` (None when it returns several outputs and must come last),
    which the model checks from layer to layer."""
    LAYER_TYPES[cls.TYPE] = cls
    return cls


_MAX_SIZE = 1 << 24  # any width or count beyond this cannot come from a real model file


def _need(config: dict, key: str, kind, name: str, low: int = 1):
    """A config field of type ``kind`` (ints within [low, 2**24]); ValueError naming it otherwise."""
    value = config.get(key)
    if key not in config or not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise ValueError(f"{name}: config field {key!r} missing or not {kind.__name__}: {value!r}"[:300])
    if kind is int and not low <= value <= _MAX_SIZE:
        raise ValueError(f"{name}: config field {key!r} = {value} is outside [{low}, {_MAX_SIZE}]")
    return value


def _dtype_field(config: dict, name: str) -> str:
    dtype = config.get("dtype")
    if dtype not in ("float32", "int8") or not isinstance(dtype, str):
        raise ValueError(f"{name}: config field 'dtype' must be 'float32' or 'int8', got {dtype!r}"[:300])
    return dtype


def _tensor(tensors: dict, key: str, shape: tuple, dtype, name: str) -> np.ndarray:
    if key not in tensors:
        raise ValueError(f"{name}: tensor {key!r} is missing")
    t = tensors[key]
    if tuple(t.shape) != tuple(shape) or t.dtype != np.dtype(dtype):
        raise ValueError(f"{name}: tensor {key!r} is {t.dtype} {list(t.shape)}, expected {np.dtype(dtype)} {list(shape)}")
    return np.ascontiguousarray(t)


def _no_extra(tensors: dict, expected: set, name: str) -> None:
    """A tensor the config does not call for (e.g. a bias with ``bias: false``) is corruption, not ignored."""
    extra = set(tensors) - expected
    if extra:
        raise ValueError(f"{name}: tensors {sorted(extra)[:5]} are not part of this layer's config")


@register_layer
class LSTMStack:
    """Stacked, optionally bidirectional and projected LSTM; ``dtype`` "float32" or "int8".

    Tensors per layer l (D directions, G = 4H, P = proj or H, I_l the layer's input):
    ``l{l}.w_ih`` (D, G, I_l), ``l{l}.w_hh`` (D, G, P), ``l{l}.bias`` (D, G) = b_ih + b_hh
    (when bias), ``l{l}.w_hr`` (D, P, H) (when proj); int8 weights add ``*_scale`` (D, rows).

    >>> stack = LSTMStack(config, tensors)
    >>> y, (h_n, c_n) = stack.run(np.zeros((10, 1, 32), np.float32))
    """

    TYPE = "lstm"
    KEYS = ("input_size", "hidden_size", "num_layers", "bidirectional", "proj_size", "bias", "batch_first", "dtype")

    def __init__(self, config: dict, tensors: dict[str, np.ndarray]) -> None:
        require_kernels()
        name = f"lstm layer {config.get('name', '?')!r}"
        self.config = dict(config)
        self.input_size = _need(config, "input_size", int, name)
        self.hidden_size = H = _need(config, "hidden_size", int, name)
        self.num_layers = _need(config, "num_layers", int, name)
        self.bidirectional = _need(config, "bidirectional", bool, name)
        self.proj_size = _need(config, "proj_size", int, name, low=0)
        self.bias = _need(config, "bias", bool, name)
        self.batch_first = _need(config, "batch_first", bool, name)
        self.dtype = _dtype_field(config, name)
        if self.proj_size >= H:
            raise ValueError(f"{name}: config field 'proj_size' = {self.proj_size} must be < hidden_size {H}")
        D = self.D = 2 if self.bidirectional else 1
        P = self.P = self.proj_size or H
        G = 4 * H
        self.in_features, self.out_features = self.input_size, D * P
        expected = set()
        for layer in range(self.num_layers):
            names = ["w_ih", "w_hh"] + (["w_hr"] if self.proj_size else [])
            expected.update(f"l{layer}.{w}" for w in names)
            if self.dtype == "int8":
                expected.update(f"l{layer}.{w}_scale" for w in names)
            if self.bias:
                expected.add(f"l{layer}.bias")
            if len(expected) > len(tensors):
                break  # more layers than tensors: the missing one is named below
        _no_extra(tensors, expected, name)
        self.layers = []
        for layer in range(self.num_layers):
            I = self.input_size if layer == 0 else D * P
            k = f"l{layer}."
            entry = {"I": I}
            if self.bias:
                entry["bias"] = _tensor(tensors, k + "bias", (D, G), np.float32, name)
            else:
                entry["bias"] = None
            if self.dtype == "float32":
                w_ih = _tensor(tensors, k + "w_ih", (D, G, I), np.float32, name)
                entry["w_ih_t"] = np.ascontiguousarray(w_ih.reshape(D * G, I).T)
                entry["bias_cat"] = None if entry["bias"] is None else entry["bias"].reshape(D * G)
                entry["w_hh"] = _tensor(tensors, k + "w_hh", (D, G, P), np.float32, name)
                entry["w_hr"] = _tensor(tensors, k + "w_hr", (D, P, H), np.float32, name) if self.proj_size else None
            else:
                for w, rows, cols in (("w_ih", G, I), ("w_hh", G, P)) + ((("w_hr", P, H),) if self.proj_size else ()):
                    q = _tensor(tensors, k + w, (D, rows, cols), np.int8, name)
                    s = _tensor(tensors, k + w + "_scale", (D, rows), np.float32, name)
                    entry[w] = PackedWeight(q, s)
                if not self.proj_size:
                    entry["w_hr"] = None
            self.layers.append(entry)

    def _layer_fp32(self, e, x, h0, c0, lengths, T, B):
        D, H, P, G = self.D, self.hidden_size, self.P, 4 * self.hidden_size
        gx = x.reshape(T * B, e["I"]) @ e["w_ih_t"]
        if e["bias_cat"] is not None:
            gx += e["bias_cat"]
        y = np.empty((T, B, D, P), np.float32)
        hn = np.empty((D, B, P), np.float32)
        cn = np.empty((D, B, H), np.float32)
        _C.lstm_recurrence_fwd("float32", buf(gx), buf(e["w_hh"]), buf(e["w_hr"]), buf(h0), buf(c0), buf(lengths),
                               buf(y), buf(hn), buf(cn), NO_BUF, NO_BUF, T, B, D, H, P, get_num_threads())
        return y, hn, cn

    def _layer_int8(self, e, x, h0, c0, lengths, T, B):
        D, H, P = self.D, self.hidden_size, self.P
        y = np.empty((T, B, D, P), np.float32)
        hn = np.empty((D, B, P), np.float32)
        cn = np.empty((D, B, H), np.float32)
        w_ih, w_hh, w_hr = e["w_ih"], e["w_hh"], e["w_hr"]
        none = NO_BUF
        _C.int8_lstm_fwd(
            buf(x), buf(w_ih.packed), buf(w_ih.scale), buf(w_ih.rowsum),
            buf(w_hh.packed), buf(w_hh.scale), buf(w_hh.rowsum),
            buf(w_hr.packed) if w_hr else none, buf(w_hr.scale) if w_hr else none, buf(w_hr.rowsum) if w_hr else none,
            buf(e["bias"]), buf(h0), buf(c0), buf(lengths), buf(y), buf(hn), buf(cn),
            T, B, D, e["I"], H, P, get_num_threads(),
        )
        return y, hn, cn

    def run_direction(self, layer: int, direction: int, x: np.ndarray, state=None, reverse: bool = False):
        """One direction of one layer over an unbatched ``x (T, I)`` from ``state`` ((P,), (H,)) or zeros;
        ``reverse`` runs it from the last step to the first. Returns ``(y (T, P), (h (P,), c (H,)))``.
        (The streaming API runs the two directions of a Bi-LSTM over different spans.)"""
        e, H, P, G = self.layers[layer], self.hidden_size, self.P, 4 * self.hidden_size
        x = np.ascontiguousarray(x[::-1] if reverse else x, dtype=np.float32)
        T = x.shape[0]
        if x.ndim != 2 or x.shape[1] != e["I"] or T == 0:
            raise ValueError(f"lstm: run_direction needs (T > 0, {e['I']}) input, got {x.shape}")
        h0 = np.zeros((1, 1, P), np.float32) if state is None else np.ascontiguousarray(state[0], np.float32).reshape(1, 1, P)
        c0 = np.zeros((1, 1, H), np.float32) if state is None else np.ascontiguousarray(state[1], np.float32).reshape(1, 1, H)
        d = slice(direction, direction + 1)
        y = np.empty((T, 1, 1, P), np.float32)
        hn = np.empty((1, 1, P), np.float32)
        cn = np.empty((1, 1, H), np.float32)
        bias = None if e["bias"] is None else np.ascontiguousarray(e["bias"][d])
        if self.dtype == "float32":
            gx = np.ascontiguousarray(x @ e["w_ih_t"][:, direction * G:(direction + 1) * G])
            if bias is not None:
                gx += bias[0]
            w_hr = None if e["w_hr"] is None else e["w_hr"][d]
            _C.lstm_recurrence_fwd("float32", buf(gx), buf(e["w_hh"][d]), buf(w_hr), buf(h0), buf(c0), buf(None),
                                   buf(y), buf(hn), buf(cn), buf(None), buf(None), T, 1, 1, H, P, 1)
        else:
            w = [e["w_ih"], e["w_hh"]] + ([e["w_hr"]] if e["w_hr"] else [])
            parts = [buf(p) for wt in w for p in (wt.packed[d], wt.scale[d], wt.rowsum[d])]
            parts += [buf(None)] * (9 - len(parts))
            _C.int8_lstm_fwd(buf(x), *parts, buf(bias), buf(h0), buf(c0), buf(None), buf(y), buf(hn), buf(cn),
                             T, 1, 1, e["I"], H, P, 1)
        y = y.reshape(T, P)
        return (y[::-1] if reverse else y), (hn.reshape(P), cn.reshape(H))

    def run(self, x: np.ndarray, state=None, lengths: np.ndarray | None = None):
        """x: (T, B, I) (``(B, T, I)`` when batch_first) or (T, I); state: (h0 (L*D, B, P), c0 (L*D, B, H)) or None;
        lengths: (B,) int64 or None. Returns (output (T, B, D*P), (h_n, c_n)), batch_first/unbatched like the input."""
        x = np.asarray(x)
        if x.dtype.kind not in "fiu":
            raise TypeError(f"lstm: input must be a numeric array, got dtype {x.dtype}")
        if x.ndim not in (2, 3):
            raise ValueError(f"lstm: expected a 2-D or 3-D input, got {x.ndim}-D")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"lstm: input.shape[-1] must be {self.input_size}, got {x.shape[-1]}")
        batched = x.ndim == 3
        if not batched:
            x = x[:, None, :]
        elif self.batch_first:
            x = x.transpose(1, 0, 2)
        x = np.ascontiguousarray(x, dtype=np.float32)
        T, B = x.shape[0], x.shape[1]
        if T == 0:
            raise ValueError("lstm: sequence length must be > 0")
        L, D, H, P = self.num_layers, self.D, self.hidden_size, self.P
        if state is None:
            h0_all = np.zeros((L * D, B, P), np.float32)
            c0_all = np.zeros((L * D, B, H), np.float32)
        else:
            h0_all, c0_all = (np.asarray(s, dtype=np.float32) for s in state)
            if not batched:
                h0_all, c0_all = h0_all[:, None], c0_all[:, None]
            if h0_all.shape != (L * D, B, P) or c0_all.shape != (L * D, B, H):
                raise ValueError(f"lstm: state shapes {h0_all.shape}, {c0_all.shape}; expected {(L * D, B, P)}, {(L * D, B, H)}")
        if lengths is not None:
            lengths = np.asarray(lengths)
            if lengths.dtype.kind not in "iu" or lengths.shape != (B,):
                raise ValueError(f"lstm: lengths must be ({B},) integers, got {lengths.dtype} {lengths.shape}")
            lengths = np.ascontiguousarray(lengths, dtype=np.int64)
            if B and not (lengths.min() >= 1 and lengths.max() <= T):
                raise ValueError(f"lstm: lengths must lie in [1, {T}], got {lengths.min()}..{lengths.max()}")
        if B == 0:
            out = np.zeros((0, T, D * P) if batched and self.batch_first else (T, 0, D * P), np.float32)
            return out, (h0_all.copy(), c0_all.copy())
        step = self._layer_fp32 if self.dtype == "float32" else self._layer_int8
        h_n, c_n = [], []
        for layer, e in enumerate(self.layers):
            h0 = np.ascontiguousarray(h0_all[layer * D : (layer + 1) * D])
            c0 = np.ascontiguousarray(c0_all[layer * D : (layer + 1) * D])
            y, hn, cn = step(e, x, h0, c0, lengths, T, B)
            x = y.reshape(T, B, D * P)
            h_n.append(hn)
            c_n.append(cn)
        h_n, c_n = np.concatenate(h_n), np.concatenate(c_n)
        if not batched:
            return x[:, 0], (h_n[:, 0], c_n[:, 0])
        if self.batch_first:
            x = x.transpose(1, 0, 2)
        return x, (h_n, c_n)

    def nbytes(self) -> int:
        total = 0
        for e in self.layers:
            for v in e.values():
                total += v.nbytes() if isinstance(v, PackedWeight) else getattr(v, "nbytes", 0)
        return total


@register_layer
class Linear:
    """``y = x @ W.T + b`` over the last axis; ``dtype`` "float32" or "int8" (per-row activations).

    Tensors: ``weight`` (N, K) float32, or int8 with ``weight_scale`` (N,); ``bias`` (N,) when bias.

    >>> lin = Linear({"in_features": 4, "out_features": 2, "bias": False, "dtype": "float32"},
    ...              {"weight": np.ones((2, 4), np.float32)})
    """

    TYPE = "linear"
    KEYS = ("in_features", "out_features", "bias", "dtype")

    def __init__(self, config: dict, tensors: dict[str, np.ndarray]) -> None:
        name = f"linear layer {config.get('name', '?')!r}"
        self.config = dict(config)
        self.in_features = K = _need(config, "in_features", int, name)
        self.out_features = N = _need(config, "out_features", int, name)
        has_bias = _need(config, "bias", bool, name)
        self.dtype = _dtype_field(config, name)
        _no_extra(tensors, {"weight"} | ({"bias"} if has_bias else set())
                  | ({"weight_scale"} if self.dtype == "int8" else set()), name)
        self.bias = _tensor(tensors, "bias", (N,), np.float32, name) if has_bias else None
        if self.dtype == "float32":
            self.weight_t = np.ascontiguousarray(_tensor(tensors, "weight", (N, K), np.float32, name).T)
        elif self.dtype == "int8":
            require_kernels()
            q = _tensor(tensors, "weight", (N, K), np.int8, name)
            s = _tensor(tensors, "weight_scale", (N,), np.float32, name)
            self.weight = PackedWeight(q[None], s[None])
            self.q_weight = q  # row-major int8, for layers that fold weights at load

    def run(self, x: np.ndarray, state=None, lengths=None):
        x = np.asarray(x, dtype=np.float32)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"linear: input.shape[-1] must be {self.in_features}, got {x.shape}")
        flat = x.reshape(-1, self.in_features)
        if self.dtype == "float32":
            out = flat @ self.weight_t
            if self.bias is not None:
                out += self.bias
        else:
            out = int8_linear(flat, self.weight, self.bias, threads=get_num_threads())
        return out.reshape(*x.shape[:-1], self.out_features), None


def lstm_tensors_from_flat(weights: list[np.ndarray], config: dict, dtype: str) -> dict[str, np.ndarray]:
    """Runtime tensors of an LSTM stack from torch.nn.LSTM's ``_flat_weights`` (as numpy float32)."""
    D = 2 if config["bidirectional"] else 1
    per_dir = 2 + (2 if config["bias"] else 0) + (1 if config["proj_size"] else 0)
    out = {}
    for layer in range(config["num_layers"]):
        dirs = [weights[(layer * D + d) * per_dir : (layer * D + d + 1) * per_dir] for d in range(D)]
        k = f"l{layer}."
        mats = {"w_ih": np.stack([w[0] for w in dirs]), "w_hh": np.stack([w[1] for w in dirs])}
        if config["proj_size"]:
            mats["w_hr"] = np.stack([w[-1] for w in dirs])
        if config["bias"]:
            out[k + "bias"] = np.stack([w[2] + w[3] for w in dirs]).astype(np.float32)
        for name, m in mats.items():
            if dtype == "int8":
                q, s = quantize_rows(m)
                out[k + name], out[k + name + "_scale"] = q, s
            else:
                out[k + name] = np.ascontiguousarray(m, dtype=np.float32)
    return out
