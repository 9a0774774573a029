"""What a report says: the JSON schema (validate/load/save), speedups and the
fastest implementation per case, the terminal tables, the README markdown,
the comparison of two runs and the PNG chart."""

from __future__ import annotations

import json
import math
from pathlib import Path

from fastlstm.bench import core

SCHEMA = "fastlstm-bench/1"
_TOP_KEYS = {"schema": str, "created": str, "machine": dict, "method": dict, "suites": list, "sgemm": dict,
             "cases": list}
_MACHINE_KEYS = ("cpu_model", "isa", "threads", "versions")
_CASE_KEYS = {"suite": str, "name": str, "mode": str, "key": str, "params": dict, "measurements": list}
_MEASUREMENT_KEYS = ("impl", "ours", "status", "median_s", "min_s", "max_s", "calls", "max_error", "tolerance",
                     "gflops", "peak_fraction", "note")


def validate(report: dict) -> dict:
    """Raise ValueError naming the first field that does not follow the schema."""
    if not isinstance(report, dict):
        raise ValueError("report: expected a JSON object")
    for key, kind in _TOP_KEYS.items():
        if not isinstance(report.get(key), kind):
            raise ValueError(f"report.{key}: expected {kind.__name__}, got {type(report.get(key)).__name__}")
    if report["schema"] != SCHEMA:
        raise ValueError(f"report.schema: expected {SCHEMA!r}, got {report['schema']!r}")
    for key in _MACHINE_KEYS:
        if key not in report["machine"]:
            raise ValueError(f"report.machine.{key}: missing")
    if not isinstance(report["sgemm"].get("peak_gflops"), (int, float)):
        raise ValueError("report.sgemm.peak_gflops: expected a number")
    for i, case in enumerate(report["cases"]):
        for key, kind in _CASE_KEYS.items():
            if not isinstance(case.get(key), kind):
                raise ValueError(f"report.cases[{i}].{key}: expected {kind.__name__}")
        for j, m in enumerate(case["measurements"]):
            where = f"report.cases[{i}].measurements[{j}]"
            for key in _MEASUREMENT_KEYS:
                if key not in m:
                    raise ValueError(f"{where}.{key}: missing")
            if m["status"] not in core.STATUSES:
                raise ValueError(f"{where}.status: {m['status']!r} is not one of {', '.join(core.STATUSES)}")
            timed = [m[k] for k in ("median_s", "min_s", "max_s")]
            if m["status"] == core.OK:
                if not all(isinstance(t, (int, float)) and t > 0 for t in timed):
                    raise ValueError(f"{where}: an ok measurement needs positive median_s, min_s, max_s")
                if not m["min_s"] <= m["median_s"] <= m["max_s"]:
                    raise ValueError(f"{where}: expected min_s <= median_s <= max_s")
            elif any(t is not None for t in timed):
                raise ValueError(f"{where}: a {m['status']} measurement must not carry a time")
    return report


def save(report: dict, path: str | Path) -> None:
    validate(report)
    Path(path).write_text(json.dumps(report, indent=1, default=_json_default) + "\n")


def _json_default(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def load(path: str | Path) -> dict:
    try:
        report = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a JSON file ({exc})") from None
    return validate(report)


# -- reading a case ------------------------------------------------------


def timed(case: dict) -> list[dict]:
    return [m for m in case["measurements"] if m["status"] == core.OK and m["median_s"]]


def fastest(case: dict) -> tuple[dict, dict | None] | None:
    """(fastest measurement, runner-up or None), or None when nothing was timed."""
    ranked = sorted(timed(case), key=lambda m: m["median_s"])
    if not ranked:
        return None
    return ranked[0], (ranked[1] if len(ranked) > 1 else None)


def _is_int8(m: dict) -> bool:
    return "int8" in m["impl"]


def ours(case: dict, peer: dict | None = None) -> dict | None:
    """The fastlstm measurement a peer is compared with: the first timed one of
    the same precision (int8 peers against fastlstm int8 when a case has both)."""
    mine = [m for m in timed(case) if m["ours"]]
    if peer is not None:
        same = [m for m in mine if _is_int8(m) == _is_int8(peer)]
        mine = same or mine
    return mine[0] if mine else None


def speedup(case: dict, peer: dict) -> float | None:
    """peer time / fastlstm time (> 1: fastlstm is faster), or None."""
    mine = ours(case, peer)
    if mine is None or peer["status"] != core.OK or not peer["median_s"]:
        return None
    return peer["median_s"] / mine["median_s"]


def verdict(case: dict) -> str:
    """One sentence: which implementation is fastest and by how much."""
    best = fastest(case)
    if best is None:
        return "nothing timed"
    first, second = best
    if second is None:
        return f"only {first['impl']} timed"
    return f"{first['impl']} fastest, {second['median_s'] / first['median_s']:.2f}x ahead of {second['impl']}"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.3g}" if seconds * 1e3 < 100 else f"{seconds * 1e3:.0f}"


