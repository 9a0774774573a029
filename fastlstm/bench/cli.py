"""``fastlstm bench``: is fastlstm faster here, and still correct?

Runs the suites (LSTM fp32 inference and training, int8, sparse attention,
the productivity model, the chat encoder) against their peers in one run,
checks every fastlstm result against the reference before timing it, and
prints, saves and plots the results.

>>> fastlstm bench                       # quick suite, < 90 s on 2 cores
>>> fastlstm bench --suite full --json full.json --compare quick.json
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from fastlstm.bench import core, report
from fastlstm.bench.shapes import parse_shape

DEFAULT_JSON = "fastlstm-bench.json"
DEFAULT_PNG = "fastlstm-bench.png"


def _shape_arg(text: str):
    try:
        return parse_shape(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure(parser: argparse.ArgumentParser) -> None:
    from fastlstm.bench.suites import SUITES

    parser.add_argument("--suite", choices=("quick", "full"), default="quick",
                        help="quick (default, < 90 s on 2 cores, fewer calls per cell) or full (>= 20 calls "
                             "and >= 1 s per cell, attention up to T=8192 and batch 16)")
    parser.add_argument("--only", action="append", metavar="SUITE", default=None,
                        help=f"run only these suites ({', '.join(SUITES)}); repeatable or comma-separated")
    parser.add_argument("--shapes", action="append", type=_shape_arg, metavar="B,T,I,H,L,bi", default=None,
                        help="LSTM shape(s) instead of S1-S5 (bi: yes/no); repeatable")
    parser.add_argument("--backend", action="append", default=None, metavar="NAME",
                        help="fastlstm backend(s) to benchmark (auto, cpu, cuda, triton, reference); "
                             "default auto; repeatable")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for torch, fastlstm and ONNX Runtime (default: torch's setting)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the tensors live (cuda needs a GPU)")
    parser.add_argument("--json", default=DEFAULT_JSON, metavar="PATH",
                        help=f"write every measurement and the machine information (default {DEFAULT_JSON}; "
                             "'' to skip)")
    parser.add_argument("--png", default=DEFAULT_PNG, metavar="PATH",
                        help=f"speedup chart, needs matplotlib (default {DEFAULT_PNG}; '' to skip)")
    parser.add_argument("--compare", metavar="OLD.json", default=None,
                        help="show what got faster or slower against an earlier --json file")
    parser.add_argument("--compare-threshold", type=float, default=0.05, metavar="FRACTION",
                        help="a median change smaller than this counts as 'same' (default 0.05)")
    parser.add_argument("--markdown", metavar="PATH", default=None,
                        help="write the README performance table (machine and date included)")
    parser.add_argument("--min-time", type=float, default=None, metavar="SECONDS",
                        help="override the suite's minimum timed seconds per cell")
    parser.add_argument("--min-calls", type=int, default=None, metavar="N",
                        help="override the suite's minimum timed calls per cell")
    parser.add_argument("--plain", action="store_true", help="plain text output (no rich table, no progress bar)")


def _suites(only: list[str] | None) -> list[str]:
    from fastlstm.bench.suites import SUITES

    if not only:
        return list(SUITES)
    chosen = []
    for item in only:
        for name in filter(None, (s.strip() for s in item.split(","))):
            if name not in SUITES:
                raise SystemExit(f"fastlstm bench: unknown suite {name!r}; choose from {', '.join(SUITES)}")
            if name not in chosen:
                chosen.append(name)
    return chosen


def _have_rich() -> bool:
    import importlib.util

    return importlib.util.find_spec("rich") is not None


def _command(args: argparse.Namespace) -> str:
    """The options that decide what was measured, as a command line (for the README table)."""
    parts = ["fastlstm bench"]
    if args.suite != "quick":
        parts.append(f"--suite {args.suite}")
    for item in args.only or []:
        parts.append(f"--only {item}")
    for shape in args.shapes or []:
        parts.append(f"--shapes {shape.B},{shape.T},{shape.I},{shape.H},{shape.L},{'yes' if shape.bi else 'no'}")
    for backend in args.backend or []:
        parts.append(f"--backend {backend}")
    if args.threads:
        parts.append(f"--threads {args.threads}")
    if args.device != "cpu":
        parts.append(f"--device {args.device}")
    for flag, value in (("--min-time", args.min_time), ("--min-calls", args.min_calls)):
        if value is not None:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from fastlstm.bench import runner, suites

    if args.device == "cuda" and not torch.cuda.is_available():
        print("fastlstm bench: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.threads is not None and args.threads <= 0:
        print("fastlstm bench: --threads must be positive", file=sys.stderr)
        return 2
    method = core.METHODS[args.suite]
    overrides = {k: v for k, v in (("min_time", args.min_time), ("min_calls", args.min_calls)) if v is not None}
    if overrides:
        method = dataclasses.replace(method, name=f"{method.name} (custom)", **overrides)
    old = None
    if args.compare:
        try:
            old = report.load(args.compare)
        except (OSError, ValueError) as exc:
            print(f"fastlstm bench: --compare {args.compare}: {exc}", file=sys.stderr)
            return 2
    ctx = runner.Context(
        method=method,
        threads=args.threads or torch.get_num_threads(),
        device=args.device,
        backends=args.backend or ["auto"],
        shapes=args.shapes or [],
        quick=args.suite == "quick",
    )
    chosen = _suites(args.only)
    plain = args.plain or not sys.stdout.isatty() or not _have_rich()
    result = runner.run(ctx, chosen, suites.plan, tty=False if plain else None)
    result["command"] = _command(args)
    report.validate(result)
    report.print_report(result, plain=plain)
    if args.json:
        report.save(result, args.json)
        print(f"wrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report.markdown(result) + "\n")
        print(f"wrote {args.markdown}")
    if args.png:
        try:
            report.plot(result, args.png)
            print(f"wrote {args.png}")
        except RuntimeError as exc:
            print(f"no chart: {exc}")
    if old is not None:
        report.print_compare(report.compare(old, result, args.compare_threshold), old, args.compare_threshold)
    failing = [m for c in result["cases"] for m in c["measurements"]
               if m["ours"] and m["status"] in (core.FAIL, core.ERROR)]
    return 1 if failing else 0


cmd_bench.configure = configure


def register(commands: dict) -> None:
    commands["bench"] = (cmd_bench, "benchmark fastlstm against torch and ONNX Runtime (checked, then timed)")
