"""``python -m benchmarks [--quick] [--out DIR] [--only NAME ...]``: the benchmark scenarios.

Every measurement runs in a fresh process (``benchmarks.probe``); each point gets a warm-up
(full runs) and repeats, reported as median with min-max.  Results: ``results.json`` (with the
environment), ``summary.md`` and PNG plots in the output directory.
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pillpipe.common.config import Config
from pillpipe.common.simulate import TimerModel, simulate

from . import plots
from . import strategies as strategies_
from .compare import metrics, timer_model
from .harness import DEFAULT_OUT, ROOT, ProbeFailed, environment, probe, stat

VARIANTS = ("threaded", "asyncio")
SCENARIOS = ("overhead", "latency", "scaling", "shutdown", "memory", "strategies")
MIB = 1024


@dataclass(frozen=True)
class Plan:
    """How big each scenario is: ``--quick`` (a smoke test, under a minute) or the full run."""

    quick: bool
    overhead_files: int
    overhead_repeats: int
    warmup: int
    latency_points: tuple[tuple[float, int, int], ...]  # (time scale, files, repeats)
    asyncio_workers: tuple[int, ...]
    thread_workers: tuple[int, ...]
    busy_max_workers: int
    scaling_repeats: int
    shutdown_files: int
    shutdown_workers: tuple[int, ...]
    shutdown_repeats: int
    memory_files: int
    sigint_repeats: int

    @classmethod
    def make(cls, quick: bool) -> "Plan":
        if quick:
            return cls(True, 5_000, 1, 0, ((0.001, 200, 1), (0.01, 40, 1)), (1, 100, 1000), (1, 100), 100, 1,
                       2_000, (2,), 1, 0, 0)
        return cls(False, 100_000, 3, 1,
                   ((0.0001, 1000, 3), (0.001, 1000, 3), (0.01, 1000, 3), (0.1, 200, 1), (1.0, 16, 1)),
                   (1, 10, 100, 1_000, 10_000, 100_000), (1, 10, 100, 1_000, 3_000, 10_000, 30_000, 40_000), 10_000, 3,
                   20_000, (2, 1_000), 5, 1_000_000, 3)


class Runner:
    """Runs probes with a progress bar (only when stdout is a terminal)."""

    def __init__(self, total: int, show: bool, python: str | None = None) -> None:
        self.python = python  # --python: the interpreter the probes run under (None: this one)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(stderr=True), disable=not show)
        self.task = self.progress.add_task("benchmarks", total=total)

    def probe(self, label: str, kind: str, flags: Sequence[Any], timeout: float = 600) -> dict[str, Any]:
        self.progress.update(self.task, description=label)
        try:
            return probe(kind, [str(f) for f in flags], timeout=timeout, python=self.python)
        finally:
            self.progress.advance(self.task)

    def repeat(self, label: str, kind: str, flags: Sequence[Any], repeats: int, warmup: int = 0,
               timeout: float = 600) -> list[dict[str, Any]]:
        for _ in range(warmup):
            self.probe(f"{label} (warm-up)", kind, flags, timeout)
        return [self.probe(f"{label} ({i + 1}/{repeats})", kind, flags, timeout) for i in range(repeats)]


def _summ(values: Sequence[float | None]) -> dict[str, float] | None:
    s = stat(v for v in values if v is not None)
    return s.to_dict() if s else None


def _med(d: dict[str, Any] | None) -> float | None:
    return None if d is None else d["median"]


# The scenarios --------------------------------------------------------------------------------
def overhead(r: Runner, plan: Plan) -> dict[str, Any]:
    """Zero latency: the per-file cost of each variant vs its bare chain + the sequential run."""
    flags = ["--files", plan.overhead_files, "--time-scale", 0, "--quiet", "--queue-size", 1000]
    out: dict[str, Any] = {"files": plan.overhead_files, "queue_size": 1000, "runs": {}}
    for kind in ("sequential", "bare-threaded", "bare-asyncio", *VARIANTS):
        runs = r.repeat(f"overhead {kind}", kind, flags, plan.overhead_repeats, plan.warmup)
        out["runs"][kind] = {
            "files_per_s": _summ([x["files"] / x["elapsed_s"] for x in runs]),
            "us_per_file": _summ([x["elapsed_s"] / x["files"] * 1e6 for x in runs]),
            "cpu_s": _summ([x["cpu_user_s"] + x["cpu_sys_s"] for x in runs]),
            "cpu_sys_s": _summ([x["cpu_sys_s"] for x in runs]),
            "voluntary_switches": _summ([x["voluntary_switches"] for x in runs]),
            "rss_peak_mib": _summ([x["rss_peak_kib"] / MIB for x in runs]),
        }
    seq = _med(out["runs"]["sequential"]["us_per_file"])
    for v in VARIANTS:
        bare = _med(out["runs"][f"bare-{v}"]["us_per_file"])
        cost = _med(out["runs"][v]["us_per_file"])
        out["runs"][v]["limit_us_per_file"] = bare + seq
        out["runs"][v]["overhead_ratio"] = cost / (bare + seq)
    return out


def latency(r: Runner, plan: Plan, timers: dict[str, TimerModel]) -> dict[str, Any]:
    """The tutorial's latencies scaled down: efficiency vs the ideal and the calibrated ideal."""
    points = []
    for scale, files, repeats in plan.latency_points:
        config = Config(files=files, time_scale=scale, quiet=True)
        ideal = simulate(config)
        point: dict[str, Any] = {"time_scale": scale, "files": files, "ideal_makespan_s": ideal.makespan}
        for v in VARIANTS:
            calibrated = simulate(config, timer=timers[v])
            runs = r.repeat(f"latency x{scale:g} {v}", v, ["--files", files, "--time-scale", scale, "--quiet"],
                            repeats, plan.warmup if scale <= 0.01 else 0, timeout=3600)
            ms = [metrics(x, ideal, calibrated) for x in runs]
            point[v] = {
                "calibrated_makespan_s": calibrated.makespan,
                "makespan_s": _summ([m["makespan_s"] for m in ms]),
                "efficiency": _summ([m["efficiency"] for m in ms]),
                "efficiency_calibrated": _summ([m["efficiency_calibrated"] for m in ms]),
                "cpu_s": _summ([m["cpu_s"] for m in ms]),
            }
        points.append(point)
    return {"points": points, "timer_models": {v: m.to_dict() for v, m in timers.items()}}


