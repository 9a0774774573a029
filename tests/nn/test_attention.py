"""fastlstm.SparseAttention against torch.nn.MultiheadAttention."""

import pytest
import torch
from torch import nn

import fastlstm
from fastlstm import reference
from fastlstm.nn import SparseAttention, banded_to_dense
from fastlstm.testing import assert_parity

needs_cpu = pytest.mark.skipif("cpu" not in fastlstm.available_backends("cpu"), reason="fastlstm._C not built")

CONFIGS = {
    "default": dict(),
    "batch-first": dict(batch_first=True),
    "no-bias": dict(bias=False),
    "kdim-vdim": dict(kdim=5, vdim=7),
    "bias-kv": dict(add_bias_kv=True),
    "zero-attn": dict(add_zero_attn=True),
}


def _pair(E=16, heads=4, dtype=torch.float64, **kw):
    torch_mha = nn.MultiheadAttention(E, heads, **kw).to(dtype).eval()
    ours = SparseAttention(E, heads, **kw).to(dtype).eval()
    ours.load_state_dict(torch_mha.state_dict())
    return torch_mha, ours


def _qkv(kw, B=3, T=9, S=11, E=16, dtype=torch.float64):
    kd, vd = kw.get("kdim", E), kw.get("vdim", E)
    shape = (lambda t, d: (B, t, d)) if kw.get("batch_first") else (lambda t, d: (t, B, d))
    return [torch.randn(*shape(t, d), dtype=dtype, requires_grad=True) for t, d in ((T, E), (S, kd), (S, vd))]


def test_same_state_dict_keys():
    for kw in CONFIGS.values():
        a, b = nn.MultiheadAttention(16, 4, **kw), SparseAttention(16, 4, **kw, window=None)
        assert list(a.state_dict()) == list(b.state_dict())
        assert [(n, p.shape) for n, p in a.named_parameters()] == [(n, p.shape) for n, p in b.named_parameters()]


@needs_cpu
@pytest.mark.parametrize("average", [True, False], ids=["avg", "per-head"])
@pytest.mark.parametrize("kw", CONFIGS.values(), ids=CONFIGS.keys())
def test_dense_matches_multihead_attention(kw, average):
    torch_mha, ours = _pair(**kw)
    q, k, v = _qkv(kw)
    kpm = torch.rand(3, 11) < 0.3
    kpm[:, 0] = False  # keep a key in every row: torch gives NaN for rows with none
    a_out, a_w = torch_mha(q, k, v, key_padding_mask=kpm, average_attn_weights=average)
    b_out, b_w = ours(q, k, v, key_padding_mask=kpm, average_attn_weights=average)
    assert_parity(b_out, a_out, name="output")
    assert_parity(b_w, a_w, name="weights")
    ga = torch.autograd.grad(a_out.sum() + a_w.sum(), [q, k, v, *torch_mha.parameters()])
    gb = torch.autograd.grad(b_out.sum() + b_w.sum(), [q, k, v, *ours.parameters()])
    for i, (x, y) in enumerate(zip(gb, ga)):
        assert_parity(x, y, name=f"grad {i}")


@needs_cpu
def test_unbatched_input():
    torch_mha, ours = _pair()
    x = torch.randn(7, 16, dtype=torch.float64)
    a_out, a_w = torch_mha(x, x, x)
    b_out, b_w = ours(x, x, x)
    assert b_out.shape == a_out.shape and b_w.shape == a_w.shape
    assert_parity(b_out, a_out)
    assert_parity(b_w, a_w)


@needs_cpu
@pytest.mark.parametrize("average", [True, False], ids=["avg", "per-head"])
@pytest.mark.parametrize("layout", ["seq-first", "batch-first", "unbatched"])
def test_dense_inference_with_weights_takes_torchs_fused_attention(layout, average, monkeypatch):
    """Dense self-attention with weights at inference runs torch's native fused
    attention (one T x T pass); with padding it keeps the kernel path."""
    torch_mha, ours = _pair(batch_first=layout == "batch-first")
    x = torch.randn(7, 16, dtype=torch.float64) if layout == "unbatched" else torch.randn(3, 9, 16, dtype=torch.float64)
    with torch.no_grad():
        a_out, a_w = torch_mha(x, x, x, average_attn_weights=average)
        native, calls = torch._native_multi_head_attention, []
        monkeypatch.setattr(torch, "_native_multi_head_attention", lambda *args: calls.append(1) or native(*args))
        b_out, b_w = ours(x, x, x, average_attn_weights=average)
        assert len(calls) == 1
        assert b_out.shape == a_out.shape and b_w.shape == a_w.shape
        assert_parity(b_out, a_out)
        assert_parity(b_w, a_w)
        if layout != "unbatched":
            B, T = (3, 9) if layout == "batch-first" else (9, 3)
            kpm = torch.zeros(B, T, dtype=torch.bool)
            kpm[0, 2:] = True
            ours(x, x, x, key_padding_mask=kpm)
            assert len(calls) == 1


@needs_cpu
@pytest.mark.parametrize(
    "window, global_tokens", [((3, 0), 0), ((2, 2), 0), ((4, 1), 2), ((50, 50), 0)],
    ids=["causal", "symmetric", "asymmetric-global", "wider-than-T"],
)
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq-first", "batch-first"])
def test_window_matches_masked_multihead_attention(window, global_tokens, batch_first):
    torch_mha, _ = _pair(batch_first=batch_first)
    ours = SparseAttention(16, 4, batch_first=batch_first, window=window, global_tokens=global_tokens,
                           attn_weights_format="dense").double()
    ours.load_state_dict(torch_mha.state_dict())
    q, _, _ = _qkv(dict(batch_first=batch_first), T=13)
    kpm = torch.rand(3, 13) < 0.2
    kpm[:, :] &= ~torch.eye(13, dtype=torch.bool)[:3]  # every row keeps a key of its own
    blocked = ~reference.attention_mask(13, 13, window, global_tokens)
    a_out, a_w = torch_mha(q, q, q, key_padding_mask=kpm, attn_mask=blocked)
    b_out, b_w = ours(q, q, q, key_padding_mask=kpm)
    ok = ~torch.isnan(a_out)
    assert_parity(b_out[ok], a_out[ok])
    assert_parity(b_w.nan_to_num(), a_w.nan_to_num())


