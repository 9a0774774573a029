"""Hypothesis fuzzing of the LSTM ops and module against fastlstm.reference
(and torch.nn.LSTM) over random shapes, strides, lengths and dtypes.
Derandomized with a fixed example budget so CI is reproducible and fast."""

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence

import fastlstm
from fastlstm import _backends, _ext, ops, reference
from fastlstm.testing import assert_parity

FUZZ = settings(derandomize=True, max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
needs_c = pytest.mark.skipif(not _ext.available(), reason="fastlstm._C unavailable")
DTYPES = st.sampled_from([torch.float32, torch.float64])
LAYOUTS = ("contiguous", "transposed", "strided", "expanded", "offset")


def _layout(t: torch.Tensor, how: str) -> torch.Tensor:
    """The same values as ``t`` in another memory layout."""
    if how == "transposed" and t.dim() >= 2:
        return t.transpose(0, 1).contiguous().transpose(0, 1)
    if how == "strided":
        wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    if how == "expanded" and t.numel() and t.shape[0] > 1:
        # Broadcast the first slice along dim 0 (so values change: return them).
        return t[:1].expand_as(t)
    if how == "offset":
        return torch.cat([t.new_zeros(1, *t.shape[1:]), t])[1:]
    return t


@st.composite
def recurrence_case(draw):
    T = draw(st.integers(0, 7))
    B = draw(st.integers(0, 4))
    D = draw(st.integers(1, 2))
    H = draw(st.integers(1, 9))
    P = draw(st.integers(1, H - 1)) if H > 1 and draw(st.booleans()) else H
    dtype = draw(DTYPES)
    lengths = draw(st.none() | st.lists(st.integers(0, T), min_size=B, max_size=B))
    layouts = [draw(st.sampled_from(LAYOUTS)) for _ in range(5)]
    seed = draw(st.integers(0, 2**16))
    return T, B, D, H, P, dtype, lengths, layouts, seed


def _recurrence_inputs(T, B, D, H, P, dtype, lengths, layouts, seed):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    gx = _layout(rnd(T, B, D, 4 * H), layouts[0])
    w_hh = _layout(rnd(D, 4 * H, P) * 0.5, layouts[1])
    w_hr = _layout(rnd(D, P, H) * 0.5, layouts[2]) if P != H else None
    h0 = _layout(rnd(D, B, P), layouts[3])
    c0 = _layout(rnd(D, B, H), layouts[4])
    lens = None if lengths is None else torch.tensor(lengths, dtype=torch.int64).reshape(B)
    return gx, w_hh, w_hr, h0, c0, lens


@needs_c
@FUZZ
@given(recurrence_case(), st.booleans())
def test_fuzz_lstm_recurrence_forward(case, save):
    args = _recurrence_inputs(*case)
    got = ops.lstm_recurrence(*args, save)
    want = reference.lstm_recurrence(*args)
    names = ("y", "h_n", "c_n", "gates", "cells")
    for name, a, e in zip(names[: 5 if save else 3], got, want):
        assert a.shape == e.shape, name
        assert_parity(a, e, name=name)
    if not save:
        assert got[3].numel() == 0 and got[4].numel() == 0


@needs_c
@settings(FUZZ, max_examples=25)
@given(recurrence_case())
def test_fuzz_lstm_recurrence_gradients(case):
    T, B, D, H, P, _, lengths, layouts, seed = case
    args = _recurrence_inputs(T, B, D, H, P, torch.float64, lengths, layouts, seed)
    leaves = [a.detach().clone().requires_grad_() if a is not None and a.dtype.is_floating_point else a for a in args]
    diff = [a for a in leaves if isinstance(a, torch.Tensor) and a.requires_grad]
    g = torch.Generator().manual_seed(seed + 1)
    y, h_n, c_n, _, _ = ops.lstm_recurrence(*leaves, True)
    wy, wh, wc = (torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (y, h_n, c_n))
    loss = (y * wy).sum() + (h_n * wh).sum() + (c_n * wc).sum()
    got = torch.autograd.grad(loss, diff, allow_unused=True)
    y, h_n, c_n, _, _ = reference.lstm_recurrence(*leaves)
    loss = (y * wy).sum() + (h_n * wh).sum() + (c_n * wc).sum()
    want = torch.autograd.grad(loss, diff, allow_unused=True)
    for i, (a, e) in enumerate(zip(got, want)):
        a = torch.zeros_like(diff[i]) if a is None else a
        e = torch.zeros_like(diff[i]) if e is None else e
        assert_parity(a, e, name=f"grad {i}")


@st.composite
def module_case(draw):
    cfg = dict(
        num_layers=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()),
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
    )
    H = draw(st.integers(1, 8))
    if H > 1 and draw(st.booleans()):
        cfg["proj_size"] = draw(st.integers(1, H - 1))
    I = draw(st.integers(1, 6))
    T = draw(st.integers(1, 6))
    B = draw(st.integers(1, 4))
    packed = draw(st.none() | st.lists(st.integers(1, T), min_size=B, max_size=B))
    with_hx = draw(st.booleans())
    layout = draw(st.sampled_from(LAYOUTS))
    dtype = draw(DTYPES)
    return cfg, I, H, T, B, packed, with_hx, layout, dtype, draw(st.integers(0, 2**16))


