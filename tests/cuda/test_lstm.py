"""fastlstm/ops/lstm_cuda.py and the CUDA kernels (csrc/cuda/) against the
reference and cuDNN. Everything that launches a kernel is marked `gpu`; the
binding's argument checks run here whenever _C was built with CUDA."""

import pytest
import torch

import fastlstm
from fastlstm import _ext, reference
from fastlstm.ops import lstm_recurrence
from fastlstm.testing import assert_parity, max_abs_error, within_error_rule

has_cuda_build = _ext.available() and getattr(_ext._C, "has_cuda", False)
needs_cuda_build = pytest.mark.skipif(not has_cuda_build, reason="fastlstm._C was built without CUDA")

# (T, B, D, H, lengths)
CASES = {
    "uni": (7, 3, 1, 16, None),
    "bi-H37": (6, 2, 2, 37, None),
    "bi-lengths": (9, 5, 2, 24, [9, 1, 4, 0, 7]),
    "T1": (1, 2, 2, 8, None),
    "B20": (4, 20, 1, 32, None),
    "B0": (3, 0, 2, 8, None),
}
MODES = ["persistent", "per-step"]


def _inputs(T, B, D, H, lengths, dtype=torch.float32, device="cuda"):
    def r(*shape):
        return (torch.randn(*shape, dtype=dtype, device=device) * 0.5).requires_grad_()

    lengths = torch.tensor(lengths, dtype=torch.int64) if lengths is not None else None
    return r(T, B, D, 4 * H), r(D, 4 * H, H), None, r(D, B, H), r(D, B, H), lengths


def _loss(outputs):
    y, hn, cn = outputs[:3]
    weights = torch.arange(y.numel(), device=y.device).reshape(y.shape).cos().to(y.dtype)
    return (y * weights).sum() + hn.sum() * 0.5 - cn.sum()


@pytest.mark.gpu
@needs_cuda_build
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_recurrence_matches_reference(case, dtype, mode, monkeypatch):
    monkeypatch.setenv("FASTLSTM_CUDA_LAUNCH", mode)
    args = _inputs(*case, dtype=dtype)
    fused = lstm_recurrence(*args, True)
    ref = reference.lstm_recurrence(*args)
    for name, a, b in zip(["y", "h_n", "c_n", "gates", "cells"], fused, ref):
        assert_parity(a, b, dtype, name=name)
    if case[1] == 0:
        return
    diff = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    for name, a, b in zip(["d gx", "d w_hh", "d h0", "d c0"], torch.autograd.grad(_loss(fused), diff),
                          torch.autograd.grad(_loss(ref), diff)):
        assert_parity(a, b, dtype, name=name)


