"""``pillpipe compare [run flags]``: both variants on the same workload, side by side.

Each variant runs in its own fresh process (``benchmarks.probe``) with per-file details and
spans on.  Their reports must be identical first (else: the first differing file, exit 1);
then one table compares them with the ideal run, and a timeline picture per variant and a
Chrome trace file (opens in https://ui.perfetto.dev) are written.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

from pillpipe.common.config import Config, build_parser, config_from_args
from pillpipe.common.report import IGNORED
from pillpipe.common.simulate import Simulation, TimerModel, simulate

from . import plots
from .harness import DEFAULT_OUT, ProbeFailed, environment, interpreter, percentile, probe

VARIANTS = ("threaded", "asyncio")
# Timer calibration: sleeps from 0.13 ms to 20 ms, where rounding and overshoot matter.
CALIBRATION_DELAYS = [round(0.0001 * k + 0.00003, 6) for k in range(1, 41)] + [0.005, 0.0075, 0.01, 0.015, 0.02]


class ReportMismatch(AssertionError):
    """The two variants' reports differ: the comparison would be meaningless."""


def check_identical(reports: dict[str, dict[str, Any]]) -> None:
    """Raise ``ReportMismatch`` naming the first differing file (or field) unless all reports agree
    (each is compared with the first)."""
    items = list(reports.items())
    for other in items[2:]:
        check_identical(dict([items[0], other]))
    (name_a, a), (name_b, b) = items[:2]
    ca = {k: v for k, v in a.items() if k not in IGNORED}
    cb = {k: v for k, v in b.items() if k not in IGNORED}
    if ca == cb:
        return
    files_a, files_b = ca.pop("files", None) or [], cb.pop("files", None) or []
    for fa, fb in zip(files_a, files_b):
        if fa != fb:
            diff = {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
            shown = ", ".join(f"{k}: {va!r} vs {vb!r}" for k, (va, vb) in diff.items())
            raise ReportMismatch(f"reports differ: first differing file id {fa.get('id')} ({fa.get('name')}): "
                                 f"{name_a} vs {name_b}: {shown}")
    if len(files_a) != len(files_b):
        raise ReportMismatch(f"reports differ: {name_a} has {len(files_a)} per-file outcomes, {name_b} {len(files_b)}")
    for key in sorted(set(ca) | set(cb)):
        if ca.get(key) != cb.get(key):
            raise ReportMismatch(f"reports differ in {key!r}: {name_a} {ca.get(key)!r} vs {name_b} {cb.get(key)!r}"
                                 " (rerun with --details to see the first differing file)")


def timer_model(variant: str, python: str | None = None) -> TimerModel:
    """Measure the runtime's sleep overshoot in a fresh process (under ``python``) and fit a model to it."""
    result = probe(f"timer-{variant}", ["--delays", ",".join(map(str, CALIBRATION_DELAYS)), "--repeats", "2"],
                   timeout=120, **({"python": python} if python else {}))
    return TimerModel.fit(result["samples"])


def file_latencies(timing: dict[str, Any]) -> list[float]:
    """Per file: from its S3 copy starting to its verification, from the spans."""
    start: dict[int, float] = {}
    done: dict[int, float] = {}
    for _worker, stage, file_id, s, e in timing.get("spans") or []:
        if stage == "s3":
            start[file_id] = s
        elif stage == "verify":
            done[file_id] = e
    return [done[f] - start[f] for f in done if f in start]


def pill_propagation(timing: dict[str, Any]) -> dict[str, float | None]:
    """Per stage: from the coordinator starting to put the pills to the last worker taking its pill."""
    out: dict[str, float | None] = {}
    for stage in ("s3", "api", "verify"):
        s = timing.get("stages", {}).get(stage) or {}
        puts, got = s.get("pills_put_s") or [], s.get("pills_s") or []
        out[stage] = max(got) - puts[0] if puts and got else None
    return out


def startup(timing: dict[str, Any]) -> float | None:
    """Seconds from the run's start until every worker was running."""
    starts = [w.get("started_s") for w in timing.get("workers", {}).values()]
    starts = [s for s in starts if s is not None]
    return max(starts) if starts else None


def metrics(result: dict[str, Any], ideal: Simulation | None = None, calibrated: Simulation | None = None) -> dict[str, Any]:
    """Everything the table, the JSON and the scenarios show about one probe run."""
    report = result["report"]
    timing = report["timing"]
    wall = timing["wall_s"]
    made = timing.get("last_verified_s")
    lat = file_latencies(timing)
    out = {
        "processed": report["processed"], "expected": report["expected"], "success": report["success"],
        "wall_s": wall, "makespan_s": made,
        "files_per_s": report["processed"] / wall if wall else None,
        "latency_p50_s": percentile(lat, 50), "latency_p95_s": percentile(lat, 95),
        "latency_max_s": max(lat) if lat else None,
        "rss_peak_mib": result["rss_peak_kib"] / 1024, "rss_extra_mib": (result["rss_peak_kib"] - result["rss_before_kib"]) / 1024,
        "cpu_s": result["cpu_user_s"] + result["cpu_sys_s"], "cpu_user_s": result["cpu_user_s"], "cpu_sys_s": result["cpu_sys_s"],
        "os_threads": result["os_threads"], "tasks": result["tasks_created"],
        "voluntary_switches": result.get("voluntary_switches"),
        "shutdown_tail_s": timing.get("shutdown_tail_s"),
        "pill_propagation_s": pill_propagation(timing),
        "startup_s": startup(timing),
    }
    if ideal is not None:
        out["ideal_makespan_s"] = ideal.makespan
        out["efficiency"] = ideal.makespan / made if made and ideal.makespan else None
    if calibrated is not None:
        out["calibrated_makespan_s"] = calibrated.makespan
        out["efficiency_calibrated"] = calibrated.makespan / made if made and calibrated.makespan else None
    return out


def _fmt(value: Any, unit: str = "s") -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value * 1e3:.3f} ms"
    if unit == "s":
        return f"{value:.4g} s"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit == "x":
        return f"{value:.4f}"
    if unit == "/s":
        return f"{value:,.0f}/s" if value >= 100 else f"{value:.3g}/s"
    return str(value)