@needs_cpu
@pytest.mark.parametrize("average", [True, False], ids=["avg", "per-head"])
def test_banded_weights_densify_to_dense(average):
    x = torch.randn(2, 10, 16)
    kpm = torch.zeros(2, 10, dtype=torch.bool)
    kpm[1, 8:] = True
    banded = SparseAttention(16, 4, batch_first=True, window=(2, 1))
    dense = SparseAttention(16, 4, batch_first=True, window=(2, 1), attn_weights_format="dense")
    dense.load_state_dict(banded.state_dict())
    out_b, w_b = banded(x, x, x, key_padding_mask=kpm, average_attn_weights=average)
    out_d, w_d = dense(x, x, x, key_padding_mask=kpm, average_attn_weights=average)
    assert w_b.shape[-1] == 4 and w_d.shape[-1] == 10
    assert_parity(out_b, out_d)
    assert_parity(banded_to_dense(w_b, (2, 1), 10), w_d)
    assert_parity(w_b.sum(-1), torch.ones_like(w_b.sum(-1)))


@needs_cpu
def test_fully_padded_sequence_gives_bias_not_nan():
    attn = SparseAttention(8, 2, window=(1, 1))
    x = torch.randn(5, 2, 8)
    kpm = torch.zeros(2, 5, dtype=torch.bool)
    kpm[1] = True
    out, w = attn(x, x, x, key_padding_mask=kpm)
    assert torch.isfinite(out).all() and torch.isfinite(w).all()
    assert_parity(out[:, 1], attn.out_proj.bias.expand(5, 8))


@needs_cpu
def test_compile_fullgraph():
    attn = SparseAttention(16, 4, batch_first=True, window=(3, 1), global_tokens=1)
    x = torch.randn(2, 12, 16, requires_grad=True)
    kpm = torch.zeros(2, 12, dtype=torch.bool)
    kpm[0, -2:] = True
    compiled = torch.compile(attn, fullgraph=True, backend="aot_eager")
    out, _ = compiled(x, x, x, key_padding_mask=kpm, need_weights=False)
    expected, _ = attn(x, x, x, key_padding_mask=kpm, need_weights=False)
    assert_parity(out, expected)
    (g,) = torch.autograd.grad(out.sum(), x)
    (ge,) = torch.autograd.grad(expected.sum(), x)
    assert_parity(g, ge)


def test_unsupported_combinations_raise():
    with pytest.raises(NotImplementedError, match="add_bias_kv"):
        SparseAttention(8, 2, add_bias_kv=True, window=(2, 2))
    with pytest.raises(ValueError, match="attn_weights_format"):
        SparseAttention(8, 2, attn_weights_format="sparse")
    with pytest.raises(AssertionError, match="divisible"):
        SparseAttention(10, 3)
    attn = SparseAttention(8, 2, window=(2, 2), global_tokens=1)
    x = torch.randn(5, 1, 8)
    with pytest.raises(NotImplementedError, match="attn_mask"):
        attn(x, x, x, attn_mask=torch.zeros(5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="banded"):
        attn(x, x, x)  # global tokens need dense weights
    with pytest.raises(TypeError, match="bool"):
        attn(x, x, x, key_padding_mask=torch.zeros(1, 5), need_weights=False)
    with pytest.raises(ValueError, match="key_padding_mask"):
        attn(x, x, x, key_padding_mask=torch.zeros(1, 4, dtype=torch.bool), need_weights=False)
    train = SparseAttention(8, 2, dropout=0.1, backend="reference").train()
    with pytest.raises(NotImplementedError, match="dropout"):  # attention dropout is in the CPU kernels only
        train(x, x, x)


@needs_cpu
def test_training_with_attention_dropout_drops_weights_in_the_kernel():
    torch.manual_seed(0)
    attn = SparseAttention(16, 2, dropout=0.25, window=(3, 3), batch_first=True, backend="cpu").train()
    x = torch.randn(2, 20, 16, requires_grad=True)
    torch.manual_seed(5)
    a, _ = attn(x, x, x, need_weights=False)
    torch.manual_seed(5)
    b, _ = attn(x, x, x, need_weights=False)
    c, _ = attn(x, x, x, need_weights=False)
    assert torch.equal(a, b) and not torch.equal(a, c)  # the mask follows torch's generator
    with torch.no_grad():
        ev = attn.eval()(x, x, x, need_weights=False)[0]
    assert not torch.equal(a, ev)
    a.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@needs_cpu
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq-first", "batch-first"])
def test_self_attention_matches_multihead_attention(batch_first):
    """query is key is value takes the one-GEMM projection path."""
    torch_mha, ours = _pair(batch_first=batch_first)
    x = torch.randn(3, 9, 16, dtype=torch.float64, requires_grad=True)
    a_out, a_w = torch_mha(x, x, x)
    b_out, b_w = ours(x, x, x)
    assert_parity(b_out, a_out)
    assert_parity(b_w, a_w)
    ga = torch.autograd.grad(a_out.sum(), [x, *torch_mha.parameters()])
    gb = torch.autograd.grad(b_out.sum(), [x, *ours.parameters()])
    for x_, y_ in zip(gb, ga):
        assert_parity(x_, y_)
