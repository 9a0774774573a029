"""The binding's buffer contract (fastlstm/_ext.py ``buf``, csrc/python/checks.h ``Buf``):
every buffer travels as (address, numel, itemsize, owner), the owner keeps the memory
alive for the whole ``_C`` call, and every ``_C`` entry refuses a buffer whose element
size is not the kernel's before touching it."""

from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest
import torch

import fastlstm
from fastlstm import _ext
from fastlstm.nn.quantized import QuantizedLinear
from fastlstm.runtime import layers as rt_layers
from fastlstm.runtime import quant as rt_quant

pytestmark = pytest.mark.skipif(not _ext.available(), reason=f"fastlstm._C unavailable: {_ext.load_error}")


def test_buf_is_address_numel_itemsize_owner():
    t = torch.zeros(3, 5, dtype=torch.float64)
    assert _ext.buf(t) == (t.data_ptr(), 15, 8, t) and _ext.buf(t)[3] is t
    a = np.zeros(7, np.int8)
    assert _ext.buf(a)[1:3] == (7, 1) and _ext.buf(a)[3] is a
    assert _ext.buf(None) == (0, 0, 0, None)


@pytest.mark.parametrize("make", [lambda: torch.zeros(4, 6).t(), lambda: torch.zeros(4, 6)[:, ::2],
                                  lambda: np.zeros((4, 6), np.float32).T], ids=["transposed", "sliced", "numpy-T"])
def test_buf_refuses_non_contiguous(make):
    with pytest.raises(ValueError, match="contiguous"):
        _ext.buf(make())


def test_binding_refuses_buffers_without_owner_or_itemsize():
    x = torch.zeros(10)
    for bad in [(x.data_ptr(), 10), (x.data_ptr(), 10, 4, None), (x.data_ptr(), 10, 4), ("a", 10, 4, x)]:
        with pytest.raises(TypeError, match="buffer"):
            _ext._C.dropout("float32", bad, _ext.buf(x), 10, 0.5, 1)


def test_owner_keeps_the_buffer_alive_while_the_kernel_runs():
    """The only reference to the input is the tuple handed to _C: while the kernel
    runs without the GIL, another thread collects garbage, and the tensor must live on."""
    n = 1 << 22
    x = torch.ones(n)
    alive = weakref.ref(x)
    args = ("float32", _ext.buf(x), _ext.buf(torch.empty(n)), n, 0.5, 1, 1)
    del x
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            gc.collect()
            torch.ones(n)  # would reuse the freed block if the input were released

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(5):
            _ext._C.dropout(*args)
            assert alive() is not None
    finally:
        stop.set()
        t.join()
    y = args[2][3]
    assert set(torch.unique(y).tolist()) <= {0.0, 2.0} and (y == 2).any()
    del args, y
    gc.collect()
    assert alive() is None  # and nothing else holds it afterwards


@pytest.mark.parametrize("call", [
    lambda: _ext._C.int8_packed_size(2**62, 2**62),
    lambda: _ext._C.int8_packed_size(2**63 - 1, 1),
    lambda: _ext._C.lstm_packed_weights_size("float32", 2, 2**62, 2**62, False),
    lambda: _ext._C.lstm_packed_weights_size("float32", 1, 2**63 - 1, 1, True),
], ids=["int8-2^62", "int8-round-up", "lstm-2^62", "lstm-round-up"])
def test_packed_sizes_do_not_wrap(call):
    with pytest.raises(ValueError, match="overflows"):
        call()


# --------------------------------------------------------------------------
# Every _C entry checks each buffer's element size: record the real calls the
# public API makes, then replay each with one buffer swapped for one of the
# same element count and another element size.
# --------------------------------------------------------------------------