def table(rows: dict[str, dict[str, Any]], ideal: Simulation, calibrated: dict[str, Simulation], config: Config) -> Table:
    t = Table(title=f"pillpipe compare: {config.files} files, {config.s3_workers} S3 / {config.api_workers} API workers, "
                    f"time-scale {config.time_scale:g}, queue-size {config.queue_size}", title_justify="left")
    t.add_column("")
    for v in rows:
        t.add_column(v, justify="right")
    t.add_column("ideal", justify="right")
    lat_ideal = ideal.latencies()

    def line(label: str, key: str, unit: str, ideal_value: Any = None) -> None:
        t.add_row(label, *[_fmt(rows[v].get(key), unit) for v in rows], _fmt(ideal_value, unit))

    t.add_row("files verified", *[f"{r['processed']}/{r['expected']}" for r in rows.values()], "")
    line("wall time", "wall_s", "s")
    line("files/s", "files_per_s", "/s", config.files / ideal.makespan if ideal.makespan else None)
    line("makespan (last file verified)", "makespan_s", "s", ideal.makespan)
    t.add_row("calibrated ideal makespan", *[_fmt(calibrated[v].makespan) for v in rows], "")
    line("efficiency vs ideal", "efficiency", "x")
    line("efficiency vs calibrated ideal", "efficiency_calibrated", "x")
    line("per-file latency p50", "latency_p50_s", "ms", percentile(lat_ideal, 50))
    line("per-file latency p95", "latency_p95_s", "ms", percentile(lat_ideal, 95))
    line("per-file latency max", "latency_max_s", "ms", max(lat_ideal) if lat_ideal else None)
    line("peak RSS", "rss_peak_mib", "MiB")
    line("RSS added by the run", "rss_extra_mib", "MiB")
    t.add_row("CPU time (user + sys)", *[f"{r['cpu_user_s']:.3f} + {r['cpu_sys_s']:.3f} s" for r in rows.values()], "")
    line("OS threads", "os_threads", "")
    line("asyncio tasks", "tasks", "")
    line("start-up (all workers running)", "startup_s", "ms")
    line("shutdown tail (last verified -> all exited)", "shutdown_tail_s", "ms")
    for stage in ("s3", "api", "verify"):
        t.add_row(f"pill propagation: {stage}", *[_fmt(r["pill_propagation_s"][stage], "ms") for r in rows.values()], "")
    return t


