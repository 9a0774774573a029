"""``fastlstm demo <name>``: runnable demonstrations.

Each demo is a module in this package (``fastlstm/demos/<name>.py``) with
``DESCRIPTION``, ``configure(parser)`` and ``run(args) -> int``; they are
found by name, so adding a demo is adding a file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil


def demo_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def cmd_demo(args: argparse.Namespace) -> int:
    return importlib.import_module(f"fastlstm.demos.{args.demo}").run(args)


def _configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="demo", required=True)
    for name in demo_names():
        module = importlib.import_module(f"fastlstm.demos.{name}")
        p = sub.add_parser(name, help=getattr(module, "DESCRIPTION", ""))
        module.configure(p)


cmd_demo.configure = _configure


def register(commands: dict) -> None:
    commands["demo"] = (cmd_demo, "run a demonstration (" + ", ".join(demo_names()) + ")")