def _err(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def status_text(m: dict) -> str:
    if m["status"] == core.OK:
        return "ok"
    return m["status"] + (f": {m['note']}" if m["note"] else "")


def rows(report: dict) -> list[dict]:
    """One display row per measurement, in case order."""
    out = []
    for case in report["cases"]:
        for i, m in enumerate(case["measurements"]):
            sp = None if m["ours"] else speedup(case, m)
            out.append({
                "case": f"{case['suite']} {case['name']}" if i == 0 else "",
                "mode": case["mode"] if i == 0 else "",
                "impl": m["impl"],
                "median": _ms(m["median_s"]) if m["status"] == core.OK else "-",
                "range": f"{_ms(m['min_s'])}-{_ms(m['max_s'])}" if m["status"] == core.OK else "-",
                "gflops": f"{m['gflops']:.1f}" if m.get("gflops") else "-",
                "peak": f"{100 * m['peak_fraction']:.0f}%" if m.get("peak_fraction") else "-",
                "error": _err(m["max_error"]),
                "mem": (f"{m['extra']['peak_rss_mib']:.0f}" if (m.get("extra") or {}).get("peak_rss_mib")
                        is not None else "-"),
                "speedup": "" if m["ours"] else (f"{sp:.2f}x" if sp else "-"),
                "status": status_text(m),
                "ours": m["ours"],
            })
    return out


COLUMNS = [("case", "shape"), ("mode", "mode"), ("impl", "implementation"), ("median", "median ms"),
           ("range", "min-max ms"), ("gflops", "GFLOP/s"), ("peak", "% sgemm"), ("error", "max err"),
           ("mem", "peak MiB"), ("speedup", "fastlstm speedup"), ("status", "status")]


def header_lines(report: dict) -> list[str]:
    m, s = report["machine"], report["sgemm"]
    v = m["versions"]
    return [
        f"fastlstm bench on {m['cpu_model']} [{m.get('cpu_vendor', 'vendor not recorded')}] (ISA {m['isa']}), "
        f"{m['threads']} threads, {report['created']}",
        "versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"sgemm peak: {s['peak_gflops']:.1f} GFLOP/s (torch.mm {s['size']}x{s['size']} fp32, best of "
        f"{s['calls']}; median {s['median_gflops']:.1f})",
        f"method: {report['method']['description']}",
        *_load_line(m),
        "fastlstm speedup = that implementation's median time / fastlstm's (above 1: fastlstm is faster; "
        "int8 peers against fastlstm's int8 row)",
    ]


def _load_line(machine: dict) -> list[str]:
    load, cpus = machine.get("load_average"), machine.get("cpu_count")
    if not load or not cpus:
        return []
    busy = load[0] > 0.75 * cpus
    return [f"load average at the start: {load[0]:.1f} on {cpus} CPUs"
            + (" -- the machine was busy, so times are noisy and slower than this machine can do" if busy else "")]


def print_report(report: dict, console=None, plain: bool = False) -> None:
    """The terminal output: one table per suite, then who is fastest per case."""
    lines = header_lines(report)
    table_rows = rows(report)
    if plain:
        for line in lines:
            print(line)
        widths = {k: max([len(t)] + [len(r[k]) for r in table_rows]) for k, t in COLUMNS}
        print("  ".join(t.ljust(widths[k]) for k, t in COLUMNS))
        for r in table_rows:
            print("  ".join(r[k].ljust(widths[k]) for k, _ in COLUMNS).rstrip())
    else:
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        for line in lines:
            console.print(line, highlight=False, markup=False)
        for suite in report["suites"]:
            table = Table(title=f"suite: {suite}", show_lines=False)
            for key, title in COLUMNS:
                table.add_column(title, justify="right" if key in ("median", "gflops", "peak", "mem", "speedup") else "left",
                                 overflow="fold")
            suite_cases = [c for c in report["cases"] if c["suite"] == suite]
            suite_rows = rows({**report, "cases": suite_cases})
            for r in suite_rows:
                style = "bold" if r["ours"] else None
                if r["status"].startswith(core.FAIL) or r["status"].startswith(core.ERROR):
                    style = "red"
                table.add_row(*(r[k] for k, _ in COLUMNS), style=style, end_section=False)
            console.print(table)
    print("\nFastest per case:")
    width = max((len(c["key"]) for c in report["cases"]), default=10)
    for case in report["cases"]:
        print(f"  {case['key']:<{width}}  {verdict(case)}")
    roof = roofline_lines(report)
    if roof:
        print("\nRoofline (W_hh bytes streamed per step at the measured bandwidth of the cache level holding them):")
        for line in roof:
            print("  " + line)
    bad = [(c["key"], m) for c in report["cases"] for m in c["measurements"]
           if m["ours"] and m["status"] in (core.FAIL, core.ERROR)]
    for key, m in bad:
        print(f"  FAILING: {key} {m['impl']}: {status_text(m)}")
    print(f"\nruntime {report.get('runtime_s', 0):.0f} s")


def roofline_lines(report: dict) -> list[str]:
    """One line per case with a roofline: the bound, and fastlstm's and the
    fastest peer's share of it (100% would be at the bound)."""
    bw = report.get("bandwidth")
    if not bw:
        return []
    lines = [f"bandwidth: L2 {bw['l2']['gbps']:.0f} GB/s ({bw['l2']['working_set_bytes'] >> 10} KiB), "
             f"L3 {bw['l3']['gbps']:.0f} GB/s ({bw['l3']['working_set_bytes'] >> 20} MiB); {bw['probe']}"]
    width = max((len(c["key"]) for c in report["cases"]), default=10)
    for case in report["cases"]:
        r = case.get("roofline")
        if not r:
            continue
        peers_ = [m for m in timed(case) if not m["ours"]]
        shown = [m for m in timed(case) if m["ours"]] + ([min(peers_, key=lambda m: m["median_s"])] if peers_ else [])
        shares = [f"{m['impl']} {100 * m['extra']['roofline_fraction']:.0f}%" for m in shown
                  if (m.get("extra") or {}).get("roofline_fraction") is not None]
        lines.append(f"{case['key']:<{width}}  {r['weights_bytes_per_step'] / 1024:.0f} KiB/step x {r['steps']} "
                     f"from {r['level'].upper()} at {r['bound_gbps']:.0f} GB/s: bound {r['bound_s'] * 1e3:.3f} ms; "
                     + ", ".join(shares))
    return lines


# -- README markdown -----------------------------------------------------


def markdown(report: dict) -> str:
    """The README performance table: per suite, each implementation's median ms,
    fastlstm's speedup against each peer, and the fastest; machine and date on top."""
    m = report["machine"]
    v = m["versions"]
    out = [
        f"Measured by `{report.get('command', 'fastlstm bench')}` "
        f"on {m['cpu_model']} ({m['isa']}, {m['threads']} threads), {report['created'][:10]}; "
        + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ". "
        f"Median ms ({report['method']['description'].split(': ', 1)[-1]}); sgemm peak "
        f"{report['sgemm']['peak_gflops']:.0f} GFLOP/s. Speedup = peer time / fastlstm time.",
        "",
    ]
    for suite in report["suites"]:
        # one table per set of implementations (e.g. attention's op and module levels)
        groups: dict[tuple, list[dict]] = {}
        for c in report["cases"]:
            if c["suite"] == suite:
                groups.setdefault(tuple(m["impl"] for m in c["measurements"]), []).append(c)
        for impls, cases in groups.items():
            ours_names = {m["impl"] for c in cases for m in c["measurements"] if m["ours"]}
            peers_ = [i for i in impls if i not in ours_names]
            head = ["case", "mode", *[f"{i} ms" for i in impls], *[f"vs {p}" for p in peers_], "fastest"]
            out += [f"**{suite}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for c in cases:
                by = {mm["impl"]: mm for mm in c["measurements"]}
                cells = [c["name"], c["mode"]]
                for i in impls:
                    mm = by[i]
                    cells.append(_ms(mm["median_s"]) if mm["status"] == core.OK else mm["status"])
                for p in peers_:
                    sp = speedup(c, by[p])
                    cells.append(f"{sp:.2f}x" if sp else "-")
                cells.append(verdict(c))
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
    return "\n".join(out)


# -- comparing two runs --------------------------------------------------


def compare(old: dict, new: dict, threshold: float = 0.05) -> list[dict]:
    """Per (case, implementation): old and new medians, new/old, and a verdict:
    faster / slower (beyond ``threshold``), same, now failing, fixed, new, gone."""
    def index(report):
        return {(c["key"], m["impl"]): m for c in report["cases"] for m in c["measurements"]}

    a, b = index(old), index(new)
    out = []
    for key in list(a) + [k for k in b if k not in a]:
        mo, mn = a.get(key), b.get(key)
        row = {"case": key[0], "impl": key[1], "old_s": mo and mo["median_s"], "new_s": mn and mn["median_s"],
               "ratio": None}
        if mo is None:
            row["verdict"] = "new"
        elif mn is None:
            row["verdict"] = "gone"
        elif mo["status"] == core.OK and mn["status"] in (core.FAIL, core.ERROR):
            row["verdict"] = f"now {mn['status']}"
        elif mo["status"] != core.OK and mn["status"] == core.OK:
            row["verdict"] = f"now ok (was {mo['status']})"
        elif mo["status"] != core.OK or mn["status"] != core.OK:
            row["verdict"] = f"not timed ({mn['status']})"
        else:
            ratio = mn["median_s"] / mo["median_s"]
            row["ratio"] = ratio
            row["verdict"] = ("faster" if ratio < 1 - threshold else "slower" if ratio > 1 + threshold else "same")
        out.append(row)
    return out


def print_compare(rows_: list[dict], old: dict, threshold: float) -> None:
    print(f"\nCompared with {old['created']} on {old['machine']['cpu_model']} "
          f"(faster/slower: median changed by more than {threshold:.0%}; new/old time):")
    width = max((len(r["case"]) + len(r["impl"]) for r in rows_), default=20) + 1
    for r in rows_:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "-"
        print(f"  {(r['case'] + ' ' + r['impl']):<{width}}  {_ms(r['old_s']):>8} -> {_ms(r['new_s']):>8} ms  "
              f"{ratio:>7}  {r['verdict']}")
    counts = {}
    for r in rows_:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    print("  summary: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))


# -- PNG -----------------------------------------------------------------


def plot(report: dict, path: str | Path) -> None:
    """Bar chart of fastlstm's speedup against each peer, per case (log scale, 1 = parity)."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError('--png needs matplotlib (pip install "fastlstm[plot]")') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites = [s for s in report["suites"] if any(c["suite"] == s for c in report["cases"])]
    fig, axes = plt.subplots(len(suites), 1, figsize=(11, 3.2 * max(1, len(suites))), squeeze=False)
    for ax, suite in zip(axes[:, 0], suites):
        cases = [c for c in report["cases"] if c["suite"] == suite]
        peer_names: list[str] = []
        for c in cases:
            for m in c["measurements"]:
                if not m["ours"] and m["impl"] not in peer_names:
                    peer_names.append(m["impl"])
        labels = [f"{c['name']}\n{c['mode']}" for c in cases]
        colors = {peer: f"C{k}" for k, peer in enumerate(peer_names)}
        labelled = set()
        for i, c in enumerate(cases):
            present = [m for m in c["measurements"] if not m["ours"]]
            width = 0.8 / max(1, len(present))
            for k, m in enumerate(present):
                value = speedup(c, m)
                x = i + (k - (len(present) - 1) / 2) * width
                label = None if m["impl"] in labelled else f"vs {m['impl']}"
                labelled.add(m["impl"])
                if value:
                    ax.bar(x, value, width, color=colors[m["impl"]], label=label)
                else:  # not timed (failed, missing, skipped): a mark, not a gap
                    what = f"{m['impl']}: {m['status']}" if m["status"] != core.OK else "fastlstm not timed"
                    ax.text(x, 1.0, what, rotation=90, fontsize=6, ha="center", va="bottom",
                            color=colors[m["impl"]])
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_ylabel("fastlstm speedup")
        ax.set_title(f"{suite}: peer time / fastlstm time (above 1 = fastlstm faster)", fontsize=9)
        ax.set_xlim(-0.5, len(cases) - 0.5)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    m = report["machine"]
    fig.suptitle(f"fastlstm bench, {m['cpu_model']}, {m['threads']} threads, {report['created'][:10]}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