def scaling(r: Runner, plan: Plan) -> dict[str, Any]:
    """API workers from 1 up: idle runs (no files) for memory, start-up and stop; busy runs for files/s."""
    busy_api = (0.02, 0.04)
    out: dict[str, Any] = {"busy": {"s3_latency": [0, 0], "api_latency": list(busy_api),
                                    "files": "max(200, 2 x workers)" if not plan.quick else 40},
                           "variants": {}}
    for v in VARIANTS:
        points: list[dict[str, Any]] = []
        stopped: dict[str, Any] | None = None
        for n in (plan.asyncio_workers if v == "asyncio" else plan.thread_workers):
            point: dict[str, Any] = {"workers": n}
            try:
                idle = r.repeat(f"scaling {v} {n} idle", v, ["--files", 0, "--api-workers", n, "--quiet"],
                                plan.scaling_repeats if n <= 10_000 else 1, timeout=300)
            except ProbeFailed as exc:
                stopped = {"workers": n, "reason": exc.reason}
                break
            ms = [metrics(x) for x in idle]
            point.update({
                "rss_extra_mib": _summ([m["rss_extra_mib"] for m in ms]),
                "rss_peak_mib": _summ([m["rss_peak_mib"] for m in ms]),
                "startup_s": _summ([m["startup_s"] for m in ms]),
                "stop_s": _summ([_stop(x) for x in idle]),
                "wall_s": _summ([m["wall_s"] for m in ms]),
                "os_threads": ms[0]["os_threads"], "tasks": ms[0]["tasks"],
            })
            if n <= plan.busy_max_workers:
                files = 40 if plan.quick else max(200, 2 * n)
                try:
                    busy = r.probe(f"scaling {v} {n} busy", v, ["--files", files, "--api-workers", n, "--s3-latency", 0, 0,
                                                                "--api-latency", *busy_api, "--quiet"], timeout=600)
                    config = Config(files=files, api_workers=n, s3_latency=(0, 0), api_latency=busy_api, quiet=True)
                    m = metrics(busy, simulate(config))
                    point.update({"files": files, "files_per_s": m["files_per_s"], "efficiency": m["efficiency"],
                                  "shutdown_tail_s": m["shutdown_tail_s"], "busy_rss_peak_mib": m["rss_peak_mib"]})
                except ProbeFailed as exc:
                    point["busy_error"] = exc.reason
            points.append(point)
        base = points[0]["rss_extra_mib"]["median"] if points else 0.0
        for p in points:
            if p["workers"] > 1:
                p["kib_per_worker"] = (p["rss_extra_mib"]["median"] - base) * MIB / (p["workers"] - 1)
        out["variants"][v] = {"points": points, "stopped": stopped}
    return out


