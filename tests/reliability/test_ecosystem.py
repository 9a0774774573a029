"""fastlstm in the tools users already have: torch.compile with dynamic
sequence length, torch.export, ONNX (standard LSTM operator, run in ONNX
Runtime), CPU autocast (bf16), state_dict round trips and torch.save/load."""

import io
import os
import pickle

import pytest
import torch
from torch import nn

import fastlstm
import fastlstm.onnx
from fastlstm.testing import assert_parity

CPU_BACKENDS = [b for b in fastlstm.available_backends("cpu") if b != "reference"] or ["reference"]


class Tagger(nn.Module):
    """A small model built on fastlstm.LSTM (embedding-free sequence tagger)."""

    def __init__(self, bidirectional=True, num_layers=2, backend=None):
        super().__init__()
        self.lstm = fastlstm.LSTM(4, 8, num_layers=num_layers, bidirectional=bidirectional, batch_first=True,
                                  backend=backend)
        self.head = nn.Linear(8 * (2 if bidirectional else 1), 3)

    def forward(self, x):
        out, (h, c) = self.lstm(x)
        return self.head(out), h, c


# --------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_compile_fullgraph_dynamic_seq_len_no_recompile(backend):
    if backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("with dynamic shapes under Triton's interpreter, dynamo runs the interpreted kernel on "
                    "fake tensors (reading their data pointers); compiled Triton kernels are opaque to it")
    # aot_eager traces the fake kernels and autograd exactly as inductor does;
    # inductor's C++ codegen adds minutes on a 2-core CI machine and tests
    # nothing of fastlstm's beyond that.
    torch._dynamo.reset()
    model = Tagger(backend=backend)
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    x = torch.randn(2, 5, 4, requires_grad=True)
    torch.testing.assert_close(compiled(x), model(x))
    # Every further sequence length must reuse the graph: recompiling raises.
    with torch.compiler.set_stance("fail_on_recompile"):
        for T in (3, 9, 17):
            x = torch.randn(2, T, 4, requires_grad=True)
            got = compiled(x)
            want = model(x)
            for a, e in zip(got, want):
                assert_parity(a, e)
            g_got = torch.autograd.grad(got[0].sum() + got[1].sum(), [x, *model.parameters()])
            g_want = torch.autograd.grad(want[0].sum() + want[1].sum(), [x, *model.parameters()])
            for a, e in zip(g_got, g_want):
                assert_parity(a, e)


# --------------------------------------------------------------------------
# torch.export
# --------------------------------------------------------------------------


def test_torch_export_dynamic_seq_len():
    model = Tagger().eval()
    T = torch.export.Dim("T", min=2, max=1024)
    ep = torch.export.export(model, (torch.randn(2, 6, 4),), dynamic_shapes={"x": {1: T}})
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert any(t.startswith("fastlstm.lstm_") for t in targets), targets
    for steps in (2, 6, 13):
        x = torch.randn(2, steps, 4)
        for a, e in zip(ep.module()(x), model(x)):
            assert_parity(a, e)
    # The exported program survives a save/load round trip.
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    buf.seek(0)
    loaded = torch.export.load(buf)
    x = torch.randn(2, 7, 4)
    for a, e in zip(loaded.module()(x), model(x)):
        assert_parity(a, e)


# --------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------

try:  # the ONNX tests need the `peers` extra; everything else in this file runs without it
    import onnx
    import onnxruntime as ort
except ImportError:  # pragma: no cover
    onnx = ort = None
needs_onnx = pytest.mark.skipif(ort is None, reason="onnx and onnxruntime are not installed (pip install .[peers])")

ONNX_CFGS = {
    "uni": dict(),
    "bi-2layer-batchfirst": dict(num_layers=2, bidirectional=True, batch_first=True),
    "no-bias": dict(bias=False),
}


