"""The ``fastlstm`` command (also ``python -m fastlstm``).

Subcommands: ``info``, ``check``; ``bench`` and ``demo`` register themselves
from their own modules (PLUGIN_MODULES).
"""

from __future__ import annotations

import argparse
import platform
import sys


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    import fastlstm
    from fastlstm import _ext
    from fastlstm.bench.core import cpu_model

    rows = [
        ("fastlstm", fastlstm.__version__),
        ("torch", torch.__version__),
        ("python", platform.python_version()),
        ("cpu", cpu_model()),
        ("_C", "loaded" if _ext.available() else f"not loaded ({_ext.load_error})"),
        ("cpu capability", _ext.cpu_capability()),
        ("detected capability", _ext._C.detected_cpu_capability() if _ext.available() else "-"),
        ("cpuid", _ext.describe_cpu()),
        ("cpu tuning", _ext.describe_cpu_tuning()),
        ("cuda kernels compiled", str(bool(_ext.available() and _ext._C.has_cuda))),
        ("cuda device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"),
        ("backends (cpu, float32)", ", ".join(fastlstm.available_backends("cpu"))),
        ("default backend", fastlstm.get_backend()),
        ("threads", str(torch.get_num_threads())),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from fastlstm.check import run_check

    return run_check(verbose=args.verbose)


COMMANDS = {
    "info": (cmd_info, "versions, CPU capability, compiled backends, threads"),
    "check": (cmd_check, "run every available backend against the reference and print pass/fail"),
}


# Modules that add subcommands: each has `register(commands)` that adds
# name -> (function, help) entries; a function may have `.configure(parser)`.
PLUGIN_MODULES = ("fastlstm.bench.cli", "fastlstm.demos")


def _add_optional_commands() -> None:
    import importlib

    for name in PLUGIN_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that part of fastlstm is not present
            raise
        module.register(COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    _add_optional_commands()
    parser = argparse.ArgumentParser(prog="fastlstm", description="fastlstm: fast LSTM kernels for PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (func, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(func=func)
        if name == "check":
            p.add_argument("-v", "--verbose", action="store_true", help="print every comparison")
        configure = getattr(func, "configure", None)
        if configure is not None:
            configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
