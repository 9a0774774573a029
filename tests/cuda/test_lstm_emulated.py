"""The CUDA LSTM kernels' device code (csrc/cuda/lstm_kernels.cuh) run on the
CPU: tests/cuda/emulation/ compiles it as host C++ with one thread per CUDA
thread (block, warp-shuffle and grid barriers emulated), 64 threads per block
so the per-warp and per-block loops wrap. Both launch modes, forward and
backward, against the reference. Skipped only where no C++20 compiler exists.
"""

import pathlib
import shutil
import subprocess

import numpy as np
import pytest
import torch

from fastlstm import reference
from fastlstm.testing import assert_parity

ROOT = pathlib.Path(__file__).resolve().parents[2]
CXX = shutil.which("g++") or shutil.which("clang++")
pytestmark = pytest.mark.skipif(CXX is None, reason="no C++ compiler on PATH to build the emulation")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    exe = tmp_path_factory.mktemp("emu") / "lstm_emu"
    cmd = [CXX, "-std=c++20", "-O1", "-pthread", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas",
           "-DFASTLSTM_CUDA_THREADS=64", f"-I{ROOT / 'csrc/include'}", f"-I{ROOT / 'csrc/cuda'}",
           f"-I{ROOT / 'tests/cuda/emulation'}", str(ROOT / "tests/cuda/emulation/lstm_emu.cpp"), "-o", str(exe)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return exe


# (T, B, D, H, units per block, batch chunk, lengths): partial last unit slice,
# batch chunks smaller than B, a remainder in the 4-row batch unroll, rows
# per block above the 2 warps.
CASES = {
    "bi-lengths": (4, 3, 2, 7, 4, 3, [4, 1, 0]),
    "uni-one-block": (4, 5, 1, 8, 8, 4, None),
    "bi-H5": (3, 2, 2, 5, 2, 2, None),
    "uni-lengths-B6": (4, 6, 1, 6, 4, 6, [4, 4, 2, 3, 1, 0]),
}


def _run(emulator, tmp_path, dtype, case, persistent):
    T, B, D, H, units, bc, lengths = case
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64) * 0.5  # noqa: E731
    gx, w_hh, h0, c0 = r(T, B, D, 4 * H), r(D, 4 * H, H), r(D, B, H), r(D, B, H)
    dy, dhn, dcn = r(T, B, D, H), r(D, B, H), r(D, B, H)
    lengths_t = torch.tensor(lengths, dtype=torch.int64) if lengths is not None else None
    parts = [gx, w_hh, h0, c0] + ([lengths_t.double()] if lengths is not None else []) + [dy, dhn, dcn]
    inp, out = tmp_path / "in.bin", tmp_path / "out.bin"
    np.concatenate([p.reshape(-1).numpy() for p in parts]).tofile(inp)
    args = [str(emulator), dtype, T, B, D, H, units, bc, int(persistent), int(lengths is not None), inp, out]
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    flat = torch.from_numpy(np.fromfile(out, dtype=np.float64))
    shapes = [(T, B, D, H), (D, B, H), (D, B, H), (T, B, D, 4 * H), (T, B, D, H), (T, B, D, 4 * H), (D, B, H), (D, B, H)]
    outputs, offset = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        outputs.append(flat[offset : offset + n].reshape(shape))
        offset += n
    assert offset == flat.numel()

    leaves = [t.clone().requires_grad_() for t in (gx, w_hh, h0, c0)]
    ref = reference.lstm_recurrence(leaves[0], leaves[1], None, leaves[2], leaves[3], lengths_t)
    loss = (ref[0] * dy).sum() + (ref[1] * dhn).sum() + (ref[2] * dcn).sum()
    d_gx, _, d_h0, d_c0 = torch.autograd.grad(loss, leaves)
    expected = [t.detach() for t in ref] + [d_gx, d_h0, d_c0]
    return outputs, expected


@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "per-step"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_kernels_match_reference_fp64(emulator, tmp_path, case, persistent):
    outputs, expected = _run(emulator, tmp_path, "double", case, persistent)
    names = ["y", "h_n", "c_n", "gates", "cells", "d gx", "d h0", "d c0"]
    for name, a, b in zip(names, outputs, expected):
        assert_parity(a, b, torch.float64, name=name)


def test_kernels_match_reference_fp32(emulator, tmp_path):
    outputs, expected = _run(emulator, tmp_path, "float", CASES["bi-H5"], True)
    names = ["y", "h_n", "c_n", "gates", "cells", "d gx", "d h0", "d c0"]
    for name, a, b in zip(names, outputs, expected):
        assert_parity(a.float(), b.float(), torch.float32, name=name)