@FUZZ
@given(module_case(), st.sampled_from(fastlstm.available_backends("cpu")))
def test_fuzz_lstm_module_vs_torch(case, backend):
    cfg, I, H, T, B, packed, with_hx, layout, dtype, seed = case
    # Only combinations the backend runs (triton refuses fp64 and projections; its own tests say so).
    assume(_backends.unavailable_reason(backend, torch.device("cpu"), dtype, proj=cfg.get("proj_size", 0) > 0) is None)
    torch.manual_seed(seed)
    ref = torch.nn.LSTM(I, H, **cfg, dtype=dtype)
    fast = fastlstm.LSTM.from_torch(ref, backend=backend)
    x = _layout(torch.randn(T, B, I, dtype=dtype), layout)
    if cfg["batch_first"]:
        x = x.transpose(0, 1)
    x_r = x.detach().clone().requires_grad_()
    x_f = x.detach().clone().requires_grad_()
    hx = None
    if with_hx:
        n = cfg["num_layers"] * (2 if cfg["bidirectional"] else 1)
        hx = (torch.randn(n, B, cfg.get("proj_size", 0) or H, dtype=dtype), torch.randn(n, B, H, dtype=dtype))
    if packed is not None:
        lens = torch.tensor(packed)
        inp_r = pack_padded_sequence(x_r, lens, batch_first=cfg["batch_first"], enforce_sorted=False)
        inp_f = pack_padded_sequence(x_f, lens, batch_first=cfg["batch_first"], enforce_sorted=False)
    else:
        inp_r, inp_f = x_r, x_f
    out_r, (h_r, c_r) = ref(inp_r, hx)
    out_f, (h_f, c_f) = fast(inp_f, hx)
    if packed is not None:
        out_r, out_f = out_r.data, out_f.data
    for name, a, e in (("out", out_f, out_r), ("h_n", h_f, h_r), ("c_n", c_f, c_r)):
        assert_parity(a, e, name=name)
    loss = lambda o, h, c: (o * o).sum() + h.sum() - 0.5 * c.sum()  # noqa: E731
    g_r = torch.autograd.grad(loss(out_r, h_r, c_r), [x_r, *ref.parameters()])
    g_f = torch.autograd.grad(loss(out_f, h_f, c_f), [x_f, *fast.parameters()])
    for i, (a, e) in enumerate(zip(g_f, g_r)):
        assert_parity(a, e, name=f"grad {i}")


@st.composite
def attention_case(draw):
    B = draw(st.integers(0, 2))
    H = draw(st.integers(1, 3))
    Tq = draw(st.integers(0, 40))
    Tk = draw(st.integers(1, 40)) if Tq else draw(st.integers(0, 40))
    D = draw(st.integers(1, 9))
    Dv = draw(st.integers(1, 9))
    window = draw(st.none() | st.integers(0, 6) | st.tuples(st.integers(0, 6), st.integers(0, 6)))
    global_tokens = draw(st.integers(0, 3))
    mask = draw(st.none() | st.lists(st.booleans(), min_size=B * Tk, max_size=B * Tk))
    layouts = [draw(st.sampled_from(LAYOUTS)) for _ in range(3)]
    return B, H, Tq, Tk, D, Dv, window, global_tokens, mask, layouts, draw(DTYPES), draw(st.integers(0, 2**16))