@needs_onnx
@pytest.mark.parametrize("with_hx", [False, True], ids=["hx-none", "hx"])
@pytest.mark.parametrize("cfg", ONNX_CFGS.values(), ids=ONNX_CFGS.keys())
def test_onnx_export_runs_in_onnxruntime(cfg, with_hx, tmp_path):
    model = fastlstm.LSTM(4, 6, **cfg).eval()
    D = 2 if cfg.get("bidirectional") else 1
    n = cfg.get("num_layers", 1) * D
    bf = cfg.get("batch_first", False)

    def make(T, B):
        x = torch.randn(B, T, 4) if bf else torch.randn(T, B, 4)
        hx = (torch.randn(n, B, 6), torch.randn(n, B, 6)) if with_hx else None
        return x, hx

    x, hx = make(5, 3)
    args = (x, hx) if with_hx else (x,)
    names = ["x", "h0", "c0"] if with_hx else ["x"]
    seq_axes = {0: "B", 1: "T"} if bf else {0: "T", 1: "B"}
    dyn = {"x": seq_axes, "y": seq_axes, "h_n": {1: "B"}, "c_n": {1: "B"}}
    if with_hx:
        dyn.update(h0={1: "B"}, c0={1: "B"})
    path = tmp_path / "lstm.onnx"
    fastlstm.onnx.export(model, args, path, input_names=names, output_names=["y", "h_n", "c_n"],
                         dynamic_axes=dyn)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    ops = [node.op_type for node in graph.graph.node]
    assert ops.count("LSTM") == cfg.get("num_layers", 1), ops
    assert isinstance(model, fastlstm.LSTM)  # the caller's model is untouched

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for T, B in ((5, 3), (9, 1), (2, 4)):
        x, hx = make(T, B)
        feeds = {"x": x.numpy()}
        if with_hx:
            feeds.update(h0=hx[0].numpy(), c0=hx[1].numpy())
        got = session.run(None, feeds)
        with torch.no_grad():
            out, (h_n, c_n) = model(x, hx)
        for a, e in zip(got, (out, h_n, c_n)):
            torch.testing.assert_close(torch.from_numpy(a), e, atol=1e-5, rtol=1e-5)


@needs_onnx
def test_onnx_export_model_with_head_and_cell(tmp_path):
    class WithCell(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = Tagger(bidirectional=True, num_layers=1)
            self.cell = fastlstm.LSTMCell(3, 5)

        def forward(self, x):
            logits, _, _ = self.body(x)
            h, c = self.cell(logits[:, -1])
            return logits, h

    model = WithCell().eval()
    x = torch.randn(2, 7, 4)
    path = tmp_path / "model.onnx"
    fastlstm.onnx.export(model, (x,), path, input_names=["x"], output_names=["logits", "h"],
                         dynamic_axes={"x": {0: "B", 1: "T"}})
    assert "LSTM" in [node.op_type for node in onnx.load(str(path)).graph.node]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 11, 4)
    with torch.no_grad():
        want = model(x)
    for a, e in zip(session.run(None, {"x": x.numpy()}), want):
        torch.testing.assert_close(torch.from_numpy(a), e, atol=1e-5, rtol=1e-5)


def test_onnx_export_projection_refused(tmp_path):
    with pytest.raises(ValueError, match="proj_size"):
        fastlstm.onnx.export(fastlstm.LSTM(4, 6, proj_size=2), (torch.randn(3, 2, 4),), tmp_path / "p.onnx")


# --------------------------------------------------------------------------
# CPU autocast (bf16): computes in fp32, returns the autocast dtype
# --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", fastlstm.available_backends("cpu"))
def test_autocast_cpu_bf16_policy(backend):
    ref = nn.LSTM(4, 6, num_layers=2, bidirectional=True)
    fast = fastlstm.LSTM.from_torch(ref, backend=backend)
    x = torch.randn(5, 3, 4, requires_grad=True)
    hx = (torch.randn(4, 3, 6), torch.randn(4, 3, 6))
    with torch.no_grad():
        fp32_out, (fp32_h, fp32_c) = fast(x, hx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, c) = fast(x, hx)
        out_t, (h_t, c_t) = ref(x, hx)
        out_bf16_in, _ = fast(x.bfloat16(), (hx[0].bfloat16(), hx[1].bfloat16()))
    # Same output dtypes as torch.nn.LSTM under autocast ...
    assert (out.dtype, h.dtype, c.dtype) == (out_t.dtype, h_t.dtype, c_t.dtype) == (torch.bfloat16,) * 3
    # ... computed in fp32: exactly the fp32 result rounded once to bf16.
    assert torch.equal(out, fp32_out.bfloat16())
    assert torch.equal(h, fp32_h.bfloat16()) and torch.equal(c, fp32_c.bfloat16())
    # bf16 inputs are cast up to the weights' dtype (bf16 rounding of x only).
    assert out_bf16_in.dtype == torch.bfloat16
    torch.testing.assert_close(out_bf16_in.float(), fp32_out, atol=3e-2, rtol=3e-2)
    # torch's own bf16 computation is no closer to fp32 than fastlstm's.
    assert (out.float() - fp32_out).abs().max() <= (out_t.float() - fp32_out).abs().max() + 1e-6
    # Gradients flow to the fp32 parameters and the fp32 input.
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in fast.parameters())


