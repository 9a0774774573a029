"""The CUDA LSTM recurrence run on the CPU through its real host code:
tests/cuda/emulation/ compiles csrc/cuda/lstm_persistent.cu (make_plan, the
forward and backward launchers) against a stub CUDA runtime that reports
H100 or A100 limits and checks every launch as the driver would, and runs the
device code with one fiber per CUDA thread (64 threads per block, so the
per-warp and per-block loops wrap). 16-bit types round like the hardware.
Skipped only where no C++20 compiler exists.
"""

import re
import subprocess

import numpy as np
import pytest
import torch

from fastlstm import reference
from fastlstm.testing import assert_parity, within_error_rule

NAMES = ["y", "h_n", "c_n", "gates", "cells", "d gx", "d h0", "d c0"]
DTYPES = {"double": torch.float64, "float": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory, build_emulator):
    return build_emulator("lstm_emu.cpp", tmp_path_factory.mktemp("emu") / "lstm_emu", "FASTLSTM_CUDA_THREADS=64")


def _stats(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", stdout))


def _inputs(T, B, D, H, lengths, dtype):
    """Inputs rounded to `dtype` (so kernel and reference see the same values), as float64."""
    g = torch.Generator().manual_seed(1)
    r = lambda *s: (torch.randn(*s, generator=g, dtype=torch.float64) * 0.5).to(dtype).double()  # noqa: E731
    return r(T, B, D, 4 * H), r(D, 4 * H, H) / max(1.0, H**0.5 / 4), r(D, B, H), r(D, B, H), r(T, B, D, H), \
        r(D, B, H), r(D, B, H)


def _reference(inputs, lengths_t, dtype):
    gx, w_hh, h0, c0, dy, dhn, dcn = (t.to(dtype) for t in inputs)
    leaves = [t.clone().requires_grad_() for t in (gx, w_hh, h0, c0)]
    ref = reference.lstm_recurrence(leaves[0], leaves[1], None, leaves[2], leaves[3], lengths_t)
    loss = (ref[0] * dy).sum() + (ref[1] * dhn).sum() + (ref[2] * dcn).sum()
    d_gx, _, d_h0, d_c0 = torch.autograd.grad(loss, leaves)
    return [t.detach() for t in ref] + [d_gx, d_h0, d_c0]


def _emulate(emulator, tmp_path, device, dtype, mode, T, B, D, H, lengths=None):
    inputs = _inputs(T, B, D, H, lengths, DTYPES[dtype])
    lengths_t = torch.tensor(lengths, dtype=torch.int64) if lengths is not None else None
    gx, w_hh, h0, c0, dy, dhn, dcn = inputs
    parts = [gx, w_hh, h0, c0] + ([lengths_t.double()] if lengths is not None else []) + [dy, dhn, dcn]
    inp, out = tmp_path / "in.bin", tmp_path / "out.bin"
    np.concatenate([p.reshape(-1).numpy() for p in parts]).tofile(inp)
    args = [emulator, "run", device, dtype, mode, T, B, D, H, int(lengths is not None), inp, out]
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    shapes = [(T, B, D, H), (D, B, H), (D, B, H), (T, B, D, 4 * H), (T, B, D, H), (T, B, D, 4 * H), (D, B, H), (D, B, H)]
    return emulator.read_outputs(out, shapes), inputs, lengths_t, _stats(result.stdout)


# (device, T, B, D, H, lengths): on A100 (108 SMs) H=217 gives 3 units per block
# and a partial last slice; batch remainders in the 4-row unroll; lengths with 0.
CASES = {
    "h100-bi-lengths": ("h100", 4, 3, 2, 7, [4, 1, 0]),
    "a100-uni-H217-partial-slice": ("a100", 2, 5, 1, 217, None),
    "h100-uni-lengths-B6": ("h100", 3, 6, 1, 6, [3, 3, 2, 3, 1, 0]),
}


@pytest.mark.parametrize("mode", ["persistent", "per-step"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_launchers_match_reference_fp64(emulator, tmp_path, case, mode):
    device, T, B, D, H, lengths = case
    outputs, inputs, lengths_t, stats = _emulate(emulator, tmp_path, device, "double", mode, T, B, D, H, lengths)
    assert int(stats["cooperative_launches"]) == (2 if mode == "persistent" else 0)
    for name, a, b in zip(NAMES, outputs, _reference(inputs, lengths_t, torch.float64)):
        assert_parity(a, b, torch.float64, name=name)


def test_launchers_match_reference_fp32(emulator, tmp_path):
    outputs, inputs, lengths_t, stats = _emulate(emulator, tmp_path, "h100", "float", "auto", 3, 2, 2, 5)
    assert stats["plan_fwd"] == "persistent" and int(stats["cooperative_launches"]) == 2
    for name, a, b in zip(NAMES, outputs, _reference(inputs, lengths_t, torch.float64)):
        assert_parity(a.float(), b.float(), torch.float32, name=name)


def _assert_error_rule(outputs, inputs, lengths_t, dtype):
    expected = _reference(inputs, lengths_t, torch.float64)
    peer = _reference(inputs, lengths_t, dtype)
    for name, fused, ref, p in zip(NAMES, outputs, expected, peer):
        ok, err, peer_err = within_error_rule(fused, p, ref)
        assert ok, f"{name}: error {err:.3g} > 2 x torch {dtype} error {peer_err:.3g}"


# 16-bit storage of gates, cells and d-gates, re-read by the backward pass:
# against the fp64 reference, within 2x the error of the reference run in the
# same dtype. Small H here; H = 1024 below.
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("mode", ["persistent", "per-step"])
def test_16bit_forward_and_gradients_error_rule(emulator, tmp_path, dtype, mode):
    outputs, inputs, lengths_t, _ = _emulate(emulator, tmp_path, "h100", dtype, mode, 6, 3, 2, 40, [6, 3, 1])
    _assert_error_rule(outputs, inputs, lengths_t, DTYPES[dtype])


def test_16bit_conversions_round_like_torch(emulator, tmp_path):
    """The emulated __float2bfloat16 / __float2half round to nearest even as
    torch does: zeros, ties, subnormals, overflow to infinity, NaN."""
    g = torch.Generator().manual_seed(0)
    special = [0.0, -0.0, 1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-11, 1 + 3 * 2**-11, 65504.0, 65519.0, 65520.0, 1e6,
               2**-24, 2**-25, 3 * 2**-26, 2**-14 - 2**-25, 1e-30, float("inf"), float("-inf"), float("nan")]
    x = torch.cat([torch.tensor(special), torch.randn(4000, generator=g) * 10 ** torch.randint(-8, 6, (4000,), generator=g)])
    x = x.float()
    inp, out = tmp_path / "x.bin", tmp_path / "r.bin"
    x.numpy().tofile(inp)
    result = subprocess.run([str(emulator), "round", str(inp), str(out)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    r = torch.from_numpy(np.fromfile(out, dtype=np.float32)).reshape(-1, 2)
    torch.testing.assert_close(r[:, 0], x.to(torch.bfloat16).float(), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(r[:, 1], x.to(torch.float16).float(), rtol=0, atol=0, equal_nan=True)
    assert torch.equal(torch.signbit(r[:2, 1]), torch.tensor([False, True]))


def test_16bit_storage_rounds_for_real(emulator, tmp_path):
    """Stored gates are values of the storage type (rounded, not kept as float):
    bf16 gates are bf16 values; fp16 gates are fp16 values and not all bf16 ones."""
    bf16_gates = _emulate(emulator, tmp_path, "h100", "bfloat16", "auto", 2, 2, 1, 8)[0][3]
    fp16_gates = _emulate(emulator, tmp_path, "h100", "float16", "auto", 2, 2, 1, 8)[0][3]
    assert torch.equal(bf16_gates, bf16_gates.to(torch.bfloat16).double())
    assert torch.equal(fp16_gates, fp16_gates.to(torch.float16).double())
    assert not torch.equal(fp16_gates, fp16_gates.to(torch.bfloat16).double())


# H = 1024 bidirectional, the full grid of each device. bf16 on A100: the
# persistent forward with W_hh slices of 152 KB (160 KB in all), above the
# 48 KB default, so cudaFuncSetAttribute must have raised the limit (the stub
# refuses otherwise); the backward's 172 KB exceed the 163 KB opt-in, so it
# runs per-step. fp32 on H100: W_hh does not fit on chip: per-step both ways.
def test_h1024_bidirectional_bf16_a100_persistent_above_48k(emulator, tmp_path):
    outputs, inputs, lengths_t, stats = _emulate(emulator, tmp_path, "a100", "bfloat16", "auto", 1, 1, 2, 1024)
    assert stats["plan_fwd"] == "persistent" and stats["plan_bwd"] == "per-step"
    assert int(stats["cooperative_launches"]) == 1
    assert int(stats["max_dynamic_smem"]) > 48 * 1024
    assert int(stats["oversized_launches"]) == 0
    _assert_error_rule(outputs, inputs, lengths_t, torch.bfloat16)


def test_h1024_bidirectional_fp32_h100_per_step(emulator, tmp_path):
    outputs, inputs, lengths_t, stats = _emulate(emulator, tmp_path, "h100", "float", "auto", 1, 1, 2, 1024)
    assert stats["plan_fwd"] == "per-step" and int(stats["cooperative_launches"]) == 0
    for name, a, b in zip(NAMES, outputs, _reference(inputs, lengths_t, torch.float64)):
        assert_parity(a.float(), b.float(), torch.float32, name=name)


def test_shared_memory_attribute_set_once_per_size_across_host_threads(emulator):
    """Two host threads plan and launch H = 448 and 512 (fp32, bidirectional,
    50 and 64 KB of shared memory on H100) in opposite orders: every launch is
    accepted and the attribute is raised at most once per kernel and size."""
    sizes = [448, 512]
    threads = 2
    result = subprocess.run([str(emulator), "race", "h100", str(threads), *map(str, sizes)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    stats = _stats(result.stdout)
    assert int(stats["failures"]) == 0 and int(stats["oversized_launches"]) == 0
    assert int(stats["launches"]) == threads * len(sizes) * 2
    assert 1 <= int(stats["set_attribute_calls"]) <= 2 * len(sizes)  # two persistent kernels (fwd, bwd)
