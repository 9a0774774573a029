"""Compiles fastlstm's Triton kernels ahead of time for sm_90 and prints, per
configuration, one JSON line {key, shared, regs, stack, local}. Run by
test_compile_sm90.py in a fresh process: the test session imports Triton in
interpreter mode, where kernels cannot be compiled.

usage: python aot_sm90.py '<JSON list of [kernel, pointer_type, constexprs]>'
Each kernel compiles with Triton's default num_warps (4) and num_stages, as
the launchers pass none.
"""

import json
import pathlib
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fastlstm.triton import attention, lstm

TARGET = GPUTarget("cuda", 90, 32)
CUOBJDUMP = pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
_RESOURCES = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")
_TENSORS = {"Q", "K", "V", "O", "DO", "DQ", "DK", "DV", "LSE", "DELTA", "PAD"}
_FP32_WORK = {"hbuf", "cbuf", "dpbuf", "dhbuf", "dcbuf", "LSE", "DELTA"}
_INTS = {"T", "B", "H", "Tq", "Tk", "D", "Dv", "left", "right", "G"}


def _type(name: str, ptr: str, constexprs: dict) -> str:
    if name in constexprs:
        return "constexpr"
    if name == "scale":
        return "fp32"
    if name in _INTS:
        return "i32"
    if name in _FP32_WORK:
        return "*fp32"
    if name == "lengths":
        return "*i64"
    if name == "PAD":
        return "*i8"
    return ptr


def compile_one(kernel: str, ptr: str, constexprs: dict, tmp: pathlib.Path) -> dict:
    fn = getattr(lstm if kernel.startswith("_lstm") else attention, kernel)
    signature = {n: _type(n, ptr, constexprs) for n in fn.arg_names}
    compiled = triton.compile(ASTSource(fn, signature, constexprs), target=TARGET)
    cubin = tmp / "kernel.cubin"
    cubin.write_bytes(compiled.asm["cubin"])
    report = subprocess.run([str(CUOBJDUMP), "--dump-resource-usage", str(cubin)], capture_output=True, text=True,
                            check=True, timeout=120)
    regs, stack, _static, local = map(int, _RESOURCES.search(report.stdout).groups())
    return dict(shared=compiled.metadata.shared, regs=regs, stack=stack, local=local, warps=compiled.metadata.num_warps)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for kernel, ptr, constexprs in json.loads(sys.argv[1]):
            result = compile_one(kernel, ptr, constexprs, pathlib.Path(tmp))
            print(json.dumps(dict(key=[kernel, ptr, constexprs], **result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
