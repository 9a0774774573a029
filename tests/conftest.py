import os

# Outputs start as NaN so a kernel that leaves an element unwritten fails.
os.environ.setdefault("FASTLSTM_NAN_FILL", "1")


def _import_triton_interpreted() -> None:
    """Without a GPU, Triton kernels run in Triton's interpreter on CPU tensors.
    Triton decides that when it is imported, so it is imported here, first,
    with TRITON_INTERPRET=1; the variable is then removed again so it does not
    make the Triton backend look available to every other test (the Triton
    tests set it around themselves)."""
    import importlib.util

    import torch

    if torch.cuda.is_available() or importlib.util.find_spec("triton") is None:
        return
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET")
        else:
            os.environ["TRITON_INTERPRET"] = saved


_import_triton_interpreted()


import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A case parametrised with a backend that runs on this machine but refuses
    the case's combination (triton with float64 or proj_size > 0, listed on the
    CPU under TRITON_INTERPRET=1) is skipped, saying why, instead of failing."""
    from fastlstm import _backends

    try:
        return (yield)
    except _backends.BackendUnavailableError as exc:
        params = getattr(getattr(item, "callspec", None), "params", {})
        runs_here = _backends.unavailable_reason(exc.backend, torch.device("cpu"), torch.float32) is None
        if params.get("backend") != exc.backend or not runs_here:
            raise
        pytest.skip(f"backend {exc.backend!r} does not run this case: {exc.reason}")


def pytest_configure(config):
    # A missing extension would turn every kernel test into a skip; refuse to
    # run silently on the reference backend unless explicitly allowed.
    from fastlstm import _ext

    if not _ext.available() and os.environ.get("FASTLSTM_ALLOW_NO_EXTENSION") != "1":
        raise pytest.UsageError(
            f"fastlstm._C is not importable ({_ext.load_error}); build it (pip install . or "
            ".ci/build_inplace) or set FASTLSTM_ALLOW_NO_EXTENSION=1 to test the reference only"
        )


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def run_python(code: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter that imports the same fastlstm as
    this test process (installed or in-tree), from a neutral directory."""
    import fastlstm

    package_root = str(Path(fastlstm.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    base = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
        cwd="/", env={**base, "PYTHONPATH": path, **env},
    )


@pytest.fixture
def python_subprocess():
    """``python_subprocess(code, **env)`` -> CompletedProcess (see run_python)."""
    return run_python


class KernelCallRecorder:
    """A stand-in for ``fastlstm._C`` that records every call as (name, args,
    kwargs) in ``calls`` before making it."""

    def __init__(self, real):
        self._real, self.calls = real, []

    def __getattr__(self, name):
        fn = getattr(self._real, name)
        if not callable(fn):
            return fn

        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return fn(*args, **kwargs)

        return record


@pytest.fixture(scope="session")
def kernel_call_recorder():
    """``kernel_call_recorder(_ext._C)`` -> a KernelCallRecorder (monkeypatch it in as ``_C``)."""
    return KernelCallRecorder
