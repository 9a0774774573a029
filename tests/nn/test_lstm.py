"""fastlstm.LSTM / LSTMCell against torch.nn.LSTM / LSTMCell with the same weights."""

import copy
import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastlstm
from fastlstm.testing import assert_parity

BACKENDS = fastlstm.available_backends("cpu")

CONFIGS = {
    "uni": dict(),
    "bias-off": dict(bias=False),
    "2layer": dict(num_layers=2),
    "bi": dict(bidirectional=True),
    "bi-3layer": dict(num_layers=3, bidirectional=True),
    "proj": dict(proj_size=3),
    "bi-proj-2layer": dict(num_layers=2, bidirectional=True, proj_size=4),
    "batch-first-bi": dict(batch_first=True, bidirectional=True, num_layers=2),
}


def _pair(cfg, dtype, backend, input_size=5, hidden=7):
    ref = torch.nn.LSTM(input_size, hidden, **cfg, dtype=dtype)
    fast = fastlstm.LSTM.from_torch(ref, backend=backend)
    return ref, fast


def _grads(module, x, out, h, c, extra=()):
    loss = (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum() + 0.7 * h.sum() - 0.3 * c.sum()
    return torch.autograd.grad(loss, [x, *module.parameters(), *extra])


def _check(ref_results, fast_results, dtype):
    for i, (a, b) in enumerate(zip(fast_results, ref_results)):
        assert_parity(a, b, dtype, name=f"result {i}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["hx-none", "hx"])
@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_parity_with_torch(cfg, with_hx, dtype, backend):
    ref, fast = _pair(cfg, dtype, backend)
    T, B = 13, 3
    shape = (B, T, 5) if cfg.get("batch_first") else (T, B, 5)
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    hx_args = ()
    if with_hx:
        D = 2 if cfg.get("bidirectional") else 1
        n = cfg.get("num_layers", 1) * D
        P = cfg.get("proj_size", 0) or 7
        h0 = torch.randn(n, B, P, dtype=dtype, requires_grad=True)
        c0 = torch.randn(n, B, 7, dtype=dtype, requires_grad=True)
        hx_args = ((h0, c0),)
    out_r, (h_r, c_r) = ref(x, *hx_args)
    out_f, (h_f, c_f) = fast(x, *hx_args)
    extra = hx_args[0] if with_hx else ()
    _check(
        [out_r, h_r, c_r, *_grads(ref, x, out_r, h_r, c_r, extra)],
        [out_f, h_f, c_f, *_grads(fast, x, out_f, h_f, c_f, extra)],
        dtype,
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("T", [1, 40])
def test_parity_long_and_single_step(T, backend):
    ref, fast = _pair(dict(num_layers=2, bidirectional=True), torch.float32, backend, 9, 16)
    x = torch.randn(T, 4, 9, requires_grad=True)
    out_r, (h_r, c_r) = ref(x)
    out_f, (h_f, c_f) = fast(x)
    _check([out_r, h_r, c_r, *_grads(ref, x, out_r, h_r, c_r)],
           [out_f, h_f, c_f, *_grads(fast, x, out_f, h_f, c_f)], torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cfg", [CONFIGS["uni"], CONFIGS["bi-proj-2layer"]], ids=["uni", "bi-proj-2layer"])
def test_unbatched(cfg, batch_first, backend):
    ref, fast = _pair(dict(cfg, batch_first=batch_first), torch.float64, backend)
    x = torch.randn(6, 5, dtype=torch.float64)
    out_r, (h_r, c_r) = ref(x)
    out_f, (h_f, c_f) = fast(x)
    assert out_f.shape == out_r.shape and h_f.shape == h_r.shape
    _check([out_r, h_r, c_r], [out_f, h_f, c_f], torch.float64)
    D = 2 if cfg.get("bidirectional") else 1
    n = cfg.get("num_layers", 1) * D
    hx = (torch.randn(n, h_r.shape[-1], dtype=torch.float64), torch.randn(n, 7, dtype=torch.float64))
    _check(list(ref(x, hx)[1]), list(fast(x, hx)[1]), torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
@pytest.mark.parametrize("cfg", [CONFIGS["uni"], CONFIGS["bi-3layer"], CONFIGS["bi-proj-2layer"]],
                         ids=["uni", "bi-3layer", "bi-proj-2layer"])
def test_packed_sequence(cfg, enforce_sorted, backend):
    dtype = torch.float64
    ref, fast = _pair(cfg, dtype, backend)
    lengths = torch.tensor([9, 7, 7, 2, 1]) if enforce_sorted else torch.tensor([3, 9, 1, 7, 7])
    x = torch.randn(9, 5, 5, dtype=dtype, requires_grad=True)
    D = 2 if cfg.get("bidirectional") else 1
    n = cfg.get("num_layers", 1) * D
    P = cfg.get("proj_size", 0) or 7
    h0 = torch.randn(n, 5, P, dtype=dtype, requires_grad=True)
    c0 = torch.randn(n, 5, 7, dtype=dtype, requires_grad=True)
    results = []
    for module in (ref, fast):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
        out, (h, c) = module(packed, (h0, c0))
        assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
        padded, out_lengths = pad_packed_sequence(out)
        assert torch.equal(out_lengths, lengths)
        results.append([out.data, h, c, *_grads(module, x, padded, h, c, (h0, c0))])
        if module is fast:
            assert torch.equal(out.batch_sizes, packed.batch_sizes)
            if not enforce_sorted:
                assert torch.equal(out.sorted_indices, packed.sorted_indices)
    _check(results[0], results[1], dtype)


def test_same_seed_gives_same_weights_as_torch():
    torch.manual_seed(3)
    ref = torch.nn.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3)
    torch.manual_seed(3)
    fast = fastlstm.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3)
    assert list(ref.state_dict().keys()) == list(fast.state_dict().keys())
    for (name_r, p_r), (name_f, p_f) in zip(ref.named_parameters(), fast.named_parameters()):
        assert name_r == name_f and torch.equal(p_r, p_f)


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_state_dict_round_trip(cfg):
    ref = torch.nn.LSTM(5, 7, **cfg)
    fast = fastlstm.LSTM(5, 7, **cfg)
    fast.load_state_dict(ref.state_dict(), strict=True)
    back = torch.nn.LSTM(5, 7, **cfg)
    back.load_state_dict(fast.state_dict(), strict=True)
    for k, v in ref.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    assert repr(fast) == repr(ref)
    assert [[w.shape for w in ws] for ws in fast.all_weights] == [[w.shape for w in ws] for ws in ref.all_weights]
    x = torch.randn(4, 2, 5)
    torch.testing.assert_close(fast.to_torch()(x)[0], ref(x)[0])


def test_dropout_only_in_training():
    ref = torch.nn.LSTM(5, 7, num_layers=3, dropout=0.5)
    fast = fastlstm.LSTM.from_torch(ref)
    x = torch.randn(6, 2, 5)
    ref.eval()
    fast.eval()
    torch.testing.assert_close(fast(x)[0], ref(x)[0])
    fast.train()
    a, b = fast(x)[0], fast(x)[0]
    assert not torch.allclose(a, b), "dropout must be active in training"


def test_constructor_validation_matches_torch():
    bad = [
        dict(input_size=0, hidden_size=4), dict(input_size=4, hidden_size=0), dict(input_size=4, hidden_size=4, num_layers=0),
        dict(input_size=4, hidden_size=4, dropout=1.5), dict(input_size=4, hidden_size=4, dropout=True),
        dict(input_size=4, hidden_size=4, proj_size=4), dict(input_size=4, hidden_size=4, proj_size=-1),
        dict(input_size=4.0, hidden_size=4), dict(input_size=4, hidden_size="4"), dict(input_size=4, hidden_size=4, bias=1),
        dict(input_size=4, hidden_size=4, batch_first=None),
    ]
    for kwargs in bad:
        with pytest.raises(Exception) as torch_err:
            torch.nn.LSTM(**kwargs)
        with pytest.raises(torch_err.type) as fast_err:
            fastlstm.LSTM(**kwargs)
        assert str(fast_err.value) == str(torch_err.value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fastlstm.LSTM(4, 4, dropout=0.2)
    assert any("num_layers greater than 1" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="backend"):
        fastlstm.LSTM(4, 4, backend="gpu-magic")


def _raises_like_torch(fn_ref, fn_fast, match):
    with pytest.raises(Exception) as torch_err:
        fn_ref()
    with pytest.raises(torch_err.type, match=match):
        fn_fast()


def test_bad_input_raises_like_torch():
    ref = torch.nn.LSTM(4, 8)
    fast = fastlstm.LSTM.from_torch(ref)
    x = torch.randn(3, 2, 4)
    for m_ref, m_fast, args, match in [
        (ref, fast, (torch.randn(3, 2, 5),), "input_size"),
        (ref, fast, (torch.randn(4),), "2D or 3D"),
        (ref, fast, (torch.randn(1, 3, 2, 4),), "2D or 3D"),
        (ref, fast, (x.long(),), "dtype"),
        (ref, fast, (torch.randn(0, 2, 4),), "sequence length"),
        (ref, fast, (x, (torch.zeros(1, 3, 8), torch.zeros(1, 2, 8))), r"hidden\[0\]"),
        (ref, fast, (x, (torch.zeros(1, 2, 8), torch.zeros(1, 2, 7))), r"hidden\[1\]"),
        (ref, fast, (x, (torch.zeros(2, 8), torch.zeros(2, 8))), "3-D"),
        (ref, fast, (x, (torch.zeros(1, 2, 8, dtype=torch.float64), torch.zeros(1, 2, 8))), "h_0"),
        (ref, fast, (x, (torch.zeros(1, 2, 8), torch.zeros(1, 2, 8), torch.zeros(1, 2, 8))), "two hidden states"),
        (ref, fast, (x, (torch.zeros(1, 2, 8, device="meta"), torch.zeros(1, 2, 8))), "same device"),
    ]:
        _raises_like_torch(lambda: m_ref(*args), lambda: m_fast(*args), match)


def test_lstm_cell_parity_and_errors():
    for bias in (True, False):
        ref = torch.nn.LSTMCell(5, 7, bias=bias, dtype=torch.float64)
        fast = fastlstm.LSTMCell.from_torch(ref)
        assert list(ref.state_dict()) == list(fast.state_dict()) and repr(ref) == repr(fast)
        x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
        hx = (torch.randn(3, 7, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64))
        for args in [(x,), (x, hx), (x[0],), (x[0], (hx[0][0], hx[1][0]))]:
            r, f = ref(*args), fast(*args)
            _check(list(r), list(f), torch.float64)
        h_r, c_r = ref(x, hx)
        h_f, c_f = fast(x, hx)
        _check(list(torch.autograd.grad(h_r.sum() + c_r.sum(), [x, *ref.parameters()])),
               list(torch.autograd.grad(h_f.sum() + c_f.sum(), [x, *fast.parameters()])), torch.float64)
    ref = torch.nn.LSTMCell(4, 8)
    fast = fastlstm.LSTMCell.from_torch(ref)
    for args, match in [
        ((torch.randn(1, 2, 4),), "1D or 2D"),
        ((torch.randn(2, 5),), "input_size"),
        ((torch.randn(2, 4), (torch.zeros(3, 8), torch.zeros(3, 8))), "batch size"),
        ((torch.randn(2, 4), (torch.zeros(1, 2, 8), torch.zeros(1, 2, 8))), "1D or 2D"),
    ]:
        _raises_like_torch(lambda: ref(*args), lambda: fast(*args), match)
    assert torch.equal(fast.to_torch().weight_hh, ref.weight_hh)


def test_from_torch_keeps_training_mode_and_deepcopies():
    ref = torch.nn.LSTM(3, 4).eval()
    fast = fastlstm.LSTM.from_torch(ref)
    assert not fast.training
    clone = copy.deepcopy(fast)
    assert torch.equal(clone.weight_hh_l0, fast.weight_hh_l0)
    with pytest.raises(TypeError):
        fastlstm.LSTM.from_torch(torch.nn.GRU(3, 4))


@pytest.mark.parametrize("seed", range(12))
def test_random_configurations_match_torch(seed):
    """Configurations nobody listed: random sizes and flags, loaded from a torch state_dict."""
    gen = torch.Generator().manual_seed(1000 + seed)

    def pick(*options):
        return options[int(torch.randint(len(options), (1,), generator=gen))]

    hidden = pick(1, 2, 3, 8, 17, 33)
    cfg = dict(
        num_layers=pick(1, 2, 3), bias=pick(True, False), batch_first=pick(True, False),
        bidirectional=pick(True, False), proj_size=pick(0, 0, max(hidden - 1, 0)),
    )
    input_size = pick(1, 4, 19)
    dtype = pick(torch.float32, torch.float64)
    ref = torch.nn.LSTM(input_size, hidden, **cfg, dtype=dtype)
    fast = fastlstm.LSTM(input_size, hidden, **cfg, dtype=dtype)
    fast.load_state_dict(ref.state_dict(), strict=True)
    T, B = pick(1, 2, 9, 31), pick(1, 2, 5)
    x = torch.randn((B, T, input_size) if cfg["batch_first"] else (T, B, input_size), dtype=dtype, requires_grad=True)
    out_r, (h_r, c_r) = ref(x)
    out_f, (h_f, c_f) = fast(x)
    _check([out_r, h_r, c_r, *_grads(ref, x, out_r, h_r, c_r)],
           [out_f, h_f, c_f, *_grads(fast, x, out_f, h_f, c_f)], dtype)
