"""fastlstm/triton/lstm.py against the reference.

Without a GPU the kernels run under TRITON_INTERPRET=1 on CPU tensors (set
here before triton compiles anything), so shapes stay tiny. With a GPU the
same tests run on CUDA tensors, plus the `gpu`-marked ones.
"""

import os

import pytest
import torch

import fastlstm  # noqa: E402
from fastlstm import _backends, reference  # noqa: E402
from fastlstm.testing import assert_parity  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Triton reads TRITON_INTERPRET when it is imported and when kernels are
# decorated, so the variable is set for those imports, then restored (it must
# not leak into other test modules or their subprocesses); _autouse_interpreter
# sets it again around each test here for fastlstm's backend table.
INTERPRET = "1" if DEVICE == "cpu" else os.environ.get("TRITON_INTERPRET")
_saved = os.environ.get("TRITON_INTERPRET")
if INTERPRET is not None:
    os.environ["TRITON_INTERPRET"] = INTERPRET
try:
    triton = pytest.importorskip("triton", reason="triton is not installed")
    from fastlstm.triton.lstm import lstm_recurrence  # noqa: E402
finally:
    if _saved is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _saved

if DEVICE == "cpu":
    from triton.language import standard as _standard
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(_standard.sigmoid, InterpretedFunction):
        # Triton's own tl.* helpers were decorated by an earlier import without
        # the interpreter; they cannot run on CPU tensors in this process.
        pytest.skip("triton was imported before TRITON_INTERPRET=1 was set (set it in the environment "
                    "or in the root conftest.py to run these tests without a GPU)", allow_module_level=True)


@pytest.fixture(autouse=True)
def _autouse_interpreter(monkeypatch):
    if INTERPRET is not None:
        monkeypatch.setenv("TRITON_INTERPRET", INTERPRET)

# (T, B, D, H, lengths): H=20 is not a multiple of the 16-wide tiles; H=70 spans
# two hidden tiles and three k tiles; B=18 spans two batch blocks... of 16 and 2.
CASES = {
    "uni": (4, 3, 1, 8, None),
    "bi-H20": (3, 2, 2, 20, None),
    "bi-lengths": (4, 3, 2, 8, [4, 1, 0]),
    "uni-H70": (2, 2, 1, 70, None),
    "B18-lengths": (3, 18, 1, 8, [3, 2, 1] * 6),
    "T1-bi": (1, 2, 2, 8, None),
}


def _inputs(T, B, D, H, lengths, dtype=torch.float32, device=DEVICE):
    def r(*shape):
        return (torch.randn(*shape, dtype=dtype, device=device) * 0.5).requires_grad_()

    lengths = torch.tensor(lengths, dtype=torch.int64) if lengths is not None else None
    return r(T, B, D, 4 * H), r(D, 4 * H, H), None, r(D, B, H), r(D, B, H), lengths


def _loss(outputs):
    y, hn, cn = outputs[:3]
    weights = torch.arange(y.numel(), device=y.device).reshape(y.shape).cos().to(y.dtype)
    return (y * weights).sum() + hn.sum() * 0.5 - cn.sum()


def _check_against_reference(args, dtype):
    fused = lstm_recurrence(*args, True)
    ref = reference.lstm_recurrence(*args)
    for name, a, b in zip(["y", "h_n", "c_n", "gates", "cells"], fused, ref):
        assert_parity(a, b, dtype, name=name)
    diff = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    g_fused = torch.autograd.grad(_loss(fused), diff)
    g_ref = torch.autograd.grad(_loss(ref), diff)
    for name, a, b in zip(["d gx", "d w_hh", "d h0", "d c0"], g_fused, g_ref):
        assert_parity(a, b, dtype, name=name)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_recurrence_matches_reference_fp32(case):
    _check_against_reference(_inputs(*case), torch.float32)


def test_inference_returns_empty_gates():
    gx, w_hh, _, h0, c0, _ = _inputs(3, 2, 2, 8, None)
    with torch.no_grad():
        y, hn, cn, gates, cells = lstm_recurrence(gx, w_hh, None, h0, c0, None, False)
    assert gates.numel() == 0 and cells.numel() == 0
    ref = reference.lstm_recurrence(gx, w_hh, None, h0, c0, None)
    assert_parity(y, ref[0], name="y")


def test_projection_is_rejected_and_auto_skips_triton():
    gx, w_hh, _, h0, c0, _ = _inputs(2, 2, 1, 8, None)
    w_hr = torch.randn(1, 4, 8, device=DEVICE)
    with pytest.raises(NotImplementedError, match="proj_size"):
        lstm_recurrence(gx, w_hh[..., :4], w_hr, h0[..., :4], c0, None, False)
    assert _backends.unavailable_reason("triton", torch.device(DEVICE), torch.float32, proj=True)
    with pytest.raises(RuntimeError, match="proj_size"):
        _backends.resolve("triton", torch.device(DEVICE), torch.float32, proj=True)


def test_bad_lengths_raise():
    gx, w_hh, _, h0, c0, _ = _inputs(3, 2, 1, 8, None)
    with pytest.raises(ValueError, match="lengths"):
        lstm_recurrence(gx, w_hh, None, h0, c0, torch.tensor([4, 1]), False)
    with pytest.raises(TypeError, match="lengths"):
        lstm_recurrence(gx, w_hh, None, h0, c0, torch.tensor([1.0, 2.0]), False)


def _torch_pair(**config):
    torch_lstm = torch.nn.LSTM(**config).to(DEVICE)
    fast = fastlstm.LSTM.from_torch(torch_lstm, backend="triton")
    return torch_lstm, fast


