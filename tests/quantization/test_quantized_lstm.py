"""fastlstm.nn.quantized (QuantizedLSTM, QuantizedLinear) and fastlstm.quantization."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence

import fastlstm
from fastlstm._ext import _C
from fastlstm.nn.quantized import QuantizedLinear, QuantizedLSTM
from fastlstm.testing import max_abs_error

pytestmark = pytest.mark.skipif(_C is None, reason="needs fastlstm._C")
LEVELS = ["scalar", "avx2", "avx512", "avx512_vnni"]
# Loose agreement of int8 with fp32 for short sequences (quantisation noise, not a bug budget).
SHORT_TOL = 3e-2


def levels():
    return LEVELS[: LEVELS.index(_C.detected_cpu_capability()) + 1]


@pytest.fixture(params=[lv for lv in LEVELS], ids=lambda v: v)
def isa(request):
    if request.param not in levels():
        pytest.skip(f"{request.param} not supported by this CPU")
    saved = _C.cpu_capability()
    _C.set_cpu_capability(request.param)
    yield request.param
    _C.set_cpu_capability(saved)


def torch_dynamic_int8(m: nn.LSTM):
    """torch.ao's dynamic int8 LSTM with the same weights."""
    import torch.ao.nn.quantized.dynamic as nnqd
    from torch.ao.quantization import default_dynamic_qconfig

    m = m.float()
    m.qconfig = default_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nnqd.LSTM.from_float(m)


@torch.no_grad()
def test_accuracy_t1440_vs_fp32_and_torch_int8():
    m = nn.LSTM(32, 128, num_layers=2, bidirectional=True)  # nn.LSTM's initialisation
    x = torch.randn(1440, 1, 32)
    ref, (h_ref, c_ref) = m(x)
    out, (h, c) = fastlstm.QuantizedLSTM.from_float(m)(x)
    peer, (h_peer, _) = torch_dynamic_int8(m)(x)
    ours = max(max_abs_error(out, ref), max_abs_error(h, h_ref))
    theirs = max(max_abs_error(peer, ref), max_abs_error(h_peer, h_ref))
    assert theirs > 0  # the peer really quantised
    assert ours <= 2e-2, ours
    assert ours <= theirs, (ours, theirs)


def test_size_at_most_0_3x_fp32():
    m = nn.LSTM(32, 128, num_layers=2, bidirectional=True)
    q = QuantizedLSTM.from_float(m)
    fp32 = sum(t.numel() * t.element_size() for t in m.state_dict().values())
    int8 = sum(t.numel() * t.element_size() for t in q.state_dict().values())
    assert int8 <= 0.3 * fp32, int8 / fp32


CONFIGS = {
    "uni": dict(num_layers=1),
    "bi": dict(bidirectional=True),
    "stacked_bi": dict(num_layers=2, bidirectional=True),
    "proj": dict(num_layers=2, proj_size=7),
    "bi_proj_nobias": dict(bidirectional=True, proj_size=5, bias=False),
    "batch_first": dict(num_layers=2, batch_first=True),
}


@pytest.mark.parametrize("cfg", list(CONFIGS), ids=str)
@torch.no_grad()
def test_matches_fp32_lstm(isa, cfg):
    kw = CONFIGS[cfg]
    m = nn.LSTM(5, 20, **kw)
    q = QuantizedLSTM.from_float(m)
    x = torch.randn(3, 11, 5) if kw.get("batch_first") else torch.randn(11, 3, 5)
    D = 2 if kw.get("bidirectional") else 1
    L, P = kw.get("num_layers", 1), kw.get("proj_size", 0) or 20
    hx = (torch.randn(L * D, 3, P) * 0.5, torch.randn(L * D, 3, 20) * 0.5)
    for state in (None, hx):
        ref, (h_ref, c_ref) = m(x, state)
        out, (h, c) = q(x, state)
        assert out.shape == ref.shape and h.shape == h_ref.shape and c.shape == c_ref.shape
        assert max_abs_error(out, ref) < SHORT_TOL
        assert max_abs_error(h, h_ref) < SHORT_TOL
        assert max_abs_error(c, c_ref) < SHORT_TOL


