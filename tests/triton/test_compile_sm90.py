"""The Triton kernels compiled ahead of time for an H100 (sm_90) target, no GPU
needed: for the block configurations the launchers pick (`_blocks` in
fastlstm/triton/lstm.py and attention.py), shared memory stays within the
H100's 227 KB per block, and whether ptxas leaves a stack frame (spills).

Compiling takes up to minutes of CPU per configuration, so by default only the
largest configuration of each kernel in fp32 (IEEE dots: the most registers)
is compiled; shared memory and register pressure grow with every block
dimension, so it bounds the rest. FASTLSTM_TRITON_AOT=all compiles every
configuration in fp32 and bf16 (an hour of CPU or more; not run by CI). Compiles run in a fresh process
(tests/triton/aot_sm90.py): this session imports Triton in interpreter mode.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


def _launchers():
    """fastlstm.triton.lstm and .attention, imported as the other Triton tests
    import them (interpreted where no GPU exists): a module imported here first
    decides, for the whole session, whether its kernels are interpreted."""
    import torch

    saved = os.environ.get("TRITON_INTERPRET")
    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        from fastlstm.triton import attention, lstm
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved
    return lstm, attention

ROOT = pathlib.Path(__file__).resolve().parents[2]
H100_SMEM_OPTIN = 227 * 1024
ALL = os.environ.get("FASTLSTM_TRITON_AOT") == "all"


def _lstm_blocks():
    lstm, _ = _launchers()
    return sorted({lstm._blocks(B, H) for B in (1, 16, 17, 64) for H in (1, 16, 32, 33, 64, 1024)})


def _attention_blocks():
    _, attention = _launchers()
    dims = (1, 16, 17, 32, 64, 65, attention.MAX_HEAD_DIM)
    return sorted({attention._blocks(D, Dv) for D in dims for Dv in dims}, key=lambda b: (b[2] * b[3], b))


def _configs():
    configs = []
    lstm_blocks = _lstm_blocks() if ALL else _lstm_blocks()[-1:]
    attention_blocks = _attention_blocks() if ALL else _attention_blocks()[-1:]
    for ptr in ("*fp32", "*bf16") if ALL else ("*fp32",):
        ieee = ptr == "*fp32"
        for kernel in ("_lstm_fwd_kernel", "_lstm_bwd_kernel"):
            for bb, bh, bk in lstm_blocks:
                const = dict(D=2, HAS_LENGTHS=True, IEEE=ieee, BLOCK_B=bb, BLOCK_H=bh, BLOCK_K=bk)
                if kernel == "_lstm_fwd_kernel":
                    const["SAVE"] = True
                configs.append([kernel, ptr, const])
        for kernel in ("_attn_fwd_kernel", "_attn_bwd_dq_kernel", "_attn_bwd_dkdv_kernel"):
            for bm, bn, bd, bdv in attention_blocks:
                const = dict(HAS_PAD=True, IEEE=ieee, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, BLOCK_DV=bdv)
                configs.append([kernel, ptr, const])
    return configs


CONFIGS = _configs() if importlib.util.find_spec("triton") is not None else []


def _id(config):
    kernel, ptr, const = config
    blocks = "-".join(f"{k[6:]}{v}" for k, v in const.items() if k.startswith("BLOCK_"))
    return f"{kernel.strip('_')}-{ptr[1:]}-{blocks}"


@pytest.fixture(scope="module")
def compiled():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    result = subprocess.run([sys.executable, str(ROOT / "tests/triton/aot_sm90.py"), json.dumps(CONFIGS)],
                            capture_output=True, text=True, env=env, timeout=3600)
    assert result.returncode == 0, result.stderr[-4000:]
    return {json.dumps(r["key"]): r for r in map(json.loads, result.stdout.splitlines())}


@pytest.mark.parametrize("config", CONFIGS, ids=[_id(c) for c in CONFIGS])
def test_kernel_shared_memory_fits_h100(compiled, config):
    r = compiled[json.dumps(config)]
    assert r["shared"] <= H100_SMEM_OPTIN, f"{r['shared']} B shared memory > the H100's {H100_SMEM_OPTIN}"


# Known: with Triton 3.9 for sm_90 every largest fp32 configuration keeps a
# stack frame (88 to 3296 B at 4 warps; 8 warps moves it but does not remove
# it), so these are strict xfails until tile sizes are tuned where a GPU can
# time them (issue 24, half two). A configuration that stops spilling fails
# here as XPASS, so the mark cannot outlive the fix.
@pytest.mark.xfail(strict=True, reason="fp32 largest tiles spill on sm_90 (Triton 3.9); tuning needs a GPU")
@pytest.mark.parametrize("config", CONFIGS, ids=[_id(c) for c in CONFIGS])
def test_kernel_does_not_spill(compiled, config):
    r = compiled[json.dumps(config)]
    assert r["stack"] == 0 and r["local"] == 0, (
        f"spills: {r['stack']} B stack, {r['local']} B local, {r['regs']} regs, {r['warps']} warps")
