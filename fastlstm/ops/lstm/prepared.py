"""Prepared weights: the forms the CPU kernels read, built once per set of parameters.

A :class:`PreparedWeights` holds, for one set of LSTM parameters (nn.LSTM's
``_flat_weights`` order), everything derived from them that a kernel reads:
per layer the concatenated input weights of both directions, the fused bias
``b_ih + b_hh``, the stacked recurrent weights, their packed (SIMD) layouts,
and the one-call stack plan. Each field is built on first use.

Lifetimes, by construction:

- The prepared object OWNS every buffer whose address goes into a kernel; the
  op holds the object (a local) until the kernel returns, so evicting it from
  the registry mid-call frees nothing the call reads.
- One registry (:data:`REGISTRY`) keeps prepared objects between calls, keyed
  on every tensor's address, shape, strides and dtype plus the CPU level; the
  parameters' version counters live in the entry, and an entry whose
  parameters changed (optimizer step, load_state_dict, in-place edit) is
  rebuilt in place, into its old buffers.
- An entry never keeps the parameters alive, and never outlives them: a
  finalizer on every parameter drops it when that tensor dies, so no other
  tensor can later be mistaken for it at a reused address. Tensors without a
  version counter (inference tensors), non-leaf tensors (parametrize and
  weight_norm outputs while training) and traced or compiled calls run
  uncached: their prepared object lives for the call only.
- The registry is bounded in bytes (``FASTLSTM_CACHE_MB``, default 256) and in
  entries; :func:`empty_cache` clears it, the workspaces, the saved-gates pool
  and every cache registered with :func:`register_cache`.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from typing import Callable

import torch
from torch import Tensor, nn

from fastlstm import _ext
from fastlstm.ops._alloc import release_pool


def capability() -> str:
    return _ext._C.cpu_capability() if _ext._C is not None else "none"


def tensor_key(tensors) -> tuple | None:
    """The registry key part of ``tensors`` (address, shape, strides, dtype each),
    or None when they must run uncached (see the module docstring)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return None
    key = []
    for t in tensors:
        # (is_cpu, not device.type: this runs on every call, 16 tensors for 2 bidirectional layers.)
        if type(t) not in _PLAIN or not t.is_cpu or t.is_inference() or not t.is_leaf:
            return None
        key.append((t.data_ptr(), t.shape, t.stride(), t.dtype))
    return tuple(key)


_PLAIN = (Tensor, nn.Parameter)


def versions(tensors) -> tuple | None:
    try:
        return tuple(t._version for t in tensors)
    except RuntimeError:  # inference tensors carry no version counter
        return None


class Registry:
    """The one cache of prepared objects: least recently used first out, bounded
    in bytes and entries, entries dropped when any of their tensors dies."""

    def __init__(self, max_bytes: int, max_entries: int) -> None:
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self._entries: OrderedDict = OrderedDict()
        self._finalizers: dict[int, list] = {}
        # Reentrant: freeing an entry can free tensors whose own entries' finalizers call _drop.
        self._lock = threading.RLock()
        self.nbytes = 0

    def lookup(self, key, tensors, factory: Callable):
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry
        entry = factory()
        entry.registry = self
        dead = []
        with self._lock:
            other = self._entries.get(key)
            if other is not None:  # another thread made it first
                return other
            self._entries[key] = entry
            self.nbytes += entry.nbytes
            fins = []
            for t in tensors:
                fin = weakref.finalize(t, self._drop, key, id(entry))
                fin.atexit = False
                fins.append(fin)
            self._finalizers[id(entry)] = fins
            self._evict(dead)
        del dead  # evicted entries are freed here, outside the lock
        return entry

    def grew(self, entry, nbytes: int) -> None:
        """``entry`` now owns ``nbytes`` more (its lazily built fields)."""
        dead = []
        with self._lock:
            if self._finalizers.get(id(entry)) is not None:
                self.nbytes += nbytes
                self._evict(dead)
        del dead

    def _drop(self, key, ident) -> None:
        dead = []
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and id(entry) == ident:
                dead.append(self._remove(key))
        del dead

    def _remove(self, key):
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.nbytes -= entry.nbytes
            for fin in self._finalizers.pop(id(entry), ()):
                fin.detach()
        return entry

    def _evict(self, dead: list) -> None:
        while self._entries and (self.nbytes > self.max_bytes or len(self._entries) > self.max_entries):
            dead.append(self._remove(next(iter(self._entries))))

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list:
        with self._lock:
            return list(self._entries.values())

    def clear(self) -> None:
        dead = []
        with self._lock:
            for key in list(self._entries):
                dead.append(self._remove(key))
        del dead


REGISTRY = Registry(int(os.environ.get("FASTLSTM_CACHE_MB", "256")) << 20, 128)