@torch.no_grad()
def test_packed_sequence_and_unbatched(isa):
    m = nn.LSTM(6, 24, num_layers=2, bidirectional=True)
    q = QuantizedLSTM.from_float(m)
    seqs = [torch.randn(n, 6) for n in (4, 9, 1, 7)]
    packed = pack_sequence(seqs, enforce_sorted=False)
    ref, (h_ref, c_ref) = m(packed)
    out, (h, c) = q(packed)
    assert torch.equal(out.batch_sizes, ref.batch_sizes)
    assert max_abs_error(out.data, ref.data) < SHORT_TOL
    assert max_abs_error(h, h_ref) < SHORT_TOL and max_abs_error(c, c_ref) < SHORT_TOL
    ref1, (h1, _) = m(seqs[1])
    out1, (g1, _) = q(seqs[1])
    assert out1.shape == ref1.shape and g1.shape == h1.shape
    assert max_abs_error(out1, ref1) < SHORT_TOL


@torch.no_grad()
def test_isa_variants_agree():
    m = nn.LSTM(16, 40, num_layers=2, bidirectional=True)
    q = QuantizedLSTM.from_float(m)
    x = torch.randn(50, 3, 16)
    saved = _C.cpu_capability()
    outs = {}
    try:
        for lv in levels():
            _C.set_cpu_capability(lv)
            outs[lv] = q(x)[0]
    finally:
        _C.set_cpu_capability(saved)
    for lv, out in outs.items():
        assert max_abs_error(out, outs["scalar"]) < 1e-2, lv


@torch.no_grad()
@pytest.mark.parametrize("proj", [0, 24])
def test_amx_kernels_bitwise_equal_vnni(proj):
    """The AMX kernels compute the same exact int32 products as VNNI: outputs are bitwise equal
    (batch 40: two 16-row tiles and a tail; I=100: a K tail after the 64-byte tiles)."""
    saved = _C.cpu_capability()
    try:
        _C.set_cpu_capability(_C.detected_cpu_capability())
        if not _C.int8_set_amx(True):
            pytest.skip("no AMX int8 on this CPU/OS")
        q = QuantizedLSTM.from_float(nn.LSTM(100, 64, num_layers=2, bidirectional=True, proj_size=proj))
        x = torch.randn(6, 40, 100)
        amx = q(x)
        assert _C.int8_kernel_info()[0] == "amx"
        _C.int8_set_amx(False)
        vnni = q(x)
    finally:
        _C.int8_set_amx(True)
        _C.set_cpu_capability(saved)
    assert torch.equal(amx[0], vnni[0]) and torch.equal(amx[1][0], vnni[1][0]) and torch.equal(amx[1][1], vnni[1][1])


@torch.no_grad()
@pytest.mark.parametrize("B,H,layers", [(12, 96, 1), (9, 64, 2)])
def test_hidden_unit_split_bitwise_equal_batch_split(B, H, layers, monkeypatch):
    """One direction, batch >= 8, several threads: the layer is split by hidden units (threads
    meet once per step); outputs, states and packed (variable-length) runs equal the
    1-thread run bitwise (3 threads: 3 parts of 32 units for H=96; 2 parts for H=64)."""
    from fastlstm import runtime

    monkeypatch.setenv("FASTLSTM_INT8_SPLIT", "1")  # opt-in mode

    m = nn.LSTM(20, H, num_layers=layers)
    q = QuantizedLSTM.from_float(m)
    x = torch.randn(9, B, 20)
    hx = (torch.randn(layers, B, H), torch.randn(layers, B, H))
    seqs = [torch.randn(n, 20) for n in sorted(torch.randint(1, 10, (B,)).tolist(), reverse=True)]
    saved = runtime.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            runtime.set_num_threads(n)
            out, (h, c) = q(x, hx)
            packed, (hp, cp) = q(pack_sequence(seqs))
            results.append((out, h, c, packed.data, hp, cp))
    finally:
        runtime.set_num_threads(saved)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)
    assert max_abs_error(results[0][0], m(x, hx)[0]) < SHORT_TOL