def test_stacked_bidirectional_module_matches_torch():
    torch_lstm, fast = _torch_pair(input_size=5, hidden_size=8, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(2, 4, 5, device=DEVICE, requires_grad=True)
    out_t, (h_t, c_t) = torch_lstm(x)
    out_f, (h_f, c_f) = fast(x)
    for name, a, b in (("output", out_f, out_t), ("h_n", h_f, h_t), ("c_n", c_f, c_t)):
        assert_parity(a, b, name=name)
    g_t = torch.autograd.grad(out_t.sum() + c_t.sum(), [x, *torch_lstm.parameters()])
    g_f = torch.autograd.grad(out_f.sum() + c_f.sum(), [x, *fast.parameters()])
    for (name, _), a, b in zip([("x", None), *torch_lstm.named_parameters()], g_f, g_t):
        assert_parity(a, b, name=f"grad {name}")


def test_packed_sequence_module_matches_torch():
    from torch.nn.utils.rnn import pack_padded_sequence

    torch_lstm, fast = _torch_pair(input_size=3, hidden_size=8, bidirectional=True)
    x = torch.randn(4, 3, 3, device=DEVICE, requires_grad=True)
    lengths = torch.tensor([2, 4, 1])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out_t, (h_t, c_t) = torch_lstm(packed)
    out_f, (h_f, c_f) = fast(packed)
    assert_parity(out_f.data, out_t.data, name="packed output")
    assert_parity(h_f, h_t, name="h_n")
    assert_parity(c_f, c_t, name="c_n")
    g_t = torch.autograd.grad(out_t.data.sum() + h_t.sum(), [x, torch_lstm.weight_hh_l0_reverse], retain_graph=True)
    g_f = torch.autograd.grad(out_f.data.sum() + h_f.sum(), [x, fast.weight_hh_l0_reverse])
    for name, a, b in zip(["x", "weight_hh_l0_reverse"], g_f, g_t):
        assert_parity(a, b, name=f"grad {name}")


# Under TRITON_INTERPRET=1, torch's wrap_triton hands back the raw interpreted
# function (it has no JIT metadata to trace), so fake-tensor tracing cannot run
# it: the compile test needs compiled Triton, i.e. a GPU.
@pytest.mark.gpu
def test_compiles_fullgraph():
    args = _inputs(3, 2, 2, 8, None)
    eager = lstm_recurrence(*args, True)

    def fn(gx, w_hh, h0, c0):
        return lstm_recurrence(gx, w_hh, None, h0, c0, None, True)[:3]

    compiled = torch.compile(fn, fullgraph=True)
    out = compiled(args[0], args[1], args[3], args[4])
    for a, b in zip(out, eager[:3]):
        torch.testing.assert_close(a, b)
    grads = torch.autograd.grad(sum(o.sum() for o in out), [args[0], args[1]])
    grads_eager = torch.autograd.grad(sum(o.sum() for o in eager[:3]), [args[0], args[1]])
    for a, b in zip(grads, grads_eager):
        torch.testing.assert_close(a, b)


# -- GPU only ---------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", [(16, 5, 2, 64, [16, 3, 9, 0, 1]), (8, 4, 1, 512, None)], ids=["bi-lengths", "H512"])
def test_half_precision_matches_reference_gpu(case, dtype):
    args = _inputs(*case, dtype=dtype, device="cuda")
    args64 = tuple(a.detach().double().requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point()
                   else a for a in args)
    args32 = tuple(a.detach().float().requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point()
                   else a for a in args)
    fused = lstm_recurrence(*args, True)
    ref64 = reference.lstm_recurrence(*args64)
    ref_same = reference.lstm_recurrence(*args)  # torch's own error in this dtype
    for name, a, b64, b in zip(["y", "h_n", "c_n"], fused, ref64, ref_same):
        err = fastlstm.testing.max_abs_error(a, b64)
        peer = fastlstm.testing.max_abs_error(b, b64)
        assert err <= 2 * peer + 1e-2, f"{name}: error {err} vs torch {dtype} error {peer}"
    del args32


@pytest.mark.gpu
@pytest.mark.parametrize("H", [128, 512])
def test_fp32_long_sequence_matches_cudnn_gpu(H):
    torch_lstm, fast = _torch_pair(input_size=32, hidden_size=H, num_layers=2, bidirectional=True)
    x = torch.randn(200, 4, 32, device="cuda", requires_grad=True)
    out_t, _ = torch_lstm(x)
    out_f, _ = fast(x)
    x64 = x.detach().double().requires_grad_()
    ref, _ = torch_lstm.double()(x64)
    ok, err, peer = fastlstm.testing.within_error_rule(out_f, out_t, ref)
    assert ok, f"triton error {err} vs cuDNN error {peer}"
    g_f = torch.autograd.grad(out_f.sum(), x)[0]
    g_ref = torch.autograd.grad(ref.sum(), x64)[0]
    g_t = torch.autograd.grad(out_t.sum(), x)[0]
    ok, err, peer = fastlstm.testing.within_error_rule(g_f, g_t, g_ref, floor=1e-5)
    assert ok, f"triton grad error {err} vs cuDNN error {peer}"


def test_mismatched_inputs_raise():
    gx, w_hh, _, h0, c0, _ = _inputs(3, 3, 2, 8, None)
    with pytest.raises(ValueError, match="h0"):
        lstm_recurrence(gx, w_hh, None, h0.transpose(0, 1), c0, None, False)
    with pytest.raises(TypeError, match="w_hh"):
        lstm_recurrence(gx, w_hh.double(), None, h0, c0, None, False)
