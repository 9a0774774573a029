"""The Triton backend's reliability on a machine without a GPU: under
TRITON_INTERPRET=1 in a fresh process (so the variable cannot leak into other
tests): bad input raises, results and gradients are bit-identical across runs
and thread counts, and use_deterministic_algorithms(True) keeps it running."""

import os
import subprocess
import sys
import textwrap

import pytest

import fastlstm

pytest.importorskip("triton", reason="triton is not installed")

_SCRIPT = textwrap.dedent(
    """
    import torch, fastlstm
    from fastlstm import ops
    assert "triton" in fastlstm.available_backends("cpu"), fastlstm.available_backends("cpu")
    torch.manual_seed(0)
    W = [w.detach() for w in torch.nn.LSTM(4, 8, bidirectional=True)._flat_weights]
    x = torch.randn(5, 3, 4, requires_grad=True)
    lengths = torch.tensor([5, 2, 0])

    def run():
        out, h, c = ops.lstm(x, None, W, num_layers=1, bidirectional=True, lengths=lengths, backend="triton")
        return [out.detach(), h.detach(), c.detach(), *torch.autograd.grad(out.sum() + h.sum() + c.sum(), x)]

    runs = []
    for n in (1, 2, 1):
        torch.set_num_threads(n)
        runs.append(run())
    torch.use_deterministic_algorithms(True)
    runs.append(run())
    torch.use_deterministic_algorithms(False)
    for r in runs[1:]:
        for a, e in zip(r, runs[0]):
            assert torch.equal(a, e)
    want = fastlstm.reference.lstm(x.double(), None, [w.double() for w in W], num_layers=1, bidirectional=True,
                                   lengths=lengths)
    for a, e in zip(runs[0][:3], want):
        torch.testing.assert_close(a, e.float(), atol=1e-5, rtol=1e-5)
    bad = {
        "lengths-too-long": dict(lengths=torch.tensor([6, 1, 1])),
        "x-float64": dict(x=x.double()),
        "weights-missing": dict(weights=W[:3]),
    }
    for name, override in bad.items():
        args = dict(x=x, weights=W, lengths=lengths)
        args.update(override)
        try:
            ops.lstm(args["x"], None, args["weights"], num_layers=1, bidirectional=True, lengths=args["lengths"],
                     backend="triton")
        except (ValueError, TypeError, RuntimeError) as exc:
            print(name, "->", type(exc).__name__)
        else:
            raise AssertionError(f"{name} was accepted")
    print("triton ok")
    """
)


def test_triton_backend_interpreted_reliability():
    env = dict(os.environ, PYTHONPATH=str(__import__("pathlib").Path(fastlstm.__file__).resolve().parent.parent), TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, cwd="/", timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "triton ok" in run.stdout
