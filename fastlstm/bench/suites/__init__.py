"""Benchmark suites. Each module has ``plan(ctx) -> list[Case]``; nothing runs
while planning (models and inputs are built lazily when a cell starts)."""

from __future__ import annotations

import importlib

SUITES = ("lstm", "int8", "attention", "productivity", "chat")
_MODULES = {
    "lstm": "fastlstm.bench.suites.lstm",
    "int8": "fastlstm.bench.suites.int8",
    "attention": "fastlstm.bench.suites.attention",
    "productivity": "fastlstm.bench.suites.models",
    "chat": "fastlstm.bench.suites.models",
}


def plan(suite: str, ctx) -> list:
    if suite not in _MODULES:
        raise ValueError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    module = importlib.import_module(_MODULES[suite])
    return module.plan(ctx) if suite not in ("productivity", "chat") else getattr(module, f"plan_{suite}")(ctx)
