"""pytest-benchmark suites over the same cells as ``fastlstm bench``
(see benchmarks/README.md). Files are ``benchmarks/bench_*.py``, collected
by the hook below and never by the test run.

    pytest benchmarks/ --benchmark-json out.json
    pytest benchmarks/bench_int8.py -k S1
"""

import pytest


def pytest_collect_file(file_path, parent):
    # Files named on the command line are collected by pytest itself.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
