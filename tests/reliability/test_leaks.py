"""Memory: 10,000 forward + backward calls (tiny shapes) grow RSS by at most
5 MB after warm-up. Runs in a subprocess so the measurement is not disturbed
by the rest of the test session."""

import os
import subprocess
import sys
import textwrap

import pytest

import fastlstm

_SCRIPT = textwrap.dedent(
    """
    import sys, torch, fastlstm

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    torch.set_num_threads(1)
    backend, calls = sys.argv[1], int(sys.argv[2])
    module = fastlstm.LSTM(3, 4, backend=backend)
    cell = fastlstm.LSTMCell(3, 4, backend=backend)
    x = torch.randn(4, 2, 3, requires_grad=True)
    lengths = torch.tensor([4, 2])

    def step(i):
        if i % 10 < 6:
            out, (h, c) = module(x)
        elif i % 10 == 6:
            out, (h, c) = module(torch.nn.utils.rnn.pack_padded_sequence(x, lengths))
            out = out.data
        else:
            h, c = cell(x[0])
            out = h
        (out.sum() + h.sum() + c.sum()).backward()

    for i in range(300):  # warm-up: allocator pools, lazily built dispatch tables
        step(i)
    before = rss()
    for i in range(calls):
        step(i)
    module.zero_grad(set_to_none=True)
    print(rss() - before)
    """
)


# The compiled backend only: the reference is plain PyTorch, and at ~4x the
# time per call it would cost minutes of CI for no fastlstm code under test.
@pytest.mark.skipif("cpu" not in fastlstm.available_backends("cpu"), reason="fastlstm._C unavailable")
def test_repeated_forward_backward_does_not_leak(backend="cpu"):
    env = dict(os.environ, PYTHONPATH=str(__import__("pathlib").Path(fastlstm.__file__).resolve().parent.parent))
    run = subprocess.run([sys.executable, "-c", _SCRIPT, backend, "10000"], capture_output=True, text=True,
                         env=env, cwd="/", timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    growth = int(run.stdout.split()[-1])
    print(f"RSS growth over 10000 calls ({backend}): {growth / 2**20:.2f} MiB")
    assert growth <= 5 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB over 10000 forward+backward calls"
