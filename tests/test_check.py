"""``fastlstm check`` (fastlstm/check.py) run as a user runs it, in a fresh interpreter."""

from __future__ import annotations

RUN_CHECK = "import sys\nfrom fastlstm.cli import main\nsys.exit(main(['check']))\n"


def test_check_passes_and_exits_zero(python_subprocess):
    proc = python_subprocess(RUN_CHECK)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all checks passed" in proc.stdout
    assert "FAIL" not in proc.stdout and "cpu" in proc.stdout


def test_check_fails_when_a_backend_is_wrong(python_subprocess):
    # The cpu backend's input projection kernel gets an error of 1e-3 added to
    # what it writes (every fp32 path runs it or the stack kernel, both broken
    # here): check must see it.
    broken = (
        "import torch\n"
        "from fastlstm import _ext\n"
        "class Broken:\n"
        "    def __init__(self, real): self._real = real\n"
        "    def __getattr__(self, name): return getattr(self._real, name)\n"
        "    def lstm_input_projection(self, *a):\n"
        "        self._real.lstm_input_projection(*a)\n"
        "        a[4][3].add_(1e-3)\n"
        "    def lstm_stack_fwd(self, *a):\n"
        "        self._real.lstm_stack_fwd(*a)\n"
        "        a[5][3].add_(1e-3)\n"
        "_ext._C = Broken(_ext._C)\n"
    )
    proc = python_subprocess(broken + RUN_CHECK)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL" in proc.stdout and "check(s) FAILED" in proc.stdout

