"""``pillpipe compare [run flags]``: the concurrency models on the same workload, side by side.

Each model (threaded, asyncio, anyio; ``--variants`` to choose) runs in its own fresh process
(``benchmarks.probe``) with per-file details and spans on.  Their reports must be identical first
(else: the first differing file, exit 1); then one table compares them with the ideal run, and one
picture of their timelines on a shared time axis and a Chrome trace file (opens in
https://ui.perfetto.dev) are written.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.console import Console
from rich.table import Table

from pillpipe.common.config import Config, applicable, build_parser, config_from_args
from pillpipe.common.model import Stage
from pillpipe.common.report import IGNORED
from pillpipe.common.simulate import Simulation, simulate
from pillpipe.variants import CONCURRENT

from . import plots, units
from .harness import DEFAULT_OUT, ProbeFailed, environment, interpreter, percentile, probe, recorded, timer_model
from .metrics import CONSUMERS, metrics


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


def table(rows: dict[str, dict[str, Any]], ideal: Simulation, calibrated: dict[str, Simulation], config: Config) -> Table:
    t = Table(title=f"pillpipe compare: {config.files} files, {config.s3_workers} S3 / {config.api_workers} API workers, "
                    f"time-scale {config.time_scale:g}, queue-size {config.queue_size}", title_justify="left")
    t.add_column("")
    for v in rows:
        t.add_column(v, justify="right")
    t.add_column("ideal", justify="right")
    lat_ideal = ideal.latencies()

    def line(label: str, key: str, fmt: Callable[[Any], str], ideal_value: Any = None) -> None:
        t.add_row(label, *[fmt(r.get(key)) for r in rows.values()], fmt(ideal_value) if ideal_value is not None else "")

    t.add_row("files verified", *[f"{r['processed']}/{r['expected']}" for r in rows.values()], "")
    line("wall time (s)", "wall_s", units.seconds)
    line("files/s", "files_per_s", units.rate, config.files / ideal.makespan if ideal.makespan else None)
    line("makespan: last file verified (s)", "makespan_s", units.seconds, ideal.makespan)
    t.add_row("calibrated ideal makespan (s)", *[units.seconds(calibrated[v].makespan) for v in rows], "")
    line("efficiency vs ideal", "efficiency", units.ratio)
    line("efficiency vs calibrated ideal", "efficiency_calibrated", units.ratio)
    line("per-file latency p50 (ms)", "latency_p50_s", units.ms, percentile(lat_ideal, 50))
    line("per-file latency p95 (ms)", "latency_p95_s", units.ms, percentile(lat_ideal, 95))
    line("per-file latency max (ms)", "latency_max_s", units.ms, max(lat_ideal) if lat_ideal else None)
    line("peak RSS (MiB)", "rss_peak_mib", units.mib)
    line("RSS added by the run (MiB)", "rss_extra_mib", units.mib)
    t.add_row("CPU time: user + sys (s)",
              *[f"{units.seconds(r['cpu_user_s'])} + {units.seconds(r['cpu_sys_s'])}" for r in rows.values()], "")
    line("OS threads", "os_threads", units.count)
    line("tasks via asyncio.create_task", "tasks", units.count)
    line("start-up: all workers running (ms)", "startup_s", units.ms)
    line("shutdown tail: last verified -> all exited (ms)", "shutdown_tail_s", units.ms)
    for stage in CONSUMERS:
        t.add_row(f"pill propagation: {stage} (ms)", *[units.ms(r["pill_propagation_s"][stage]) for r in rows.values()],
                  "")
    if config.io == "real":
        real_io_lines(t, rows)
    return t


def io_metrics(result: dict[str, Any], ideal: Simulation) -> dict[str, Any]:
    """What real I/O adds to a run's metrics, from its report's ``timing["io"]``."""
    io = result["report"]["timing"].get("io")
    if not io:
        return {}
    made = result["report"]["timing"].get("last_verified_s")
    ready = io.get("ready_s") or 0.0
    return {"io": io, "efficiency_ready": ideal.makespan / (made - ready) if made and made > ready else None}


def real_io_lines(t: Table, rows: dict[str, dict[str, Any]]) -> None:
    """``--io real``: the clients, their calls, their connections, their CPU."""
    ios = [r.get("io") or {} for r in rows.values()]
    t.add_row("libraries: S3 / API", *[" / ".join((io.get("libraries") or {}).values()) for io in ios], "")
    t.add_row("clients ready: imported and made (ms)", *[units.ms(io.get("ready_s")) for io in ios], "")
    t.add_row("efficiency vs ideal, from clients ready", *[units.ratio(r.get("efficiency_ready")) for r in rows.values()],
              "")
    t.add_row("client CPU per file (ms)", *[units.us(io.get("cpu_per_file_ms")) for io in ios], "")
    for stage in [s.value for s in Stage if s is not Stage.DISPATCH]:
        t.add_row(f"{stage} calls: p50 / p99 (ms)", *[
            f"{units.us(c.get('p50_ms'))} / {units.us(c.get('p99_ms'))}" if c.get("calls") else "-"
            for c in ((io.get("calls") or {}).get(stage) or {} for io in ios)], "")
    t.add_row("connections opened: s3 / api", *[
        " / ".join(units.count(n) for n in (io.get("connections") or {}).values()) or "-" for io in ios], "")
    t.add_row("failed attempts by class", *[", ".join(f"{k} {n}" for k, n in (io.get("failed_attempts") or {}).items())
                                           or "-" for io in ios], "")


def parser(prog: str = "pillpipe compare") -> argparse.ArgumentParser:
    p = build_parser(prog, "Run the concurrency models on the same workload, each in a fresh process, check their "
                           "reports are identical, and compare them side by side: a table on stdout; in --out, "
                           "timelines.png (one panel per model, one time axis), trace.json (open it in "
                           "https://ui.perfetto.dev) and compare.json.")
    h = p.add_argument_group("compare")
    h.add_argument("--variants", nargs="+", choices=CONCURRENT, default=list(CONCURRENT), metavar="VARIANT",
                   help=f"the models to compare, two or more of {', '.join(CONCURRENT)} (default: all); the run "
                        "flags must apply to each (--shutdown and --loop do not apply to anyio, --backend only to it)")
    h.add_argument("--out", type=Path, default=DEFAULT_OUT / "compare", help="output directory (default %(default)s)")
    h.add_argument("--timeout", type=float, default=3600, help="seconds one variant may take (default %(default)s)")
    h.add_argument("--python", action="append", metavar="PATH", dest="pythons",
                   help="run the probes under this interpreter (repeatable: 3.11, 3.12, 3.13 side by side; "
                        "default: this one); each one's version is recorded")
    return p


OWN_FLAGS = ("--out", "--timeout", "--python")  # compare's options taking one value; --variants takes several


def main(argv: Sequence[str], prog: str = "pillpipe compare") -> int:
    """Exit codes: 0 compared, 1 the reports differ, 2 bad usage (a model rejecting a run flag too),
    70 a model's run failed."""
    p = parser(prog)
    ns = p.parse_args(list(argv))
    out: Path = ns.out
    try:
        config = config_from_args(ns)
    except Exception as exc:  # UsageError
        p.error(str(exc))
    variants = list(dict.fromkeys(ns.variants))
    if len(variants) < 2:
        p.error(f"--variants: give two or more to compare (got {' '.join(variants)})")
    for variant in variants if not ns.pythons else ():  # other interpreters judge for themselves
        problem = applicable(config, variant)
        if problem is not None:
            p.error(f"{variant}: {problem} (choose the models with --variants)")
    run_flags = _strip(argv) + ["--quiet", "--details", "--trace"]
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    pythons: list[str | None] = list(ns.pythons or [None])
    try:
        infos = [interpreter(py) for py in pythons]
    except ProbeFailed as exc:
        p.error(f"--python: {exc.reason}")
    # one column per variant, or per variant and interpreter when several are given
    columns: dict[str, tuple[str, str | None]] = {}
    for py, info in zip(pythons, infos):
        for variant in variants:
            columns[variant if len(pythons) == 1 else f"{variant}@{info['python']}"] = (variant, py)
    results: dict[str, dict[str, Any]] = {}
    for label, (variant, py) in columns.items():
        err.print(f"[dim]running {label} in a fresh process...[/dim]")
        try:
            results[label] = probe(variant, run_flags, timeout=ns.timeout, python=py)
        except ProbeFailed as exc:
            if exc.reason.startswith("exit 2:"):  # the model rejected a run flag: a usage error, saying which
                p.error(f"{variant}: {exc.reason.split('error: ', 1)[-1]} (choose the models with --variants)")
            err.print(f"[bold red]{prog}: {exc}[/bold red]")
            return 70
    try:
        check_identical({v: r["report"] for v, r in results.items()})
    except ReportMismatch as exc:
        err.print(f"[bold red]{prog}: FAILED - {exc}[/bold red]")
        return 1
    err.print("[green]reports identical[/green] (everything but variant and timing); measuring timers...")
    ideal = simulate(config)
    models = {v: timer_model(variant, py, config.backend) for v, (variant, py) in columns.items()}
    calibrated = {v: simulate(config, timer=m) for v, m in models.items()}
    rows = {v: {**metrics(results[v], ideal, calibrated[v]), **io_metrics(results[v], ideal)} for v in columns}
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=120)  # piped: do not squeeze the table to 80 columns
    console.print(table(rows, ideal, calibrated, config))
    out.mkdir(parents=True, exist_ok=True)
    timings = {v: results[v]["report"]["timing"] for v in columns}
    written = [plots.timelines(timings, f"{config.files} files, {config.s3_workers} S3 / {config.api_workers} API "
                               f"workers, time-scale {config.time_scale:g}, queue-size {config.queue_size}",
                               out / "timelines.png", config.files),
               plots.chrome_trace(timings, out / "trace.json")]
    summary = {"environment": recorded(environment(pythons)),
               "config": {k: v for k, v in vars(config).items() if k != "fault_plan"},
               "ideal_makespan_s": ideal.makespan, "timer_models": {v: m.to_dict() for v, m in models.items()},
               "variants": rows}
    (out / "compare.json").write_text(json.dumps(summary, indent=2, default=str))
    written.append(out / "compare.json")
    err.print("wrote " + ", ".join(str(w) for w in written))
    return 0


def _strip(argv: Sequence[str]) -> list[str]:
    """The run flags only: drop compare's own options."""
    out: list[str] = []
    skip = 0
    args = list(argv)
    for i, a in enumerate(args):
        if skip:
            skip -= 1
            continue
        if a in OWN_FLAGS:
            skip = 1
        elif a == "--variants":  # its values run up to the next flag
            skip = next((j for j, b in enumerate(args[i + 1:]) if b.startswith("-")), len(args) - i - 1)
        elif not (a.startswith(tuple(f"{f}=" for f in (*OWN_FLAGS, "--variants"))) or a == "--json"):
            out.append(a)
    return out


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