@pytest.mark.gpu
@needs_cuda_build
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("mode", MODES)
def test_half_precision_error_rule(dtype, mode, monkeypatch):
    monkeypatch.setenv("FASTLSTM_CUDA_LAUNCH", mode)
    args = _inputs(40, 6, 2, 64, [40, 3, 17, 0, 40, 1], dtype=dtype)
    args64 = tuple(a.detach().double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
    fused = lstm_recurrence(*args, False)
    ref64 = reference.lstm_recurrence(*args64)
    peer = reference.lstm_recurrence(*args)
    for name, a, b64, b in zip(["y", "h_n", "c_n"], fused, ref64, peer):
        err, peer_err = max_abs_error(a, b64), max_abs_error(b, b64)
        assert err <= 2 * peer_err + 1e-3, f"{name}: {err} vs torch {dtype} {peer_err}"


@pytest.mark.gpu
@needs_cuda_build
@pytest.mark.parametrize("config", [
    dict(input_size=16, hidden_size=128, num_layers=2, bidirectional=True),
    dict(input_size=8, hidden_size=64, num_layers=1, bidirectional=False),
    dict(input_size=8, hidden_size=32, num_layers=2, bidirectional=True, proj_size=16),
], ids=["bi2-H128", "uni-H64", "bi2-proj"])
def test_module_matches_cudnn(config):
    torch_lstm = torch.nn.LSTM(**config).cuda()
    fast = fastlstm.LSTM.from_torch(torch_lstm, backend="cuda")
    x = torch.randn(300, 4, config["input_size"], device="cuda", requires_grad=True)
    out_t, (h_t, c_t) = torch_lstm(x)
    out_f, (h_f, c_f) = fast(x)
    x64 = x.detach().double().requires_grad_()
    out64, (h64, c64) = torch_lstm.double()(x64)
    for name, a, b, ref in (("output", out_f, out_t, out64), ("h_n", h_f, h_t, h64), ("c_n", c_f, c_t, c64)):
        ok, err, peer = within_error_rule(a, b, ref)
        assert ok, f"{name}: error {err} vs cuDNN {peer}"
    g_f = torch.autograd.grad(out_f.sum() + c_f.sum(), x)[0]
    g_t = torch.autograd.grad(out_t.sum() + c_t.sum(), x)[0]
    g64 = torch.autograd.grad(out64.sum() + c64.sum(), x64)[0]
    ok, err, peer = within_error_rule(g_f, g_t, g64, floor=1e-5)
    assert ok, f"d input: error {err} vs cuDNN {peer}"


@pytest.mark.gpu
@needs_cuda_build
def test_packed_sequence_matches_cudnn():
    from torch.nn.utils.rnn import pack_padded_sequence

    torch_lstm = torch.nn.LSTM(6, 48, num_layers=2, bidirectional=True).cuda()
    fast = fastlstm.LSTM.from_torch(torch_lstm, backend="cuda")
    x = torch.randn(12, 5, 6, device="cuda")
    packed = pack_padded_sequence(x, torch.tensor([12, 3, 7, 1, 9]), enforce_sorted=False)
    out_t, (h_t, c_t) = torch_lstm(packed)
    out_f, (h_f, c_f) = fast(packed)
    assert_parity(out_f.data, out_t.data, name="output")
    assert_parity(h_f, h_t, name="h_n")
    assert_parity(c_f, c_t, name="c_n")


@pytest.mark.gpu
@needs_cuda_build
def test_large_hidden_uses_per_step_launch_and_is_correct():
    from fastlstm.ops.lstm_cuda import launch_mode

    H = 4096
    assert launch_mode(2, 2, H, torch.float32) == "per-step"
    assert launch_mode(16, 2, 128, torch.float32) == "persistent"
    args = _inputs(3, 2, 1, H, None)
    args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    fused = lstm_recurrence(*args, False)
    ref = reference.lstm_recurrence(*args)
    for name, a, b in zip(["y", "h_n", "c_n"], fused, ref):
        assert_parity(a, b, torch.float32, name=name)


@pytest.mark.gpu
@needs_cuda_build
def test_opcheck():
    args = _inputs(*CASES["bi-lengths"])
    torch.library.opcheck(torch.ops.fastlstm.lstm_recurrence.default, args + (True,))


@pytest.mark.gpu
@needs_cuda_build
def test_runs_on_current_stream_without_host_sync():
    args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in _inputs(*CASES["bi-H37"]))
    expected = reference.lstm_recurrence(*args)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.cuda.stream(stream):
            y, hn, cn, _, _ = lstm_recurrence(*args, False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.current_stream().wait_stream(stream)
    assert_parity(y, expected[0], name="y")


@pytest.mark.gpu
@needs_cuda_build
def test_cuda_graph_capture():
    args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in _inputs(*CASES["bi-H37"]))
    static_gx = args[0].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        lstm_recurrence(static_gx, *args[1:], False)  # warm up outside capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y, _, _, _, _ = lstm_recurrence(static_gx, *args[1:], False)
    static_gx.copy_(args[0] * 0.5)
    graph.replay()
    torch.cuda.synchronize()
    expected = reference.lstm_recurrence(args[0] * 0.5, *args[1:])
    assert_parity(y, expected[0], name="y after replay")


# -- argument checks of the binding (no kernel runs) --------------------------------------------------


@needs_cuda_build
def test_binding_rejects_bad_sizes_before_launch():
    C = _ext._C
    T, B, D, H = 2, 3, 1, 4
    G = 4 * H
    ok = dict(gx=(256, T * B * D * G), w_hh=(256, D * G * H), h0=(256, D * B * H), c0=(256, D * B * H),
              lengths=(0, 0), y=(256, T * B * D * H), hn=(256, D * B * H), cn=(256, D * B * H), gates=(0, 0),
              cells=(0, 0), work=(256, C.cuda_lstm_workspace(False, B, D, H)))
    sizes = dict(seq_len=T, batch=B, directions=D, hidden=H, stream=0)
    with pytest.raises(ValueError, match="gx has 5 elements"):
        C.cuda_lstm_recurrence_fwd("float32", **{**ok, "gx": (256, 5)}, **sizes)
    with pytest.raises(ValueError, match="work"):
        C.cuda_lstm_recurrence_fwd("float32", **{**ok, "work": (256, 1)}, **sizes)
    with pytest.raises(ValueError, match="gates and cells"):
        C.cuda_lstm_recurrence_fwd("float32", **{**ok, "gates": (256, T * B * D * G)}, **sizes)
    with pytest.raises(ValueError, match="directions"):
        C.cuda_lstm_recurrence_fwd("float32", **ok, **{**sizes, "directions": 3})
    with pytest.raises(ValueError, match="mode"):
        C.cuda_lstm_recurrence_fwd("float32", **ok, **sizes, mode=7)
    with pytest.raises(TypeError, match="dtype"):
        C.cuda_lstm_recurrence_fwd("int8", **ok, **sizes)
    with pytest.raises(ValueError, match="aligned"):
        C.cuda_lstm_recurrence_fwd("float32", **{**ok, "y": (258, T * B * D * H)}, **sizes)


