"""The CUDA sparse attention (csrc/cuda/sparse_attention.cu, host entry points
and kernels) run on the CPU: tests/cuda/emulation/ compiles it against the stub
CUDA runtime and runs each launch with one fiber per CUDA thread. Output, lse
and every gradient against the reference. Skipped only where no C++20
compiler exists.
"""

import subprocess

import numpy as np
import pytest
import torch

from fastlstm import reference
from fastlstm.testing import assert_parity



@pytest.fixture(scope="module")
def emulator(tmp_path_factory, build_emulator):
    return build_emulator("attention_emu.cpp", tmp_path_factory.mktemp("emu") / "attention_emu")


def _run(emulator, tmp_path, dtype, B, heads, Tq, Tk, D, Dv, window, global_tokens, padding):
    g = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    q, k, v, dout = r(B, heads, Tq, D), r(B, heads, Tk, D), r(B, heads, Tk, Dv), r(B, heads, Tq, Dv)
    pad = None
    if padding is not None:
        pad = torch.zeros(B, Tk, dtype=torch.bool)
        for b, n in enumerate(padding):
            pad[b, Tk - n :] = n > 0
    scale = D**-0.5
    parts = [q, k, v, dout] + ([pad.double()] if pad is not None else [])
    inp, out = tmp_path / "in.bin", tmp_path / "out.bin"
    np.concatenate([p.reshape(-1).numpy() for p in parts]).tofile(inp)
    left, right = (-1, -1) if window is None else window
    args = [emulator, dtype, B, heads, Tq, Tk, D, Dv, left, right, global_tokens, int(pad is not None), repr(scale),
            inp, out]
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    outputs = emulator.read_outputs(out, [(B, heads, Tq, Dv), (B, heads, Tq), (B, heads, Tq, D), (B, heads, Tk, D),
                                 (B, heads, Tk, Dv)])

    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    ref_out, ref_lse = reference.sparse_attention(*leaves, window=window, global_tokens=global_tokens, scale=scale,
                                                  key_padding_mask=pad)
    dq, dk, dv = torch.autograd.grad((ref_out * dout).sum(), leaves)
    return outputs, [ref_out.detach(), ref_lse, dq, dk, dv]


# (B, heads, Tq, Tk, D, Dv, window, global tokens, padded keys per batch):
# head dims that wrap the 32 lanes (D = 40: two chunks, a partial one; 128:
# the maximum), query rows not a multiple of the 4 warps, rows with no allowed
# key (padding), cross attention (Tq != Tk).
CASES = {
    "window-global-D40": (1, 2, 9, 9, 40, 40, (2, 1), 1, None),
    "causal-padding-D8": (2, 1, 7, 7, 8, 8, (3, 0), 0, [0, 7]),
    "cross-unbounded-D128-Dv24": (1, 1, 5, 6, 128, 24, None, 0, None),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_cuda_sparse_attention_matches_reference_fp64(emulator, tmp_path, case):
    outputs, expected = _run(emulator, tmp_path, "double", *case)
    for name, a, b in zip(["out", "lse", "dq", "dk", "dv"], outputs, expected):
        assert_parity(a, b, torch.float64, name=name)


def test_cuda_sparse_attention_matches_reference_fp32(emulator, tmp_path):
    outputs, expected = _run(emulator, tmp_path, "float", *CASES["window-global-D40"])
    for name, a, b in zip(["out", "lse", "dq", "dk", "dv"], outputs, expected):
        assert_parity(a.float(), b.float(), torch.float32, name=name)


def test_cuda_sparse_attention_rejects_head_dim_above_128(emulator, tmp_path):
    with pytest.raises(AssertionError, match="head_dim and v_dim must be <= 128"):
        _run(emulator, tmp_path, "float", 1, 1, 2, 2, 129, 8, (1, 1), 0, None)