def _run_public_api():
    torch.manual_seed(0)
    x = torch.randn(5, 2, 6)
    lstm = fastlstm.LSTM(6, 8, num_layers=2, bidirectional=True)
    lstm(x)[0].sum().backward()
    with torch.no_grad():
        lstm.weight_hh_l1.mul_(0.5)  # an optimizer-like edit: the prepared stack is rewritten in place
        lstm(x)
        fastlstm.LSTM(6, 8, proj_size=4)(x)
    # A projected stack trains through the per-layer recurrence ops.
    projected = fastlstm.LSTM(6, 8, proj_size=4, num_layers=2)
    projected(x)[0].sum().backward()
    q = k = v = torch.randn(1, 2, 7, 4, requires_grad=True)
    fastlstm.ops.sparse_attention(q, k, v, window=(2, 1))[0].sum().backward()
    torch.ops.fastlstm.sparse_attention_banded(q.detach(), k.detach(), v.detach(), 2, 1, 0.5, None)
    fastlstm.ops.attention.dropout_mask(0.3, 5, 1, 2, 3, 3)
    torch.ops.fastlstm.dropout(torch.randn(20), 0.3, 7)
    with torch.no_grad():
        fastlstm.QuantizedLSTM.from_float(torch.nn.LSTM(6, 8, proj_size=4, bidirectional=True))(x)
        QuantizedLinear.from_float(torch.nn.Linear(6, 3))(torch.randn(4, 6))
    w = np.ones((5, 8), np.int8)
    packed, rowsum = np.empty(_ext._C.int8_packed_size(5, 8), np.int8), np.empty(5, np.int32)
    _ext._C.int8_pack_weights(_ext.buf(w), _ext.buf(packed), _ext.buf(rowsum), 5, 8)
    qmax = _ext._C.int8_kernel_info()[1]
    _ext._C.int8_matmul_s32(_ext.buf(np.ones((3, 8), np.float32)), _ext.buf(packed), _ext.buf(rowsum),
                            _ext.buf(np.empty((3, 5), np.int32)), _ext.buf(np.empty(3, np.float32)), 3, 8, 5, qmax)


@pytest.fixture(scope="module")
def recorded_calls(kernel_call_recorder):
    rec = kernel_call_recorder(_ext._C)
    mp = pytest.MonkeyPatch()
    for module in (_ext, rt_layers, rt_quant):
        mp.setattr(module, "_C", rec)
    try:
        _run_public_api()
    finally:
        mp.undo()
    calls = {}
    for name, args, kwargs in rec.calls:
        calls.setdefault(name, (args, kwargs))  # the first call of each entry
    return calls


def _is_buf(v) -> bool:
    return isinstance(v, tuple) and len(v) == 4 and isinstance(v[0], int) and v[0] != 0


def _other_itemsize(owner):
    """A contiguous buffer with the owner's element count and a different element size."""
    n = owner.numel() if isinstance(owner, torch.Tensor) else owner.size
    size = owner.element_size() if isinstance(owner, torch.Tensor) else owner.itemsize
    return torch.zeros(n, dtype=torch.float64 if size != 8 else torch.float32)


def _buffer_slots(args, kwargs):
    """(where, get, put) for every present buffer of a call, nested layer lists included."""
    slots = []
    for i, v in enumerate(args):
        if _is_buf(v):
            slots.append((f"arg{i}", i, None))
        elif isinstance(v, list):
            for j, layer in enumerate(v):
                for k, b in enumerate(layer):
                    if _is_buf(b):
                        slots.append((f"arg{i}[{j}][{k}]", i, (j, k)))
    for key, v in kwargs.items():
        if _is_buf(v):
            slots.append((key, key, None))
    return slots


EXPECTED_ENTRIES = {
    "lstm_recurrence_fwd", "lstm_recurrence_bwd", "sparse_attention_fwd", "sparse_attention_bwd",
    "attention_dropout_mask", "dropout", "int8_lstm_fwd", "int8_linear", "int8_pack_weights", "int8_matmul_s32",
    "lstm_stack_train_fwd", "lstm_stack_train_bwd", "lstm_prepare_stack",
}


def test_the_public_api_reaches_every_buffer_entry(recorded_calls):
    assert EXPECTED_ENTRIES <= set(recorded_calls), sorted(EXPECTED_ENTRIES - set(recorded_calls))


@pytest.mark.parametrize("entry", sorted(EXPECTED_ENTRIES | {"lstm_stack_fwd", "lstm_input_projection",
                                                             "lstm_pack_weights"}))
def test_every_buffer_of_every_entry_checks_its_element_size(recorded_calls, entry):
    if entry not in recorded_calls:
        pytest.skip(f"{entry} is not used at this CPU capability ({_ext.cpu_capability()})")
    args, kwargs = recorded_calls[entry]
    fn = getattr(_ext._C, entry)
    fn(*args, **kwargs)  # the recorded call itself is valid
    slots = _buffer_slots(args, kwargs)
    assert slots
    for where, key, nested in slots:
        a, kw = list(args), dict(kwargs)
        holder = kw if isinstance(key, str) else a
        if nested is None:
            holder[key] = _ext.buf(_other_itemsize(holder[key][3]))
        else:
            layers = [list(layer) for layer in holder[key]]
            j, k = nested
            layers[j][k] = _ext.buf(_other_itemsize(layers[j][k][3]))
            holder[key] = layers
        with pytest.raises(ValueError, match="-byte elements") as err:
            fn(*a, **kw)
        assert str(err.value).startswith(entry), where