def _stop(result: dict[str, Any]) -> float | None:
    """Idle run: from the coordinator's first pill to the last worker's exit."""
    t = result["report"]["timing"]
    puts = (t["stages"].get("s3") or {}).get("pills_put_s") or []
    exits = [w["exited_s"] for w in t["workers"].values() if w.get("exited_s") is not None]
    return max(exits) - puts[0] if puts and exits else None


def strategies(r: Runner, plan: Plan, interpreters: list[dict[str, Any]]) -> dict[str, Any]:
    """Every model x termination strategy x loop (``benchmarks/strategies.py``); --quick: a smoke case."""

    def run_probe(label: str, kind: str, flags: Sequence[Any], python: str) -> dict[str, Any]:
        r.progress.update(r.task, description=label)
        try:
            return probe(kind, [str(f) for f in flags], timeout=600, python=python)
        finally:
            r.progress.advance(r.task)

    return strategies_.run(run_probe, plan.quick, interpreters)


def shutdown(r: Runner, plan: Plan) -> dict[str, Any]:
    """Shutdown tail and pill propagation: default and many API workers, unbounded and bounded queues."""
    rows = []
    # zero latency (CPU-bound), then the tutorial's latencies x0.001 at default workers: there an
    # unbounded queue is filled by the dispatcher at once and every pill waits behind the backlog.
    workloads = [(n, 0.0, plan.shutdown_files) for n in plan.shutdown_workers]
    workloads.append((2, 0.001, plan.shutdown_files // 20))
    for n, scale, files in workloads:
        for size in (0, 100):
            for v in VARIANTS:
                runs = r.repeat(f"shutdown {v} api={n} x{scale:g} queue={size}", v,
                                ["--files", files, "--time-scale", scale, "--api-workers", n,
                                 "--queue-size", size, "--quiet"], plan.shutdown_repeats, timeout=600)
                ms = [metrics(x) for x in runs]
                rows.append({"variant": v, "api_workers": n, "queue_size": size, "files": files, "time_scale": scale,
                             "shutdown_tail_s": _summ([m["shutdown_tail_s"] for m in ms]),
                             "pill_s3_s": _summ([m["pill_propagation_s"]["s3"] for m in ms]),
                             "pill_api_s": _summ([m["pill_propagation_s"]["api"] for m in ms]),
                             "pill_verify_s": _summ([m["pill_propagation_s"]["verify"] for m in ms]),
                             "wall_s": _summ([m["wall_s"] for m in ms])})
    out: dict[str, Any] = {"rows": rows, "sigint": []}
    for v in VARIANTS:
        times = [t for t in (_sigint_to_exit(v, r.python) for _ in range(plan.sigint_repeats)) if t is not None]
        if plan.sigint_repeats:
            out["sigint"].append({"variant": v, "exit_after_sigint_s": _summ([t[0] for t in times]),
                                  "exit_codes": sorted({t[1] for t in times})})
    return out


def _sigint_to_exit(variant: str, python: str | None = None) -> tuple[float, int] | None:
    """Start a long run, send SIGINT after 1 s, time until the process has exited (drain included)."""
    module = {"threaded": "pillpipe.threaded", "asyncio": "pillpipe.asyncio_version"}[variant]
    proc = subprocess.Popen([python or sys.executable, "-m", module, "--files", "100000", "--time-scale", "0.01", "--quiet",
                             "--queue-size", "100"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    t = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
    return time.perf_counter() - t, code


def memory(r: Runner, plan: Plan) -> dict[str, Any]:
    """Peak RSS for a million files at zero latency, bounded vs unbounded queues."""
    rows = []
    for size in (1000, 0):
        for v in VARIANTS:
            try:
                x = r.probe(f"memory {v} queue={size}", v, ["--files", plan.memory_files, "--time-scale", 0,
                                                            "--queue-size", size, "--quiet"], timeout=1800)
            except ProbeFailed as exc:
                rows.append({"variant": v, "queue_size": size, "error": exc.reason})
                continue
            rows.append({"variant": v, "queue_size": size, "files": plan.memory_files,
                         "rss_peak_mib": x["rss_peak_kib"] / MIB, "wall_s": x["elapsed_s"],
                         "cpu_user_s": x["cpu_user_s"], "cpu_sys_s": x["cpu_sys_s"],
                         "voluntary_switches": x["voluntary_switches"],
                         "success": x["report"]["success"]})
    return {"rows": rows}


# Targets, summary, plots ----------------------------------------------------------------------
def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's performance targets, each met or not, with the measured numbers."""
    out: list[dict[str, Any]] = []

    def add(target: str, measured: str, met: bool | None) -> None:
        out.append({"target": target, "measured": measured, "met": met})

    if "overhead" in res:
        runs = res["overhead"]["runs"]
        for v in VARIANTS:
            ratio = runs[v]["overhead_ratio"]
            add(f"overhead {v}: cost/file <= 1.25 x (bare chain + sequential)",
                f"{_med(runs[v]['us_per_file']):.2f} us vs {runs[v]['limit_us_per_file']:.2f} us: {ratio:.2f}x",
                ratio <= 1.25)
        add("per-file work cheap (a few us): sequential cost/file", f"{_med(runs['sequential']['us_per_file']):.2f} us",
            _med(runs["sequential"]["us_per_file"]) <= 5)
    if "latency" in res:
        for p in res["latency"]["points"]:
            if p["time_scale"] < 0.01:
                continue
            need = 0.995 if p["time_scale"] >= 1 else 0.97
            for v in VARIANTS:
                e = _med(p[v]["efficiency"])
                add(f"efficiency {v} at x{p['time_scale']:g} ({p['files']} files) >= {need}",
                    f"{e:.4f} (calibrated {_med(p[v]['efficiency_calibrated']):.4f})", e >= need)
    if "scaling" in res:
        a = {p["workers"]: p for p in res["scaling"]["variants"]["asyncio"]["points"]}
        if 10_000 in a:
            p = a[10_000]
            extra = _med(p["rss_extra_mib"]) - _med(a[1]["rss_extra_mib"])
            add("10,000 asyncio API workers: < 20 MiB extra RSS", f"{extra:.1f} MiB", extra < 20)
            add("10,000 asyncio API workers: started within 100 ms", f"{_med(p['startup_s']) * 1e3:.1f} ms",
                _med(p["startup_s"]) < 0.1)
            add("10,000 asyncio API workers: stopped within 100 ms", f"{_med(p['stop_s']) * 1e3:.1f} ms",
                _med(p["stop_s"]) < 0.1)
        t = {p["workers"]: p for p in res["scaling"]["variants"]["threaded"]["points"]}
        if 1_000 in t:
            p = t[1_000]
            add("1,000 threads started and stopped cleanly (cost reported)",
                f"start {_med(p['startup_s']) * 1e3:.0f} ms, stop {_med(p['stop_s']) * 1e3:.0f} ms, "
                f"{p.get('kib_per_worker', 0):.1f} KiB/thread", True)
    if "shutdown" in res:
        for row in res["shutdown"]["rows"]:
            if row["api_workers"] == 2 and row["queue_size"] == 0 and row["time_scale"] == 0:
                tail = _med(row["shutdown_tail_s"])
                add(f"shutdown tail {row['variant']} at default workers: median < 1 ms", f"{tail * 1e3:.3f} ms",
                    tail < 0.001)
    if "memory" in res:
        for row in res["memory"]["rows"]:
            if row["queue_size"] > 0 and "rss_peak_mib" in row:
                add(f"1,000,000 files, bounded queues, {row['variant']}: peak RSS < 64 MiB",
                    f"{row['rss_peak_mib']:.1f} MiB ({row['wall_s']:.1f} s)", row["rss_peak_mib"] < 64)
    return out


def _ms(d: dict[str, Any] | None) -> str:
    return "-" if d is None else f"{d['median'] * 1e3:.3f} ({d['min'] * 1e3:.3f}-{d['max'] * 1e3:.3f})"


def _num(d: dict[str, Any] | None, fmt: str = "{:.4g}") -> str:
    return "-" if d is None else f"{fmt.format(d['median'])} ({fmt.format(d['min'])}-{fmt.format(d['max'])})"


def summary_md(res: dict[str, Any], command: str) -> str:
    env = res["environment"]
    lines = ["# Benchmark results", "",
             f"Machine: {env['cpu']}, {env['cores']} cores, {env['memory_mib']} MiB RAM, {env['os']}; "
             f"Python {env['python']} ({env['implementation']}); rich {env['libraries'].get('rich')}, "
             f"matplotlib {env['libraries'].get('matplotlib')}. Command: `{command}` ({res['elapsed_s']:.0f} s). "
             "Medians over repeats, (min-max) in brackets; every run in a fresh process.", ""]
    if res.get("targets"):
        lines += ["## Performance targets", "", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |" for t in res["targets"]]
        lines.append("")
    if "overhead" in res:
        o = res["overhead"]
        lines += [f"## Overhead: {o['files']:,} files at --time-scale 0, --queue-size {o['queue_size']}", "",
                  "| run | files/s | us/file | CPU s | voluntary switches | overhead vs (bare + sequential) |",
                  "|---|---|---|---|---|---|"]
        for kind, x in o["runs"].items():
            ratio = f"{x['overhead_ratio']:.2f}x" if "overhead_ratio" in x else ""
            lines.append(f"| {kind} | {_num(x['files_per_s'], '{:,.0f}')} | {_num(x['us_per_file'], '{:.2f}')} | "
                         f"{_num(x['cpu_s'], '{:.2f}')} | {_num(x['voluntary_switches'], '{:,.0f}')} | {ratio} |")
        lines.append("")
    if "latency" in res:
        lat = res["latency"]
        tm = lat["timer_models"]
        lines += ["## Latency-bound: efficiency = ideal makespan / measured makespan", "",
                  "Timer models measured: " + "; ".join(
                      f"{v}: rounds to {m['quantum_s'] * 1e3:g} ms, +{m['offset_s'] * 1e6:.0f} us" if m["quantum_s"]
                      else f"{v}: +{m['offset_s'] * 1e6:.0f} us per sleep" for v, m in tm.items()), "",
                  "| time scale | files | ideal makespan | threaded | threaded (calibrated) | asyncio | asyncio (calibrated) |",
                  "|---|---|---|---|---|---|---|"]
        for p in lat["points"]:
            lines.append(f"| {p['time_scale']:g} | {p['files']} | {p['ideal_makespan_s']:.4g} s | "
                         + " | ".join(f"{_num(p[v]['efficiency'])} | {_num(p[v]['efficiency_calibrated'])}"
                                      for v in VARIANTS) + " |")
        lines.append("")
    if "scaling" in res:
        sc = res["scaling"]
        lines += ["## Worker scaling (API workers)", "",
                  "Idle runs (no files) give memory, start-up (until every worker runs) and stop (first pill to last "
                  f"exit); busy runs ({sc['busy']['files']} files, S3 latency 0, API 20-40 ms) give files/s.", "",
                  "| variant | API workers | extra RSS MiB | KiB/worker | start-up ms | stop ms | files/s | efficiency |",
                  "|---|---|---|---|---|---|---|---|"]
        for v, data in sc["variants"].items():
            for p in data["points"]:
                kib = f"{p['kib_per_worker']:.2f}" if "kib_per_worker" in p else "-"
                fps = f"{p['files_per_s']:,.0f}" if p.get("files_per_s") else p.get("busy_error", "-")
                eff = f"{p['efficiency']:.3f}" if p.get("efficiency") else "-"
                lines.append(f"| {v} | {p['workers']:,} | {_num(p['rss_extra_mib'], '{:.1f}')} | {kib} | "
                             f"{_ms(p['startup_s'])} | {_ms(p['stop_s'])} | {fps} | {eff} |")
            if data["stopped"]:
                lines.append(f"| {v} | {data['stopped']['workers']:,} | stopped: {data['stopped']['reason']} | | | | | |")
        lines.append("")
    if "shutdown" in res:
        sh = res["shutdown"]
        lines += ["## Shutdown tail and pill propagation (ms)", "",
                  "Shutdown tail: last file verified -> every worker exited.  Pills: the coordinator starts putting a "
                  "stage's pills -> the stage's last worker takes its pill.", "",
                  "| variant | API workers | time scale | queue size | files | shutdown tail | pills S3 | pills API "
                  "| pills verifier |", "|---|---|---|---|---|---|---|---|---|"]
        for row in sh["rows"]:
            lines.append(f"| {row['variant']} | {row['api_workers']:,} | {row['time_scale']:g} | "
                         f"{row['queue_size'] or 'unbounded'} | "
                         f"{row['files']:,} | {_ms(row['shutdown_tail_s'])} | {_ms(row['pill_s3_s'])} | "
                         f"{_ms(row['pill_api_s'])} | {_ms(row['pill_verify_s'])} |")
        for s in sh.get("sigint", []):
            lines.append(f"\nSIGINT -> exit ({s['variant']}, 100k files at x0.01, queue 100, drain): "
                         f"{_ms(s['exit_after_sigint_s'])} ms, exit codes {s['exit_codes']}")
        lines.append("")
    if "memory" in res:
        lines += ["## Memory: 1,000,000 files at --time-scale 0", "",
                  "| variant | queue size | peak RSS MiB | wall s | CPU user + sys s | voluntary switches |",
                  "|---|---|---|---|---|---|"]
        for row in res["memory"]["rows"]:
            if "error" in row:
                lines.append(f"| {row['variant']} | {row['queue_size'] or 'unbounded'} | {row['error']} | | | |")
                continue
            lines.append(f"| {row['variant']} | {row['queue_size'] or 'unbounded'} | {row['rss_peak_mib']:.1f} | "
                         f"{row['wall_s']:.1f} | {row['cpu_user_s']:.1f} + {row['cpu_sys_s']:.1f} | "
                         f"{row['voluntary_switches']:,} |")
        lines.append("")
    if "strategies" in res:
        lines.append(strategies_.summary_md(res["strategies"]))
    return "\n".join(lines)


def make_plots(res: dict[str, Any], out: Path) -> list[Path]:
    written: list[Path] = []
    if "scaling" in res:
        sv = res["scaling"]["variants"]

        def series(key: str, scale: float = 1.0, busy: bool = False) -> dict[str, list[tuple]]:
            s: dict[str, list[tuple]] = {}
            for v, data in sv.items():
                pts = []
                for p in data["points"]:
                    val = p.get(key)
                    if isinstance(val, dict):
                        pts.append((p["workers"], val["median"] * scale, val["min"] * scale, val["max"] * scale))
                    elif val is not None:
                        pts.append((p["workers"], val * scale, val * scale, val * scale))
                s[v] = pts
            return s

        written.append(plots.line_plot(series("files_per_s"), "API workers", "files/s",
                                       "Throughput vs workers (API 20-40 ms, S3 0 ms, 2 files per worker)",
                                       out / "files-per-s-vs-workers.png", logy=True))
        written.append(plots.line_plot(series("rss_extra_mib"), "API workers", "extra peak RSS (MiB)",
                                       "Memory vs workers (idle workers: RSS added by the run)",
                                       out / "memory-vs-workers.png", logy=True))
        s = {f"{v} stop": pts for v, pts in series("stop_s", 1e3).items()}
        s.update({f"{v} start-up": pts for v, pts in series("startup_s", 1e3).items()})
        written.append(plots.line_plot(s, "API workers", "ms", "Start-up and shutdown time vs workers "
                                       "(first pill -> last exit)", out / "shutdown-vs-workers.png", logy=True))
    if "latency" in res:
        s = {}
        for v in VARIANTS:
            for key, label in (("efficiency", v), ("efficiency_calibrated", f"{v} vs calibrated ideal")):
                s[label] = [(p["time_scale"], p[v][key]["median"], p[v][key]["min"], p[v][key]["max"])
                            for p in res["latency"]["points"] if p[v][key]]
        written.append(plots.line_plot(s, "latency scale (x tutorial latencies: 1 = S3 0.2-0.5 s, API 1-2 s)",
                                       "efficiency (ideal / measured makespan)", "Efficiency vs latency scale",
                                       out / "efficiency-vs-latency.png", hlines={"0.97": 0.97}))
    if "strategies" in res:
        made = strategies_.plot(res["strategies"], out / "strategies.png")
        if made:
            written.append(made)
    return written


# The command -----------------------------------------------------------------------------------
def main(argv: Sequence[str], prog: str = "python -m benchmarks") -> int:
    p = argparse.ArgumentParser(prog=prog, description="The benchmark scenarios; every "
                                "measurement in a fresh process.  See also: python -m benchmarks compare.")
    p.add_argument("--quick", action="store_true", help="a reduced set, under a minute (CI smoke test)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default %(default)s)")
    p.add_argument("--only", nargs="+", choices=SCENARIOS, help="run only these scenarios")
    p.add_argument("--python", action="append", metavar="PATH", dest="pythons",
                   help="run the probes under this interpreter (default: this one). Repeatable: the first runs "
                        "every scenario; the strategies scenario also runs its headline cells under each one, "
                        "and queue-shutdown under the first 3.13+. Each one's version is recorded.")
    ns = p.parse_args(list(argv))
    plan = Plan.make(ns.quick)
    chosen = [s for s in SCENARIOS if (ns.only is None or s in ns.only) and not (s == "memory" and plan.quick)]
    pythons: list[str | None] = list(ns.pythons or [None])
    try:
        env = environment(pythons)
    except ProbeFailed as exc:
        p.error(f"--python: {exc.reason}")
    total = _count(plan, chosen, len(pythons))
    runner = Runner(total, show=sys.stdout.isatty(), python=pythons[0])
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    started = time.perf_counter()
    res: dict[str, Any] = {"environment": env, "quick": plan.quick, "scenarios": chosen}
    steps: dict[str, Callable[[], Any]] = {
        "overhead": lambda: overhead(runner, plan),
        "latency": lambda: latency(runner, plan, {v: timer_model(v, pythons[0]) for v in VARIANTS}),
        "scaling": lambda: scaling(runner, plan),
        "shutdown": lambda: shutdown(runner, plan),
        "memory": lambda: memory(runner, plan),
        "strategies": lambda: strategies(runner, plan, env["interpreters"]),
    }
    with runner.progress if runner.progress.disable is False else nullcontext():
        for name in chosen:
            res[name] = steps[name]()
    res["elapsed_s"] = time.perf_counter() - started
    res["targets"] = targets(res)
    ns.out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks" + (" --quick" if plan.quick else "") + (f" --only {' '.join(ns.only)}" if ns.only else "") \
        + "".join(f" --python {py}" for py in ns.pythons or [])
    (ns.out / "results.json").write_text(json.dumps(res, indent=2))
    (ns.out / "summary.md").write_text(summary_md(res, command))
    written = make_plots(res, ns.out)
    err.print(f"wrote {ns.out / 'results.json'}, {ns.out / 'summary.md'}, " + ", ".join(str(w) for w in written))
    for t in res["targets"]:
        mark = "[green]met[/green]" if t["met"] else "[red]MISSED[/red]"
        err.print(f"  {mark} {t['target']}: {t['measured']}")
    return 0


def _count(plan: Plan, chosen: list[str], pythons: int = 1) -> int:
    """How many probes the plan runs (for the progress bar)."""
    n = 0
    if "overhead" in chosen:
        n += 5 * (plan.overhead_repeats + plan.warmup)
    if "latency" in chosen:
        n += sum(2 * (rep + (plan.warmup if s <= 0.01 else 0)) for s, _, rep in plan.latency_points)
    if "scaling" in chosen:
        for workers in (plan.asyncio_workers, plan.thread_workers):
            n += sum((plan.scaling_repeats if w <= 10_000 else 1) + (w <= plan.busy_max_workers) for w in workers)
    if "shutdown" in chosen:
        n += (len(plan.shutdown_workers) + 1) * 2 * 2 * plan.shutdown_repeats
    if "memory" in chosen:
        n += 4
    if "strategies" in chosen:
        n += strategies_.count(plan.quick, pythons)
    return n
