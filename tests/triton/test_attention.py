"""fastlstm/triton/attention.py against the reference.

Without a GPU the kernels run under TRITON_INTERPRET=1 on CPU tensors (set
here before triton compiles anything), so shapes stay small. With a GPU the
same tests run on CUDA tensors.
"""

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Set only around this module's imports and tests (see tests/conftest.py):
# a process-wide value would make the Triton backend look available everywhere.
INTERPRET = "1" if DEVICE == "cpu" else os.environ.get("TRITON_INTERPRET")
_saved = os.environ.get("TRITON_INTERPRET")
if INTERPRET is not None:
    os.environ["TRITON_INTERPRET"] = INTERPRET
try:
    triton = pytest.importorskip("triton", reason="triton is not installed")
    from fastlstm.triton import attention as triton_attention  # noqa: E402,F401  (registers the ops)
finally:
    if _saved is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _saved

from fastlstm import reference  # noqa: E402
from fastlstm.ops import sparse_attention  # noqa: E402
from fastlstm.testing import assert_parity  # noqa: E402


@pytest.fixture(autouse=True)
def _interpreter(monkeypatch):
    if INTERPRET is not None:
        monkeypatch.setenv("TRITON_INTERPRET", INTERPRET)

# name: (B, H, Tq, Tk, D, Dv, window, global_tokens, padded); tiles are 64 wide,
# so T = 150 spans three tiles with a ragged last one and windows skip tiles.
CASES = {
    "causal": (1, 2, 150, 150, 8, 8, (20, 0), 0, False),
    "symmetric-padded": (2, 1, 150, 150, 16, 16, (10, 10), 0, True),
    "asymmetric": (1, 1, 97, 97, 5, 7, (3, 40), 0, False),
    "global": (2, 1, 150, 150, 8, 8, (5, 5), 3, True),
    "dense": (1, 2, 37, 37, 8, 8, None, 0, True),
    "window-wider-than-T": (1, 1, 20, 20, 4, 4, (100, 100), 0, False),
    "T1": (2, 1, 1, 1, 4, 4, (2, 2), 0, False),
    "cross-lengths": (1, 1, 70, 90, 8, 8, (4, 30), 2, True),
}


def _inputs(B, H, Tq, Tk, D, Dv, window, G, padded):
    def r(*shape):
        return torch.randn(*shape, device=DEVICE).requires_grad_()

    kpm = None
    if padded:
        kpm = torch.rand(B, Tk, device=DEVICE) < 0.3
        kpm[0, -min(3, Tk):] = True
    return r(B, H, Tq, D), r(B, H, Tk, D), r(B, H, Tk, Dv), window, G, kpm


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_matches_reference(case):
    q, k, v, window, G, kpm = _inputs(*case)
    out, lse = sparse_attention(q, k, v, window, G, key_padding_mask=kpm, backend="triton")
    ref, ref_lse = reference.sparse_attention(q, k, v, window, G, key_padding_mask=kpm)
    assert_parity(out, ref, name="out")
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    finite = torch.isfinite(ref_lse)
    assert_parity(lse[finite], ref_lse[finite], name="lse")
    w = torch.randn_like(ref)
    grads = torch.autograd.grad((out * w).sum(), (q, k, v))
    ref_grads = torch.autograd.grad((ref * w).sum(), (q, k, v))
    for name, a, b in zip("qkv", grads, ref_grads):
        assert_parity(a, b, name=f"d{name}")


def test_fully_padded_rows_give_zero():
    q, k, v, _, _, _ = _inputs(2, 1, 10, 10, 4, 4, None, 0, False)
    kpm = torch.zeros(2, 10, dtype=torch.bool, device=DEVICE)
    kpm[1] = True
    out, lse = sparse_attention(q, k, v, (2, 2), key_padding_mask=kpm, backend="triton")
    assert torch.equal(out[1], torch.zeros_like(out[1])) and torch.isneginf(lse[1]).all()
    for g in torch.autograd.grad(out.sum(), (q, k, v)):
        assert torch.isfinite(g).all() and torch.equal(g[1], torch.zeros_like(g[1]))


def test_skips_tiles_outside_the_window():
    """NaN keys poison every query tile that loads their key tile (0 * NaN), so
    finite outputs far away prove those tiles were never loaded."""
    q, k, v, _, _, _ = _inputs(1, 1, 320, 320, 8, 8, None, 0, False)
    k, v = k.detach().clone(), v.detach().clone()
    k[0, 0, 140:180] = float("nan")  # inside key tile 2 (rows 128..191) only
    v[0, 0, 140:180] = float("nan")
    out, _ = sparse_attention(q.detach(), k, v, (2, 2), backend="triton")
    assert torch.isnan(out[0, 0, 140:180]).all()
    # Query tile 0 reaches keys < 66 (tiles 0, 1); query tile 4 keys >= 254 (tiles 3, 4).
    assert torch.isfinite(out[0, 0, :64]).all() and torch.isfinite(out[0, 0, 256:]).all()


def test_opcheck_schema_and_autograd():
    q, k, v, window, G, kpm = _inputs(*CASES["global"])
    args = (q, k, v, window[0], window[1], G, 0.3, kpm)
    torch.library.opcheck(torch.ops.fastlstm.triton_sparse_attention.default, args,
                          test_utils=("test_schema", "test_autograd_registration"))


# Under TRITON_INTERPRET=1, torch's wrap_triton hands back the raw interpreted
# function, so fake-tensor tracing cannot run it: these need compiled Triton (a GPU).
@pytest.mark.gpu
def test_opcheck_fake_tensor():
    q, k, v, window, G, kpm = _inputs(*CASES["global"])
    torch.library.opcheck(torch.ops.fastlstm.triton_sparse_attention.default, (q, k, v, 5, 5, G, 0.3, kpm))
    out, lse = torch.ops.fastlstm.triton_sparse_attention(q, k, v, 5, 5, G, 0.3, kpm)
    args = (q.detach(), k.detach(), v.detach(), out.detach(), lse.detach(), torch.randn_like(out), 5, 5, G, 0.3, kpm)
    torch.library.opcheck(torch.ops.fastlstm.triton_sparse_attention_backward.default, args)


@pytest.mark.gpu
def test_compile_fullgraph():
    q, k, v, window, G, kpm = _inputs(*CASES["global"])

    def fn(q, k, v):
        return sparse_attention(q, k, v, window, G, key_padding_mask=kpm, backend="triton")[0]

    out = torch.compile(fn, fullgraph=True)(q, k, v)
    eager = fn(q, k, v)
    assert_parity(out, eager)
    for a, b in zip(torch.autograd.grad(out.sum(), (q, k, v)), torch.autograd.grad(eager.sum(), (q, k, v))):
        assert_parity(a, b)


@pytest.mark.gpu
def test_long_sequence_half_precision():
    q, k, v = (torch.randn(2, 4, 4096, 32, device="cuda", dtype=torch.float16) for _ in range(3))
    out, _ = sparse_attention(q, k, v, (64, 64), backend="triton")
    ref, _ = reference.sparse_attention(q.float(), k.float(), v.float(), (64, 64))
    assert_parity(out, ref.half(), torch.float16)