def _attention_inputs(B, H, Tq, Tk, D, Dv, window, global_tokens, mask, layouts, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    q = _layout(torch.randn(B, H, Tq, D, generator=g, dtype=dtype), layouts[0])
    k = _layout(torch.randn(B, H, Tk, D, generator=g, dtype=dtype), layouts[1])
    v = _layout(torch.randn(B, H, Tk, Dv, generator=g, dtype=dtype), layouts[2])
    pad = None if mask is None else torch.tensor(mask, dtype=torch.bool).reshape(B, Tk)
    return q, k, v, pad


@FUZZ
@given(attention_case(), st.sampled_from(fastlstm.available_backends("cpu")))
def test_fuzz_sparse_attention_vs_reference(case, backend):
    B, H, Tq, Tk, D, Dv, window, global_tokens, mask, layouts, dtype, seed = case
    # Only combinations the backend runs (triton refuses fp64; its own tests say so).
    assume(_backends.unavailable_reason(backend, torch.device("cpu"), dtype, op="sparse_attention", head_dim=max(D, Dv)) is None)
    q, k, v, pad = _attention_inputs(*case)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out, lse = ops.sparse_attention(*leaves, window, global_tokens, None, pad, backend=backend)
    ref_leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    out_r, lse_r = reference.sparse_attention(*ref_leaves, window, global_tokens, None, pad)
    assert_parity(out, out_r, name="out")
    assert torch.equal(torch.isneginf(lse), torch.isneginf(lse_r))
    finite = torch.isfinite(lse_r)
    assert_parity(lse[finite], lse_r[finite], name="lse")
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    got = torch.autograd.grad((out * g.to(dtype)).sum(), leaves, allow_unused=True)
    want = torch.autograd.grad((out_r * g).sum(), ref_leaves, allow_unused=True)
    for name, a, e, leaf in zip("qkv", got, want, leaves):
        a = torch.zeros_like(leaf) if a is None else a
        e = torch.zeros_like(leaf, dtype=torch.float64) if e is None else e
        assert_parity(a, e, dtype=dtype, name=f"d{name}")


# --------------------------------------------------------------------------
# Runtime loader: structure-aware corruption with a *valid* checksum
# (tests/runtime covers truncated files and flipped bytes, which the checksum
# catches; here the file is well formed and its contents lie).
# --------------------------------------------------------------------------

_BAD_INTS = st.sampled_from([-1, 0, 1, 3, 7, 2**16 + 1, 2**31, 2**62])
_BAD_VALUES = _BAD_INTS | st.sampled_from([None, "8", 2.5, [], True, {}])


@st.composite
def runtime_mutation(draw, tensor_names, config):
    kind = draw(st.sampled_from(["config", "tensor-shape", "tensor-dtype", "tensor-drop", "tensor-extra"]))
    if kind == "config":
        layer = draw(st.integers(0, len(config["layers"]) - 1))
        key = draw(st.sampled_from(sorted(config["layers"][layer])))
        return kind, (layer, key, draw(_BAD_VALUES))
    return kind, (draw(st.sampled_from(tensor_names)), draw(st.integers(0, 3)))


def _runtime_fixture(tmp_path_factory):
    import numpy as np
    from torch import nn

    from fastlstm.runtime import format as rt_format

    path = tmp_path_factory.mktemp("rt") / "m.safetensors"
    model = torch.nn.Sequential(nn.LSTM(4, 8, bidirectional=True, num_layers=2), nn.Linear(16, 3))
    fastlstm.export(fastlstm.quantize_dynamic(model), path)
    tensors, config = rt_format.read(path)
    return np, rt_format, tensors, config, path.parent


@needs_c
def test_fuzz_runtime_loader_lying_contents(tmp_path_factory):
    import copy

    np, rt_format, tensors, config, folder = _runtime_fixture(tmp_path_factory)
    import fastlstm.runtime as rt

    x = np.random.default_rng(0).standard_normal((5, 2, 4)).astype(np.float32)
    good = rt.load(folder / "m.safetensors")(x)

    @settings(FUZZ, max_examples=60)
    @given(runtime_mutation(sorted(tensors), config))
    def check(mutation):
        kind, arg = mutation
        t, c = dict(tensors), copy.deepcopy(config)
        if kind == "config":
            layer, key, value = arg
            c["layers"][layer][key] = value
        else:
            name, how = arg
            a = t[name]
            if kind == "tensor-shape":
                t[name] = [a.reshape(-1), a[..., :-1] if a.shape[-1] > 1 else a[:0], np.concatenate([a, a]),
                           a.reshape(1, *a.shape)][how]
            elif kind == "tensor-dtype":
                t[name] = a.astype([np.float64, np.int32, np.int8, np.float32][how])
            elif kind == "tensor-drop":
                del t[name]
            else:
                t[name + ["_x", ".extra", "", "_"][how]] = a
        path = folder / "bad.safetensors"
        rt_format.write(path, t, c)
        try:
            model = rt.load(path)
            out = model(x)
        except (ValueError, TypeError):
            return  # a clear error: fine
        # Loaded and ran: then it must mean what the good file means (e.g. an unused key).
        for a, e in zip(out if isinstance(out, tuple) else (out,), good if isinstance(good, tuple) else (good,)):
            np.testing.assert_array_equal(np.asarray(a if not isinstance(a, tuple) else a[0]),
                                          np.asarray(e if not isinstance(e, tuple) else e[0]),
                                          err_msg=f"{mutation} loaded and ran with a different answer")

    check()
