"""fastlstm._C: ISA dispatch, the fallback when it cannot load, and the
binding's own argument checks."""

import pytest
import torch

import fastlstm
from fastlstm import _ext

needs_c = pytest.mark.skipif(not _ext.available(), reason="fastlstm._C not built")
LEVELS = ["scalar", "avx2", "avx512", "avx512_vnni"]


@needs_c
def test_capability_is_known_and_lowerable():
    detected = _ext._C.detected_cpu_capability()
    assert detected in LEVELS
    assert _ext.cpu_capability() in LEVELS
    for level in LEVELS:
        active = _ext._C.set_cpu_capability(level)
        assert LEVELS.index(active) == min(LEVELS.index(level), LEVELS.index(detected))
    _ext._C.set_cpu_capability(detected)
    with pytest.raises(ValueError, match="unknown CPU capability"):
        _ext._C.set_cpu_capability("sse9")


@needs_c
@pytest.mark.parametrize("level", LEVELS)
def test_env_lowers_capability(level, python_subprocess):
    result = python_subprocess("import fastlstm._ext as e; print(e.cpu_capability())", FASTLSTM_CPU_CAPABILITY=level)
    assert result.returncode == 0, result.stderr
    detected = _ext._C.detected_cpu_capability()
    assert result.stdout.strip() == LEVELS[min(LEVELS.index(level), LEVELS.index(detected))]


def test_bad_capability_env_is_a_clear_error(python_subprocess):
    result = python_subprocess("import fastlstm", FASTLSTM_CPU_CAPABILITY="avx9000")
    assert result.returncode != 0 and "FASTLSTM_CPU_CAPABILITY" in result.stderr


@needs_c
def test_every_level_gives_the_same_answer():
    module = fastlstm.LSTM(7, 19, num_layers=2, bidirectional=True, proj_size=5)
    x = torch.randn(9, 3, 7, requires_grad=True)
    detected = _ext._C.detected_cpu_capability()
    results = {}
    try:
        for level in LEVELS:
            active = _ext._C.set_cpu_capability(level)
            out, (h, c) = module(x)
            grads = torch.autograd.grad(out.sum() + h.sum(), [x, *module.parameters()])
            results[active] = [out, h, c, *grads]
    finally:
        _ext._C.set_cpu_capability(detected)
    base = results["scalar"]
    for level, values in results.items():
        for a, b in zip(values, base):
            torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5, msg=lambda m: f"{level}: {m}")


def test_import_without_extension_falls_back_and_warns_once(python_subprocess):
    code = (
        "import sys, warnings\n"
        "sys.modules['fastlstm._C'] = None\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import fastlstm, torch\n"
        "    import fastlstm.ops\n"
        "msgs = [str(x.message) for x in w if 'fastlstm._C' in str(x.message)]\n"
        "assert len(msgs) == 1, msgs\n"
        "m = fastlstm.LSTM(3, 4)\n"
        "out, _ = m(torch.randn(5, 2, 3))\n"
        "assert fastlstm.available_backends('cpu') == ['reference']\n"
        "print('ok', tuple(out.shape))\n"
    )
    result = python_subprocess(code)
    assert result.returncode == 0, result.stderr
    assert "ok (5, 2, 4)" in result.stdout


@needs_c
def test_binding_checks_sizes_and_pointers():
    T, B, D, H = 3, 2, 1, 4
    t = lambda *s: torch.zeros(*s)  # noqa: E731
    gx, w_hh, h0, c0 = t(T, B, D, 4 * H), t(D, 4 * H, H), t(D, B, H), t(D, B, H)
    y, hn, cn = t(T, B, D, H), t(D, B, H), t(D, B, H)
    buf = _ext.buf

    def call(**over):
        args = dict(gx=buf(gx), w_hh=buf(w_hh), w_hr=(0, 0), h0=buf(h0), c0=buf(c0), lengths=(0, 0),
                    y=buf(y), hn=buf(hn), cn=buf(cn), gates=(0, 0), cells=(0, 0))
        dims = dict(seq_len=T, batch=B, directions=D, hidden=H, proj=H)
        args.update({k: v for k, v in over.items() if k in args})
        dims.update({k: v for k, v in over.items() if k in dims})
        _ext._C.lstm_recurrence_fwd("float32", **args, **dims)

    call()  # well-formed call succeeds
    with pytest.raises(ValueError, match="gx has"):
        call(gx=buf(t(T, B, D, 4 * H + 1)))
    with pytest.raises(ValueError, match="y is required"):
        call(y=(0, 0))
    with pytest.raises(ValueError, match="directions"):
        call(directions=3)
    with pytest.raises(ValueError, match="proj"):
        call(proj=H + 1)
    with pytest.raises(ValueError, match="aligned"):
        call(gx=(gx.data_ptr() + 1, gx.numel(), 4, gx))
    with pytest.raises(ValueError, match="lengths"):
        call(lengths=buf(torch.tensor([1, 9])))
    with pytest.raises(ValueError, match="together"):
        call(gates=buf(t(T, B, D, 4 * H)))
    with pytest.raises(ValueError, match="overflows"):
        call(seq_len=2**62, batch=2**62)
    with pytest.raises(TypeError, match="dtype"):
        _ext._C.lstm_recurrence_fwd("int8", *[(0, 0)] * 11, T, B, D, H, H)