@torch.no_grad()
def test_results_do_not_depend_on_thread_count():
    from fastlstm import runtime

    q = QuantizedLSTM.from_float(nn.LSTM(8, 32, bidirectional=False))
    x = torch.randn(20, 5, 8)
    saved = runtime.get_num_threads()
    try:
        runtime.set_num_threads(1)
        one = q(x)[0]
        runtime.set_num_threads(3)
        three = q(x)[0]
    finally:
        runtime.set_num_threads(saved)
    assert torch.equal(one, three)


def test_nan_input_gives_nan_output(isa):
    q = QuantizedLSTM.from_float(nn.LSTM(4, 8))
    x = torch.randn(5, 2, 4)
    x[2, 1, 0] = float("nan")
    with torch.no_grad():
        out = q(x)[0]
    assert torch.isnan(out[2:, 1]).all() and not torch.isnan(out[:, 0]).any()


def test_gradients_raise():
    q = QuantizedLSTM.from_float(nn.LSTM(4, 8))
    x = torch.randn(5, 2, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="inference only"):
        q(x)
    with pytest.raises(RuntimeError, match="inference only"):
        q.requires_grad_()
    assert list(q.parameters()) == []
    lin = QuantizedLinear.from_float(nn.Linear(4, 3))
    with pytest.raises(RuntimeError, match="inference only"):
        lin(x)


def test_bad_input_errors():
    q = QuantizedLSTM.from_float(nn.LSTM(4, 8, num_layers=2))
    with pytest.raises(RuntimeError, match="input.shape"):
        q(torch.randn(5, 2, 3))
    with pytest.raises(RuntimeError, match="state shapes"):
        q(torch.randn(5, 2, 4), (torch.zeros(1, 2, 8), torch.zeros(1, 2, 8)))
    with pytest.raises(TypeError):
        q(torch.randint(0, 3, (5, 2, 4)))


@torch.no_grad()
def test_state_dict_round_trip_and_fastlstm_source():
    fast = fastlstm.LSTM(6, 16, num_layers=2, bidirectional=True)
    q = QuantizedLSTM.from_float(fast)
    fresh = QuantizedLSTM(6, 16, num_layers=2, bidirectional=True)
    fresh.load_state_dict(q.state_dict())
    x = torch.randn(9, 2, 6)
    assert torch.equal(fresh(x)[0], q(x)[0])
    assert max_abs_error(q(x)[0], fast(x)[0]) < SHORT_TOL


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.LSTM(8, 16, batch_first=True)
        self.inner = nn.ModuleDict({"dec": fastlstm.LSTM(16, 12)})
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        y, _ = self.enc(x)
        y, _ = self.inner["dec"](y.transpose(0, 1))
        return self.head(y)


@torch.no_grad()
def test_quantize_dynamic_swaps_modules():
    net = Net()
    q = fastlstm.quantize_dynamic(net)
    assert isinstance(q.enc, QuantizedLSTM) and isinstance(q.inner["dec"], QuantizedLSTM)
    assert type(q.head) is nn.Linear and isinstance(net.enc, nn.LSTM)  # the original is untouched
    q2 = fastlstm.quantize_dynamic(net, modules={nn.LSTM, nn.Linear})
    assert isinstance(q2.head, QuantizedLinear)
    x = torch.randn(2, 10, 8)
    assert max_abs_error(q2(x), net(x)) < SHORT_TOL
    assert isinstance(fastlstm.quantize_dynamic(nn.LSTM(3, 4)), QuantizedLSTM)
    with pytest.raises(ValueError, match="qint8"):
        fastlstm.quantize_dynamic(net, dtype=torch.float16)
    with pytest.raises(ValueError, match="cannot quantise"):
        fastlstm.quantize_dynamic(net, modules={nn.GRU})


@torch.no_grad()
def test_quantized_linear_matches_float():
    lin = nn.Linear(70, 33)
    q = QuantizedLinear.from_float(lin)
    x = torch.randn(4, 5, 70)
    assert max_abs_error(q(x), lin(x)) < 3e-2
    assert q(x).shape == (4, 5, 33)
