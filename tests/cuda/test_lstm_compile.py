"""The CUDA LSTM sources compile for sm_80 and sm_90 with warnings as errors,
and ptxas reports no local-memory spills.

Runs wherever nvcc is on PATH (no GPU needed). The kernels take the hidden
size as a runtime argument (it sets the grid and shared-memory slices, not
register arrays), so one compilation covers every H, including all H <= 256.
"""

import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "csrc" / "cuda").glob("lstm*.cu"))
ARCHS = ("80", "90")
NVCC = shutil.which("nvcc")

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH: cannot compile the CUDA sources here")

_ENTRY = re.compile(r"Compiling entry function '(\w+)' for 'sm_(\d+)'")
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


def _nvcc(source: pathlib.Path, arch: str, out_dir: pathlib.Path) -> subprocess.Popen:
    cmd = [
        NVCC, "-std=c++17", f"-I{ROOT / 'csrc' / 'include'}", f"-gencode=arch=compute_{arch},code=sm_{arch}",
        "-O3", "-Werror=all-warnings", "-Xcompiler=-Wall,-Wextra,-Werror", "-Xptxas=-v",
        "-c", str(source), "-o", str(out_dir / f"{source.stem}_sm{arch}.o"),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def parse_ptxas(report: str) -> dict[tuple[str, str], dict[str, int]]:
    """{(kernel, arch): {registers, stack, spill_stores, spill_loads}} from `-Xptxas -v` output."""
    kernels: dict[tuple[str, str], dict[str, int]] = {}
    current = None
    for line in report.splitlines():
        if m := _ENTRY.search(line):
            current = (m.group(1), m.group(2))
            kernels[current] = {}
        elif current and (m := _SPILL.search(line)):
            kernels[current].update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        elif current and (m := _REGS.search(line)):
            kernels[current]["registers"] = int(m.group(1))
    return kernels


@pytest.fixture(scope="module")
def ptxas_reports(tmp_path_factory):
    out = tmp_path_factory.mktemp("nvcc")
    jobs = {(src.name, arch): _nvcc(src, arch, out) for src in SOURCES for arch in ARCHS}  # concurrent
    reports = {}
    for key, job in jobs.items():
        text, _ = job.communicate(timeout=900)
        assert job.returncode == 0, f"nvcc failed for {key[0]} sm_{key[1]}:\n{text}"
        reports[key] = text
    return reports


def test_sources_exist():
    assert SOURCES, "csrc/cuda has no lstm*.cu sources"


@pytest.mark.parametrize("arch", ARCHS, ids=[f"sm_{a}" for a in ARCHS])
def test_no_spills(ptxas_reports, arch):
    kernels = {}
    for (_, a), text in ptxas_reports.items():
        if a == arch:
            kernels.update(parse_ptxas(text))
    persistent = {k: v for k, v in kernels.items() if re.search(r"lstm_(fwd|bwd)_kernel.*Lb1E", k[0])}
    assert len(persistent) == 8, f"expected fwd+bwd persistent kernels for 4 dtypes, found {sorted(persistent)}"
    for (name, _), info in kernels.items():
        assert set(info) == {"registers", "stack", "spill_stores", "spill_loads"}, f"unparsed ptxas report for {name}"
        assert info["spill_stores"] == 0 and info["spill_loads"] == 0, f"{name} spills on sm_{arch}: {info}"
    for (name, _), info in sorted(kernels.items()):
        print(f"sm_{arch} {info['registers']:4d} regs {info['stack']:3d} B stack  {name}")


def test_parser_reads_spills():
    sample = (
        "ptxas info    : Compiling entry function '_Z1kv' for 'sm_80'\n"
        "ptxas info    : Function properties for _Z1kv\n"
        "    16 bytes stack frame, 24 bytes spill stores, 36 bytes spill loads\n"
        "ptxas info    : Used 40 registers, used 1 barriers, 492 bytes cmem[0]\n"
    )
    assert parse_ptxas(sample) == {("_Z1kv", "80"): dict(stack=16, spill_stores=24, spill_loads=36, registers=40)}
