"""Modules that keep no state a forward may trip over: concurrent forwards with mixed
inputs, in-place edits of buffers, modules built under ``torch.inference_mode()``,
and ``torch.jit.trace`` (correct on new input, or refused)."""

from __future__ import annotations

import threading

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fastlstm
from fastlstm import _ext
from fastlstm.nn.quantized import QuantizedLinear

pytestmark = pytest.mark.skipif(not _ext.available(), reason=f"fastlstm._C unavailable: {_ext.load_error}")


def _quantized(batch_first: bool, **kw) -> fastlstm.QuantizedLSTM:
    torch.manual_seed(0)
    return fastlstm.QuantizedLSTM.from_float(torch.nn.LSTM(6, 16, batch_first=batch_first, **kw))


@torch.no_grad()
def test_quantized_lstm_threads_with_packed_and_batch_first_inputs_are_exact():
    q = _quantized(batch_first=True, num_layers=2)
    torch.manual_seed(1)
    batch_first = [torch.randn(3, 5 + i % 4, 6) for i in range(8)]  # (B, T, I)
    lengths = torch.tensor([7, 4, 2])
    padded = torch.randn(3, 7, 6)
    packed = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
    want_bf = [q(x) for x in batch_first]
    want_packed = q(packed)
    errors = []

    def worker(seed: int):
        try:
            for i in range(40):
                if (i + seed) % 2:
                    out, (h, c) = q(packed)
                    assert torch.equal(out.data, want_packed[0].data) and torch.equal(h, want_packed[1][0])
                else:
                    j = (i + seed) % len(batch_first)
                    out, (h, c) = q(batch_first[j])
                    assert out.shape == want_bf[j][0].shape and torch.equal(out, want_bf[j][0])
                    assert torch.equal(c, want_bf[j][1][1])
        except BaseException as exc:  # noqa: BLE001  (reported below with its thread)
            errors.append((seed, exc))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


@torch.no_grad()
@pytest.mark.parametrize("edit", ["zero_w_hh", "fill_w_ih", "scale"])
def test_quantized_lstm_sees_in_place_edits_of_its_buffers(edit):
    q = _quantized(batch_first=False)
    x = torch.randn(9, 2, 6)
    before = q(x)[0]
    if edit == "zero_w_hh":
        q.l0_w_hh.zero_()
    elif edit == "fill_w_ih":
        q.l0_w_ih.fill_(3)
    else:
        q.l0_w_hh_scale.mul_(0.5)
    fresh = fastlstm.QuantizedLSTM(6, 16)
    fresh.load_state_dict(q.state_dict())
    after = q(x)[0]
    assert not torch.equal(after, before)
    assert torch.equal(after, fresh(x)[0])


@torch.no_grad()
def test_quantized_linear_sees_in_place_edits():
    torch.manual_seed(0)
    q = QuantizedLinear.from_float(torch.nn.Linear(8, 4))
    x = torch.randn(3, 8)
    before = q(x)
    q.weight.zero_()
    assert not torch.equal(q(x), before)
    assert torch.allclose(q(x), q.bias.expand(3, 4))


@pytest.mark.parametrize("kw", [{}, {"proj_size": 4}, {"bidirectional": True, "num_layers": 2}],
                         ids=["plain", "proj", "bidir-2"])
def test_quantized_lstm_built_under_inference_mode(kw):
    torch.manual_seed(0)
    ref_float = torch.nn.LSTM(6, 16, **kw)
    x = torch.randn(9, 2, 6)
    with torch.no_grad():
        want = fastlstm.QuantizedLSTM.from_float(ref_float)(x)[0]
    with torch.inference_mode():
        q = fastlstm.QuantizedLSTM.from_float(ref_float)
        got = q(x)[0]
        assert torch.equal(got, want)
        q.l0_w_hh.zero_()  # inference tensors have no version counter: still seen
        edited = q(x)[0]
    fresh = fastlstm.QuantizedLSTM(6, 16, **kw)
    with torch.no_grad():
        fresh.load_state_dict({k: v.clone() for k, v in q.state_dict().items()})
        assert torch.equal(edited, fresh(x)[0])


def test_sparse_attention_built_under_inference_mode_matches_reference():
    torch.manual_seed(0)
    x = torch.randn(2, 11, 16)
    with torch.inference_mode():
        m = fastlstm.SparseAttention(16, 2, window=(3, 2), batch_first=True)
        got = m(x, x, x)[0]
    with torch.no_grad():
        plain = fastlstm.SparseAttention(16, 2, window=(3, 2), batch_first=True)
        plain.load_state_dict({k: v.clone() for k, v in m.state_dict().items()})
        want = plain(x, x, x)[0]
        reference = fastlstm.SparseAttention(16, 2, window=(3, 2), batch_first=True, backend="reference")
        reference.load_state_dict(plain.state_dict())
        ref = reference(x, x, x)[0]
    assert torch.equal(got, want)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("module", ["QuantizedLSTM", "QuantizedLinear"])
def test_tracing_a_quantized_module_is_refused(module):
    torch.manual_seed(0)
    if module == "QuantizedLSTM":
        m, x = _quantized(batch_first=False), torch.randn(5, 2, 6)
    else:
        m, x = QuantizedLinear.from_float(torch.nn.Linear(6, 3)), torch.randn(4, 6)
    with torch.no_grad(), pytest.raises(RuntimeError, match="cannot be traced"):
        torch.jit.trace(m, (x,))
    with torch.no_grad(), pytest.raises(RuntimeError, match="cannot be traced"):
        torch.jit.trace(m, (x,), check_trace=False)


def test_traced_sparse_attention_is_correct_on_new_input():
    torch.manual_seed(0)
    m = fastlstm.SparseAttention(16, 2, window=(3, 2), batch_first=True).eval().requires_grad_(False)
    x = torch.randn(2, 11, 16)
    traced = torch.jit.trace(lambda a: m(a, a, a)[0], (x,), check_trace=False)
    for _ in range(3):
        y = torch.randn(2, 11, 16)
        assert torch.equal(traced(y), m(y, y, y)[0])
