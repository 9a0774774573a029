"""``fastlstm check`` (fastlstm/check.py) run as a user runs it, in a fresh interpreter."""

from __future__ import annotations

RUN_CHECK = "import sys\nfrom fastlstm.cli import main\nsys.exit(main(['check']))\n"


def test_check_passes_and_exits_zero(python_subprocess):
    proc = python_subprocess(RUN_CHECK)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all checks passed" in proc.stdout
    assert "FAIL" not in proc.stdout and "cpu" in proc.stdout


def test_check_fails_when_a_backend_is_wrong(python_subprocess):
    # The cpu backend's input projection gets an error of 1e-3 added: check must see it.
    broken = (
        "import importlib\n"
        "ops = importlib.import_module('fastlstm.ops.lstm')\n"
        "_project = ops._project\n"
        "ops._project = lambda *a: _project(*a) + 1e-3\n"
    )
    proc = python_subprocess(broken + RUN_CHECK)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL" in proc.stdout and "check(s) FAILED" in proc.stdout