@needs_cuda_build
def test_backward_binding_rejects_bad_sizes_before_launch():
    C = _ext._C
    T, B, D, H = 2, 3, 2, 4
    G = 4 * H
    ok = dict(dy=(256, T * B * D * H), dhn=(0, 0), dcn=(0, 0), w_hh_t=(256, D * H * G), c0=(256, D * B * H),
              gates=(256, T * B * D * G), cells=(256, T * B * D * H), lengths=(0, 0), dgates=(256, T * B * D * G),
              dh0=(256, D * B * H), dc0=(256, D * B * H), work=(256, C.cuda_lstm_workspace(True, B, D, H)))
    sizes = dict(seq_len=T, batch=B, directions=D, hidden=H, stream=0)
    with pytest.raises(ValueError, match="w_hh_t"):
        C.cuda_lstm_recurrence_bwd("bfloat16", **{**ok, "w_hh_t": (256, 3)}, **sizes)
    with pytest.raises(ValueError, match="dgates is required"):
        C.cuda_lstm_recurrence_bwd("float16", **{**ok, "dgates": (0, 0)}, **sizes)
    with pytest.raises(ValueError, match="32-bit"):
        C.cuda_lstm_recurrence_bwd("float32", **ok, **{**sizes, "hidden": 2**30})


@pytest.mark.gpu
@needs_cuda_build
def test_module_compiles_fullgraph():
    module = fastlstm.LSTM(6, 32, num_layers=2, bidirectional=True, batch_first=True, backend="cuda").cuda()
    x = torch.randn(3, 10, 6, device="cuda", requires_grad=True)
    eager_out, _ = module(x)
    compiled = torch.compile(module, fullgraph=True)
    out, _ = compiled(x)
    torch.testing.assert_close(out, eager_out)
    torch.testing.assert_close(torch.autograd.grad(out.sum(), x)[0], torch.autograd.grad(eager_out.sum(), x)[0])


# -- the projection path's reverse recurrence (torch ops; runs on any device) -------------------------


@pytest.mark.parametrize("lengths", [None, [2, 5, 0]], ids=["full", "lengths"])
@pytest.mark.parametrize("D", [1, 2], ids=["uni", "bi"])
def test_projected_backward_matches_autograd_of_reference(D, lengths):
    from fastlstm.ops.lstm_cuda import projected_backward

    T, B, H, P = 5, 3, 6, 3

    def r(*shape):
        return (torch.randn(*shape, dtype=torch.float64) * 0.5).requires_grad_()

    gx, w_hh, w_hr, h0, c0 = r(T, B, D, 4 * H), r(D, 4 * H, P), r(D, P, H), r(D, B, P), r(D, B, H)
    lengths = torch.tensor(lengths) if lengths is not None else None
    y, hn, cn, gates, cells = reference.lstm_recurrence(gx, w_hh, w_hr, h0, c0, lengths)
    dy, dhn, dcn = torch.randn_like(y), torch.randn_like(hn), torch.randn_like(cn)
    expected = torch.autograd.grad((y * dy).sum() + (hn * dhn).sum() + (cn * dcn).sum(), [gx, h0, c0])
    dgates, dh0, dc0, dhproj = projected_backward(dy, dhn, dcn, w_hh.detach(), w_hr.detach(), c0.detach(),
                                                  gates.detach(), cells.detach(), lengths)
    for name, a, b in zip(["d gates", "d h0", "d c0"], (dgates, dh0, dc0), expected):
        assert_parity(a, b, torch.float64, name=name)
    assert dhproj.shape == y.shape


@pytest.mark.gpu
@needs_cuda_build
def test_mismatched_inputs_raise():
    gx, w_hh, _, h0, c0, _ = _inputs(3, 3, 2, 8, None)
    with pytest.raises(RuntimeError, match="w_hh is on cpu"):
        lstm_recurrence(gx, w_hh.detach().cpu(), None, h0, c0, None, False)
    with pytest.raises(ValueError, match="h0 has shape"):
        lstm_recurrence(gx, w_hh, None, h0.transpose(0, 1), c0, None, False)