def test_autocast_cpu_bf16_cell():
    # torch.nn.LSTMCell returns fp32 under CPU autocast; so does fastlstm's, computed in fp32.
    ref = nn.LSTMCell(4, 6)
    cell = fastlstm.LSTMCell.from_torch(ref)
    x = torch.randn(3, 4)
    hx = (torch.randn(3, 6).bfloat16(), torch.randn(3, 6))
    with torch.no_grad():
        h32, c32 = cell(x, (hx[0].float(), hx[1]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, c = cell(x, hx)
        h_t, c_t = ref(x, (hx[0].float(), hx[1]))
    assert (h.dtype, c.dtype) == (h_t.dtype, c_t.dtype) == (torch.float32, torch.float32)
    assert torch.equal(h, h32) and torch.equal(c, c32)


def test_autocast_disabled_region_is_plain_fp32():
    fast = fastlstm.LSTM(4, 6)
    x = torch.randn(5, 3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.autocast("cpu", enabled=False):
            out, _ = fast(x)
    assert out.dtype == torch.float32
    assert torch.equal(out, fast(x)[0])


# --------------------------------------------------------------------------
# state_dict and serialization
# --------------------------------------------------------------------------

SD_CFGS = {
    "uni": dict(), "bi-3layer": dict(num_layers=3, bidirectional=True), "proj": dict(proj_size=2),
    "no-bias-batchfirst": dict(bias=False, batch_first=True),
}


@pytest.mark.parametrize("cfg", SD_CFGS.values(), ids=SD_CFGS.keys())
def test_state_dict_round_trip_with_torch_lstm(cfg):
    ref = nn.LSTM(4, 6, **cfg)
    fast = fastlstm.LSTM(4, 6, **cfg)
    assert list(fast.state_dict()) == list(ref.state_dict())
    fast.load_state_dict(ref.state_dict(), strict=True)
    back = nn.LSTM(4, 6, **cfg)
    back.load_state_dict(fast.state_dict(), strict=True)
    for (k, a), (k2, b) in zip(back.state_dict().items(), ref.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(3, 5, 4)
    for a, e in zip(torch.utils._pytree.tree_leaves(fast(x)), torch.utils._pytree.tree_leaves(ref(x))):
        assert_parity(a, e)


def test_state_dict_round_trip_with_torch_cell():
    for bias in (True, False):
        ref = nn.LSTMCell(4, 6, bias=bias)
        fast = fastlstm.LSTMCell(4, 6, bias=bias)
        assert list(fast.state_dict()) == list(ref.state_dict())
        fast.load_state_dict(ref.state_dict(), strict=True)
        x = torch.randn(3, 4)
        for a, e in zip(fast(x), ref(x)):
            assert_parity(a, e)


def test_state_dict_mismatch_raises_like_torch():
    fast, ref = fastlstm.LSTM(4, 6), nn.LSTM(4, 6)
    bad = nn.LSTM(4, 7).state_dict()
    with pytest.raises(RuntimeError, match="size mismatch"):
        ref.load_state_dict(bad)
    with pytest.raises(RuntimeError, match="size mismatch"):
        fast.load_state_dict(bad)
    with pytest.raises(RuntimeError, match="Missing key"):
        fast.load_state_dict({k: v for k, v in ref.state_dict().items() if k != "bias_hh_l0"})


def test_save_load_weights_only_state_dict():
    fast = Tagger()
    buf = io.BytesIO()
    torch.save(fast.state_dict(), buf)
    buf.seek(0)
    restored = Tagger()
    restored.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(2, 5, 4)
    for a, e in zip(restored(x), fast(x)):
        assert torch.equal(a, e)


def test_save_load_whole_module_policy():
    # Whole modules pickle like torch.nn.LSTM does: weights_only=True refuses
    # unknown classes unless the caller allows them (docs/reliability.md).
    fast = fastlstm.LSTM(4, 6, bidirectional=True, backend="reference")
    buf = io.BytesIO()
    torch.save(fast, buf)
    buf.seek(0)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(buf, weights_only=True)
    buf.seek(0)
    with torch.serialization.safe_globals([fastlstm.LSTM]):
        loaded = torch.load(buf, weights_only=True)
    assert loaded.backend == "reference"
    x = torch.randn(5, 2, 4)
    assert torch.equal(loaded(x)[0], fast(x)[0])
    buf.seek(0)
    assert torch.equal(torch.load(buf, weights_only=False)(x)[0], fast(x)[0])


# --------------------------------------------------------------------------
# SparseAttention and QuantizedLSTM
# --------------------------------------------------------------------------


class Encoder(nn.Module):
    """fastlstm.LSTM followed by SparseAttention, like the productivity model's trunk."""

    def __init__(self):
        super().__init__()
        self.lstm = fastlstm.LSTM(4, 8, bidirectional=True, batch_first=True)
        self.attn = fastlstm.SparseAttention(16, 2, batch_first=True, window=(3, 3))

    def forward(self, x):
        h, _ = self.lstm(x)
        out, _ = self.attn(h, h, h, need_weights=False)
        return out.mean(dim=1)


def test_compile_sparse_attention_model_dynamic_seq_len():
    torch._dynamo.reset()
    model = Encoder()
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    x = torch.randn(2, 9, 4, requires_grad=True)
    assert_parity(compiled(x), model(x))
    with torch.compiler.set_stance("fail_on_recompile"):
        for T in (5, 16, 23):
            x = torch.randn(2, T, 4, requires_grad=True)
            got, want = compiled(x), model(x)
            assert_parity(got, want)
            for a, e in zip(torch.autograd.grad(got.sum(), [x, *model.parameters()]),
                            torch.autograd.grad(want.sum(), [x, *model.parameters()])):
                assert_parity(a, e)


def test_torch_export_sparse_attention_model():
    model = Encoder().eval()
    ep = torch.export.export(model, (torch.randn(2, 8, 4),),
                             dynamic_shapes={"x": {1: torch.export.Dim("T", min=2, max=512)}})
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert any("fastlstm.sparse_attention" in t for t in targets), targets
    for T in (3, 8, 19):
        x = torch.randn(2, T, 4)
        assert_parity(ep.module()(x), model(x))


@pytest.mark.parametrize("cfg", [dict(), dict(kdim=6, vdim=5), dict(bias=False, batch_first=True)],
                         ids=["packed-qkv", "separate-kv-dims", "no-bias"])
def test_state_dict_round_trip_with_multihead_attention(cfg):
    ref = nn.MultiheadAttention(8, 2, **cfg).eval()
    fast = fastlstm.SparseAttention(8, 2, **cfg).eval()
    assert list(fast.state_dict()) == list(ref.state_dict())
    fast.load_state_dict(ref.state_dict(), strict=True)
    back = nn.MultiheadAttention(8, 2, **cfg)
    back.load_state_dict(fast.state_dict(), strict=True)
    q = torch.randn(5, 3, 8)
    k = torch.randn(5, 3, cfg.get("kdim", 8))
    v = torch.randn(5, 3, cfg.get("vdim", 8))
    if cfg.get("batch_first"):
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    for a, e in zip(fast(q, k, v), back(q, k, v)):
        assert_parity(a, e)


def test_save_load_weights_only_sparse_attention_and_quantized():
    model = Encoder()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    restored = Encoder()
    restored.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(2, 6, 4)
    assert torch.equal(restored(x), model(x))

    qmodel = fastlstm.quantize_dynamic(nn.Sequential(nn.LSTM(4, 6)))
    buf = io.BytesIO()
    torch.save(qmodel.state_dict(), buf)
    buf.seek(0)
    qrestored = fastlstm.quantize_dynamic(nn.Sequential(nn.LSTM(4, 6)))
    qrestored.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(5, 2, 4)
    for a, e in zip(torch.utils._pytree.tree_leaves(qrestored(x)), torch.utils._pytree.tree_leaves(qmodel(x))):
        assert torch.equal(a, e)