def parser() -> argparse.ArgumentParser:
    p = build_parser("pillpipe compare", "Run both variants on the same workload, each in a fresh process, check "
                                         "their reports are identical, and compare them side by side.")
    h = p.add_argument_group("compare")
    h.add_argument("--out", type=Path, default=DEFAULT_OUT / "compare", help="output directory (default %(default)s)")
    h.add_argument("--timeout", type=float, default=3600, help="seconds one variant may take (default %(default)s)")
    h.add_argument("--python", action="append", metavar="PATH", dest="pythons",
                   help="run the probes under this interpreter (repeatable: 3.11, 3.12, 3.13 side by side; "
                        "default: this one); each one's version is recorded")
    return p


def main(argv: Sequence[str]) -> int:
    p = parser()
    ns = p.parse_args(list(argv))
    out: Path = ns.out
    try:
        config = config_from_args(ns)
    except Exception as exc:  # UsageError
        p.error(str(exc))
    run_flags = [a for a in _strip(argv)] + ["--quiet", "--details", "--trace"]
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    pythons: list[str | None] = list(ns.pythons or [None])
    try:
        infos = [interpreter(py) for py in pythons]
    except ProbeFailed as exc:
        p.error(f"--python: {exc.reason}")
    # one column per variant, or per variant and interpreter when several are given
    columns: dict[str, tuple[str, str | None]] = {}
    for py, info in zip(pythons, infos):
        for variant in VARIANTS:
            columns[variant if len(pythons) == 1 else f"{variant}@{info['python']}"] = (variant, py)
    results: dict[str, dict[str, Any]] = {}
    try:
        for label, (variant, py) in columns.items():
            err.print(f"[dim]running {label} in a fresh process...[/dim]")
            results[label] = probe(variant, run_flags, timeout=ns.timeout, **({"python": py} if py else {}))
    except ProbeFailed as exc:
        err.print(f"[bold red]compare: {exc}[/bold red]")
        return 70
    try:
        check_identical({v: r["report"] for v, r in results.items()})
    except ReportMismatch as exc:
        err.print(f"[bold red]compare: FAILED - {exc}[/bold red]")
        return 1
    err.print("[green]reports identical[/green] (everything but variant and timing); measuring timers...")
    ideal = simulate(config)
    calibrated = {}
    models = {}
    for v, (variant, py) in columns.items():
        models[v] = timer_model(variant, py)
        calibrated[v] = simulate(config, timer=models[v])
    rows = {v: metrics(results[v], ideal, calibrated[v]) for v in columns}
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=120)  # piped: do not squeeze the table to 80 columns
    console.print(table(rows, ideal, calibrated, config))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for v in columns:
        written.append(plots.timeline(results[v]["report"]["timing"], f"{v}: {config.files} files", out / f"timeline-{v}.png"))
    written.append(plots.chrome_trace({v: results[v]["report"]["timing"] for v in columns}, out / "trace.json"))
    summary = {"environment": environment(pythons),
               "config": {k: v for k, v in vars(config).items() if k != "fault_plan"},
               "ideal_makespan_s": ideal.makespan, "timer_models": {v: m.to_dict() for v, m in models.items()},
               "variants": rows}
    (out / "compare.json").write_text(json.dumps(summary, indent=2, default=str))
    written.append(out / "compare.json")
    err.print("wrote " + ", ".join(str(w) for w in written))
    return 0


def _strip(argv: Sequence[str]) -> list[str]:
    """The run flags only: drop compare's own options."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--out", "--timeout", "--python"):
            skip = True
            continue
        if a.startswith(("--out=", "--timeout=", "--python=")) or a == "--json":
            continue
        out.append(a)
    return out


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
