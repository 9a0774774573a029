"""Fixtures that build and read the CPU emulation drivers of
tests/cuda/emulation/ (test_lstm_emulated.py, test_attention_emulated.py)."""

import pathlib
import shutil
import subprocess

import numpy as np
import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
CXX = shutil.which("g++") or shutil.which("clang++")


class EmulatorDriver:
    """A built driver: str() is its path; read_outputs(path, shapes) reads what it wrote."""

    def __init__(self, exe: pathlib.Path):
        self.exe = exe

    def __str__(self) -> str:
        return str(self.exe)

    @staticmethod
    def read_outputs(path: pathlib.Path, shapes) -> list[torch.Tensor]:
        """The float64 arrays the driver wrote, one per shape, all of the file."""
        flat = torch.from_numpy(np.fromfile(path, dtype=np.float64))
        outputs, offset = [], 0
        for shape in shapes:
            n = int(np.prod(shape))
            outputs.append(flat[offset : offset + n].reshape(shape))
            offset += n
        assert offset == flat.numel()
        return outputs


@pytest.fixture(scope="module")
def build_emulator():
    """build_emulator(source, exe, *defines): compiles tests/cuda/emulation/<source>
    with warnings as errors into an EmulatorDriver (skips where no C++ compiler exists)."""
    if CXX is None:
        pytest.skip("no C++ compiler on PATH to build the emulation")

    def build(source: str, exe: pathlib.Path, *defines: str) -> EmulatorDriver:
        cmd = [CXX, "-std=c++20", "-O1", "-pthread", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas",
               *(f"-D{d}" for d in defines), f"-I{ROOT / 'csrc/include'}", f"-I{ROOT / 'csrc/cuda'}",
               f"-I{ROOT / 'tests/cuda/emulation'}", str(ROOT / "tests/cuda/emulation" / source), "-o", str(exe)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return EmulatorDriver(exe)

    return build