def pack(w: Tensor, D: int, H: int, P: int, forward_only: bool, into: Tensor | None = None) -> Tensor | None:
    """``w`` (D, 4H, P) packed for the active kernel (``forward_only``: w_ih, P =
    input size), written over ``into`` when it has the size; None when the
    active kernel reads the weights directly."""
    if w.dtype != torch.float32 or _ext._C is None:
        return None
    n = _ext._C.lstm_packed_weights_size("float32", D, H, P, forward_only)
    if n == 0:
        return None
    source = w.detach().contiguous()
    packed = into if into is not None and into.numel() == n else torch.empty(n, dtype=torch.float32)
    _ext._C.lstm_pack_weights("float32", _ext.buf(source), _ext.buf(packed), D, H, P, forward_only)
    return packed


class _Entry:
    """Lazily built fields, refreshed in place when the sources' versions move."""

    def __init__(self) -> None:
        self.registry: Registry | None = None
        self.versions = None
        self.nbytes = 0
        self._fields: dict = {}
        self._spare: dict = {}
        self._lock = threading.RLock()

    def sync(self, tensors) -> None:
        current = versions(tensors)
        if current is None or current != self.versions:
            with self._lock:
                if current is None or current != self.versions:
                    if current is None or not self._rewrite(tensors):
                        # Rebuilt into the old buffers: a fresh multi-megabyte buffer
                        # would page-fault in (about 0.2 ms per MB here).
                        self._spare.update(self._fields)
                        self._fields = {}
                    self.versions = current

    def _rewrite(self, tensors) -> bool:
        """Rewrites every built field from ``tensors`` in place, if this kind of
        entry can; False: the fields are rebuilt one by one on next use."""
        return False

    def _field(self, name, build: Callable):
        value = self._fields.get(name, _MISSING)
        if value is not _MISSING:
            return value
        with self._lock:
            value = self._fields.get(name, _MISSING)
            if value is _MISSING:
                spare = self._spare.pop(name, None)
                value = build(spare)
                self._fields[name] = value
                grown = _nbytes(value) - _nbytes(spare)  # the spare's bytes were counted already
                self.nbytes += grown
                if self.registry is not None:
                    self.registry.grew(self, grown)
        return value


_MISSING = object()


def _nbytes(value) -> int:
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, tuple):
        return sum(_nbytes(v) for v in value)
    return 0


def _into(spare: Tensor | None, built: Tensor) -> Tensor:
    """``built`` copied into ``spare`` when that has its shape and dtype."""
    if spare is None or spare.shape != built.shape or spare.dtype != built.dtype or spare.data_ptr() == built.data_ptr():
        return built
    return spare.copy_(built)


def _build(fn: Callable):
    with torch.inference_mode(False), torch.no_grad():
        return fn()


class PreparedTensor(_Entry):
    """One weight tensor (D, 4H, P) packed for the kernels (the ops that take
    ``w_hh`` or ``w_ih`` tensors directly)."""

    def __init__(self, D: int, H: int, P: int, forward_only: bool) -> None:
        super().__init__()
        self.dims = (D, H, P, forward_only)

    def packed(self, w: Tensor) -> Tensor | None:
        return self._field("packed", lambda spare: _build(lambda: pack(w, *self.dims, into=spare)))


def prepared_tensor(w: Tensor, D: int, H: int, P: int, forward_only: bool = False) -> PreparedTensor:
    key = tensor_key((w,)) if w.dtype == torch.float32 else None
    if key is None:
        return PreparedTensor(D, H, P, forward_only)
    entry = REGISTRY.lookup(("tensor", capability(), D, H, P, forward_only) + key, (w,),
                            lambda: PreparedTensor(D, H, P, forward_only))
    entry.sync((w,))
    return entry


