"""The per-microarchitecture tuning chosen from CPUID (csrc/cpu/dispatch.cpp,
cpu_tuning.h): the choice as a pure function of a CPU description, the
FASTLSTM_CPU_PROFILE override, and bitwise results across thread counts under
every profile."""

import pytest

from fastlstm import _ext

needs_c = pytest.mark.skipif(not _ext.available(), reason="fastlstm._C not built")

SPR = dict(vendor="GenuineIntel", family=6, model=0x8F, l1d_bytes=48 << 10, l2_bytes=2 << 20,
           l3_bytes=105 << 20, avx2=True, avx512=True, avx512_vnni=True, amx_int8=True)
ZEN4 = dict(vendor="AuthenticAMD", family=0x19, model=0x11, l1d_bytes=32 << 10, l2_bytes=1 << 20,
            l3_bytes=32 << 20, avx2=True, avx512=True, avx512_vnni=True, amx_int8=False)
ZEN3 = dict(ZEN4, model=0x21, l2_bytes=512 << 10, avx512=False, avx512_vnni=False)
PROFILES = ["intel_avx512", "amd_zen4", "generic"]


@needs_c
def test_sapphire_rapids_gets_the_intel_profile():
    t = _ext._C.cpu_tuning_for(SPR)
    assert t["profile"] == "intel_avx512" and t["isa"] == "avx512_vnni" and t["int8_amx"]
    assert t["big_weights_bytes"] == 1 << 20  # half of a 2 MB L2


@needs_c
def test_zen4_gets_its_own_profile():
    t = _ext._C.cpu_tuning_for(ZEN4)
    assert t["profile"] == "amd_zen4" and t["isa"] == "avx512_vnni"
    assert not t["int8_amx"]  # Zen 4 has no AMX
    assert t["big_weights_bytes"] == 512 << 10  # half of a 1 MB L2: splits W_hh across cores earlier


@needs_c
def test_amd_without_avx512_uses_avx2():
    t = _ext._C.cpu_tuning_for(ZEN3)
    assert t["profile"] == "amd_avx2" and t["isa"] == "avx2" and t["big_weights_bytes"] == 256 << 10


@needs_c
def test_unknown_description_key_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown key 'l2'"):
        _ext._C.cpu_tuning_for({"l2": 1})


@needs_c
def test_this_cpu_is_described_and_tuned():
    c = _ext._C.cpu_description()
    assert c["vendor"] and c["l2_bytes"] > 0, c
    assert _ext._C.cpu_tuning() == _ext._C.cpu_tuning_for(c)


@needs_c
@pytest.mark.parametrize("profile", PROFILES)
def test_profile_env_forces_the_profile(profile, python_subprocess):
    code = "import fastlstm._ext as e, json; print(json.dumps(e._C.cpu_tuning()))"
    result = python_subprocess(code, FASTLSTM_CPU_PROFILE=profile)
    assert result.returncode == 0, result.stderr
    import json

    forced = json.loads(result.stdout)
    expected = dict(_ext._C.cpu_profile_description(profile))
    here = _ext._C.cpu_description()
    for flag in ("avx2", "avx512", "avx512_vnni", "amx_int8"):  # never above this CPU's features
        expected[flag] = expected[flag] and here[flag]
    assert forced == _ext._C.cpu_tuning_for(expected)


def test_bad_profile_env_is_a_clear_error(python_subprocess):
    result = python_subprocess("import fastlstm", FASTLSTM_CPU_PROFILE="zen9")
    assert result.returncode != 0 and "FASTLSTM_CPU_PROFILE" in result.stderr


# Shapes on both sides of each profile's thresholds: H = 192 (W_hh 576 KB) is a
# big W_hh for amd_zen4 (unit-split team) and not for intel_avx512 (batch plan).
# dx and dW_ih are torch GEMMs (over K = 8H and K = T*B) whose reduction split
# MKL picks by thread count; they are not under the profile, so the check
# covers what the kernels produce: outputs, states, dW_hh and the bias grads.
_BITWISE = """
import torch, fastlstm
torch.manual_seed(0)
for H, B, bi in ((192, 1, False), (192, 16, False), (128, 1, True), (256, 24, False)):
    m = fastlstm.LSTM(32, H, bidirectional=bi, backend="cpu")
    x = torch.randn(40, B, 32)
    runs = []
    for threads in (1, 2, 1, 2):
        torch.set_num_threads(threads)
        out, (h, c) = m(x)
        params = [p for n, p in m.named_parameters() if not n.startswith("weight_ih")]
        grads = torch.autograd.grad((out * out).sum() + h.sum(), params)
        runs.append([out.detach(), h.detach(), *grads])
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(run, runs[0])), (H, B, bi)
print(fastlstm._ext._C.cpu_tuning()["profile"])
"""


@needs_c
@pytest.mark.parametrize("profile", PROFILES)
def test_forced_profile_is_bitwise_across_thread_counts(profile, python_subprocess):
    result = python_subprocess(_BITWISE, FASTLSTM_CPU_PROFILE=profile)
    assert result.returncode == 0, result.stderr[-2000:]
