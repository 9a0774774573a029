import os

# Outputs start as NaN so a kernel that leaves an element unwritten fails.
os.environ.setdefault("FASTLSTM_NAN_FILL", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


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