class PreparedWeights(_Entry):
    """The kernels' forms of one set of LSTM parameters (see the module docstring).
    ``weights`` are passed to every accessor by the caller, who holds them."""

    def __init__(self, num_layers: int, D: int, has_bias: bool, proj_size: int) -> None:
        super().__init__()
        self.num_layers, self.D, self.has_bias, self.proj_size = num_layers, D, has_bias, proj_size
        self.per_dir = 2 + (2 if has_bias else 0) + (1 if proj_size > 0 else 0)

    def directions(self, weights, layer: int) -> list:
        D, n = self.D, self.per_dir
        return [weights[(layer * D + d) * n : (layer * D + d + 1) * n] for d in range(D)]

    def layer(self, weights, layer: int) -> tuple:
        """(w_ih (D*4H, I), fused bias (D*4H) or None, w_hh (D, 4H, P), w_hr (D, P, H)
        or None) of ``layer``, contiguous, without autograd."""

        def build(spare):
            parts = _build(lambda: layer_parts(self.directions(weights, layer), self.has_bias, self.proj_size > 0))
            parts = tuple(None if t is None else t.detach() for t in parts)
            spare = spare or (None,) * 4
            return tuple(None if t is None else _into(s, t) for s, t in zip(spare, parts))

        return self._field(("layer", layer), build)

    def packed(self, weights, layer: int) -> tuple:
        """(w_ih packed, w_hh packed) of ``layer``; each None where the active kernel reads plain weights."""

        def build(spare):
            w_ih, _, w_hh, _ = self.layer(weights, layer)
            H, P = w_hh.shape[1] // 4, w_hh.shape[2]
            spare = spare or (None, None)
            return _build(lambda: (pack(w_ih, self.D, H, w_ih.shape[1], True, spare[0]),
                                   pack(w_hh, self.D, H, P, False, spare[1])))

        return self._field(("packed", layer), build)

    def _rewrite(self, weights) -> bool:
        """A built fp32 stack is rewritten by one ``_C`` call (an optimizer step
        per training step: 77 us against 180 us through torch ops for a
        bidirectional H = 64 layer)."""
        plan = self._fields.get("stack_plan")
        if plan is None or self.proj_size or any(type(w) not in _PLAIN or not w.is_contiguous() for w in weights):
            return False
        buf = _ext.buf
        params, outputs = [], []
        for layer in range(self.num_layers):
            w_ih, bias, w_hh, _ = self._fields[("layer", layer)]
            packed_ih, packed_hh = self._fields[("packed", layer)]
            params.append([buf(w) for d in self.directions(weights, layer) for w in d])
            outputs.append((buf(w_ih), buf(bias), buf(w_hh), buf(packed_ih), buf(packed_hh)))
        H = weights[1].shape[0] // 4
        _ext._C.lstm_prepare_stack(params, outputs, weights[0].shape[1], self.D, H, self.has_bias)
        return True

    def stack_plan(self, weights) -> list | None:
        """Per layer ``(w_ih packed, bias, w_hh, w_hh packed)`` buffers for
        ``_C.lstm_stack_fwd`` (fp32, no projection), or None when the active
        kernel takes no packed weights. The buffers are this object's."""

        def build(_spare):
            plan = []
            for layer in range(self.num_layers):
                _, bias, w_hh, _ = self.layer(weights, layer)
                packed_ih, packed_hh = self.packed(weights, layer)
                if packed_ih is None or packed_hh is None:
                    return None
                plan.append((_ext.buf(packed_ih), _ext.buf(bias), _ext.buf(w_hh), _ext.buf(packed_hh)))
            return plan

        return self._field("stack_plan", build)


def layer_parts(dirs: list, has_bias: bool, has_proj: bool) -> tuple:
    """(w_ih (D*4H, I), fused bias or None, w_hh (D, 4H, P), w_hr or None) from one
    layer's per-direction parameters, with differentiable ops."""
    w_ih = torch.cat([w[0] for w in dirs]) if len(dirs) == 2 else dirs[0][0]
    bias = None
    if has_bias:
        bias = torch.cat([w[2] + w[3] for w in dirs]) if len(dirs) == 2 else dirs[0][2] + dirs[0][3]
    w_hh = torch.stack([w[1] for w in dirs]) if len(dirs) == 2 else dirs[0][1].unsqueeze(0)
    w_hr = (torch.stack([w[-1] for w in dirs]) if len(dirs) == 2 else dirs[0][-1].unsqueeze(0)) if has_proj else None
    return tuple(None if t is None else t.contiguous() for t in (w_ih, bias, w_hh, w_hr))


def prepared_weights(weights, num_layers: int, D: int, has_bias: bool, proj_size: int) -> PreparedWeights:
    """The registry's prepared object for ``weights`` (refreshed to their current
    versions), or a fresh one for this call only when they run uncached."""
    key = tensor_key(weights) if weights and weights[0].dtype == torch.float32 else None
    if key is None:
        return PreparedWeights(num_layers, D, has_bias, proj_size)
    entry = REGISTRY.lookup(("weights", capability(), num_layers, D, has_bias, proj_size) + key, weights,
                            lambda: PreparedWeights(num_layers, D, has_bias, proj_size))
    entry.sync(weights)
    return entry


_WORKSPACE = threading.local()


def workspace(numel: int, like: Tensor, slot: str = "gx") -> Tensor:
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


_OTHER_CACHES: list[Callable[[], None]] = []


def register_cache(clear: Callable[[], None]) -> None:
    """Adds a cache of derived weights kept outside the registry (a model's own)
    to those :func:`empty_cache` clears."""
    _OTHER_CACHES.append(clear)


def empty_cache() -> None:
    """Frees the CPU buffers fastlstm keeps between calls: the prepared weights
    (packed, concatenated, fused), the pool of large saved gate activations,
    the calling thread's workspaces and the models' registered caches. They are
    built again on next use. The prepared weights notice changes through the
    parameters' version counters (optimizer steps, in-place ops,
    load_state_dict); after editing weights through ``.data``, which bypasses
    them, call this.

    >>> fastlstm.ops.empty_cache()
    """
    for slot in list(vars(_WORKSPACE)):
        delattr(_WORKSPACE, slot)
    release_pool()
    REGISTRY.clear()
    for clear in _OTHER_CACHES:
        clear()
