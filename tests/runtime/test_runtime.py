"""fastlstm.runtime (torch-free loading and inference) and fastlstm.export."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import fastlstm
from fastlstm._ext import _C
from fastlstm.runtime import format as rt_format

pytestmark = pytest.mark.skipif(_C is None, reason="needs fastlstm._C")
# The directory holding the fastlstm this test imported (installed or in-tree).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastlstm.__file__)))


def test_import_runtime_does_not_import_torch(tmp_path):
    path = tmp_path / "m.safetensors"
    fastlstm.export(fastlstm.quantize_dynamic(nn.LSTM(4, 8, bidirectional=True)), path)
    code = (
        "import sys, numpy as np, fastlstm.runtime as rt\n"
        f"m = rt.load({str(path)!r})\n"
        "out, (h, c) = m(np.ones((5, 2, 4), np.float32))\n"
        "assert out.shape == (5, 2, 16), out.shape\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/", timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_import_fastlstm_keeps_its_names():
    code = "import fastlstm, torch; fastlstm.LSTM(2, 3); fastlstm.quantize_dynamic; fastlstm.ops.lstm; print('ok')"
    env = dict(os.environ, PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/", timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


CASES = {
    "uni": dict(),
    "stacked_bi": dict(num_layers=2, bidirectional=True),
    "proj": dict(num_layers=2, proj_size=6, bidirectional=True),
    "batch_first_nobias": dict(batch_first=True, bias=False),
}


@pytest.mark.parametrize("case", list(CASES), ids=str)
@pytest.mark.parametrize("dtype", ["float32", "int8"])
@torch.no_grad()
def test_export_load_matches_torch_module(tmp_path, case, dtype):
    kw = CASES[case]
    m = nn.LSTM(5, 16, **kw)
    x = torch.randn(2, 9, 5) if kw.get("batch_first") else torch.randn(9, 2, 5)
    path = tmp_path / f"{case}.safetensors"
    if dtype == "int8":
        src = fastlstm.quantize_dynamic(m)
        fastlstm.export(src, path)
        expected, (h_e, c_e) = src(x)
        tol = 0.0  # the same computation
    else:
        fastlstm.export(m, path)
        expected, (h_e, c_e) = m(x)
        tol = 1e-5
    model = fastlstm.runtime.load(path)
    out, (h, c) = model(x.numpy())
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected.numpy(), atol=tol, rtol=0)
    np.testing.assert_allclose(h, h_e.numpy(), atol=tol, rtol=0)
    np.testing.assert_allclose(c, c_e.numpy(), atol=tol, rtol=0)


@torch.no_grad()
def test_runtime_hx_and_lengths(tmp_path):
    m = nn.LSTM(3, 10, num_layers=2, bidirectional=True)
    fastlstm.export(m, tmp_path / "m.safetensors")
    model = fastlstm.runtime.load(tmp_path / "m.safetensors")
    x = torch.randn(7, 3, 3)
    hx = (torch.randn(4, 3, 10), torch.randn(4, 3, 10))
    ref, (h_ref, _) = m(x, hx)
    out, (h, _) = model(x.numpy(), (hx[0].numpy(), hx[1].numpy()))
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(h, h_ref.numpy(), atol=1e-5)
    lengths = np.array([7, 3, 5], np.int64)
    out, (h, _) = model(x.numpy(), lengths=lengths)
    assert np.all(out[3:, 1] == 0) and np.all(out[5:, 2] == 0)
    ref1, (h1, _) = m(x[:3, 1:2])
    np.testing.assert_allclose(out[:3, 1:2], ref1.numpy(), atol=1e-5)
    np.testing.assert_allclose(h[:, 1], h1[:, 0].numpy(), atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
@torch.no_grad()
def test_sequential_linear_graph(tmp_path, dtype):
    net = nn.Sequential(nn.Linear(12, 20), nn.Linear(20, 4))
    fastlstm.export(net, tmp_path / "s.safetensors", dtype=dtype)
    model = fastlstm.runtime.load(tmp_path / "s.safetensors")
    x = torch.randn(3, 5, 12)
    out = model(x.numpy())
    assert out.shape == (3, 5, 4)
    np.testing.assert_allclose(out, net(x).numpy(), atol=1e-5 if dtype == "float32" else 3e-2)


def test_export_rejects_unknown_modules(tmp_path):
    with pytest.raises(TypeError, match="no runtime layer"):
        fastlstm.export(nn.GRU(3, 4), tmp_path / "g.safetensors")
    with pytest.raises(ValueError, match="dtype"):
        fastlstm.export(nn.LSTM(3, 4), tmp_path / "g.safetensors", dtype="float16")


def test_file_is_standard_safetensors(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "m.safetensors"
    fastlstm.export(fastlstm.quantize_dynamic(nn.LSTM(4, 8, proj_size=3)), path)
    ours, config = rt_format.read(path)
    theirs = safetensors_numpy.load_file(str(path))
    assert set(ours) == set(theirs)
    for k in ours:
        assert ours[k].dtype == theirs[k].dtype and np.array_equal(ours[k], theirs[k])
    assert ours["0.l0.w_ih"].dtype == np.int8 and config["layers"][0]["dtype"] == "int8"
    with open(path, "rb") as f:
        assert b"pickle" not in f.read()


@torch.no_grad()
def test_corrupt_and_truncated_files_raise_value_error(tmp_path):
    path = tmp_path / "m.safetensors"
    fastlstm.export(fastlstm.quantize_dynamic(nn.LSTM(4, 8, num_layers=2, bidirectional=True)), path)
    blob = path.read_bytes()
    x = np.random.default_rng(0).standard_normal((6, 2, 4)).astype(np.float32)
    good = fastlstm.runtime.load(path)(x)[0]
    bad = tmp_path / "bad.safetensors"
    header_len = int.from_bytes(blob[:8], "little")
    cuts = sorted({0, 1, 7, 8, 9, 8 + header_len // 2, 8 + header_len, len(blob) - 1, *range(0, len(blob), 997)})
    for cut in cuts:
        bad.write_bytes(blob[:cut])
        with pytest.raises(ValueError, match="not a valid fastlstm runtime file"):
            fastlstm.runtime.load(bad)
    rng = np.random.default_rng(1)
    positions = list(range(0, 8 + header_len)) + list(rng.integers(8 + header_len, len(blob), 300))
    errors = 0
    for pos in positions:
        data = bytearray(blob)
        data[pos] ^= int(rng.integers(1, 256))
        bad.write_bytes(bytes(data))
        try:
            model = fastlstm.runtime.load(bad)
        except ValueError:
            errors += 1
            continue
        # A flip that leaves the file meaning the same thing (e.g. JSON whitespace) must give the same answer.
        np.testing.assert_array_equal(model(x)[0], good, err_msg=f"flip at byte {pos} loaded silently")
    assert errors >= 0.95 * len(positions)
    bad.write_bytes(b"")
    with pytest.raises(ValueError):
        fastlstm.runtime.load(bad)


def test_runtime_input_errors(tmp_path):
    fastlstm.export(nn.LSTM(4, 8), tmp_path / "m.safetensors")
    model = fastlstm.runtime.load(tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="input.shape"):
        model(np.zeros((3, 1, 5), np.float32))
    with pytest.raises(ValueError, match="2-D or 3-D"):
        model(np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="numeric"):
        model(np.array([["a"]]))
    with pytest.raises(ValueError, match="state shapes"):
        model(np.zeros((3, 1, 4), np.float32), (np.zeros((1, 2, 8)), np.zeros((1, 2, 8))))
