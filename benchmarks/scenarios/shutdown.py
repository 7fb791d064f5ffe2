"""Shutdown: the tail (last file verified -> every worker exited) and pill propagation per stage,
at default and many API workers, unbounded and bounded queues; and SIGINT -> exit of a long run.

The workloads: zero latency (CPU-bound), then the tutorial's latencies x0.001 at default workers,
where an unbounded queue is filled by the dispatcher at once and every pill waits behind the backlog.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from pillpipe.variants import MODULES

from .. import units
from ..harness import MEASURED, ROOT, med, summ
from ..metrics import CONSUMERS, metrics
from ..scenario import Bench, Scenario, Target, table

QUEUE_SIZES = (0, 100)  # 0: unbounded
SIGINT_AFTER_S = 1.0


@dataclass(frozen=True, kw_only=True)
class Workload:
    api_workers: int
    time_scale: float
    files: int


@dataclass(frozen=True, kw_only=True)
class Plan:
    workloads: tuple[Workload, ...]
    repeats: int
    sigint_repeats: int


def _workloads(files: int, workers: tuple[int, ...]) -> tuple[Workload, ...]:
    return (*(Workload(api_workers=n, time_scale=0.0, files=files) for n in workers),
            Workload(api_workers=2, time_scale=0.001, files=files // 20))


class Shutdown(Scenario):
    name = "shutdown"
    title = "shutdown tail and pill propagation; SIGINT -> exit"
    full = Plan(workloads=_workloads(20_000, (2, 1_000)), repeats=5, sigint_repeats=3)
    quick = Plan(workloads=_workloads(2_000, (2,)), repeats=1, sigint_repeats=0)

    def count(self, plan: Plan, bench: Bench) -> int:
        return len(MEASURED) * (len(plan.workloads) * len(QUEUE_SIZES) * plan.repeats + plan.sigint_repeats)

    def run(self, bench: Bench, plan: Plan) -> dict[str, Any]:
        rows = []
        for w in plan.workloads:
            for size in QUEUE_SIZES:
                for v in MEASURED:
                    runs = bench.repeat(f"shutdown {v} api={w.api_workers} x{w.time_scale:g} queue={size}", v,
                                        ["--files", w.files, "--time-scale", w.time_scale, "--api-workers",
                                         w.api_workers, "--queue-size", size, "--quiet"], plan.repeats)
                    ms = [metrics(x) for x in runs]
                    row = {"variant": v, "api_workers": w.api_workers, "queue_size": size, "files": w.files,
                           "time_scale": w.time_scale, "shutdown_tail_s": summ(m["shutdown_tail_s"] for m in ms)}
                    row.update({f"pill_{stage}_s": summ(m["pill_propagation_s"][stage] for m in ms)
                                for stage in CONSUMERS})
                    row["wall_s"] = summ(m["wall_s"] for m in ms)
                    rows.append(row)
        out: dict[str, Any] = {"rows": rows, "sigint": []}
        if plan.sigint_repeats:
            for v in MEASURED:
                times = []
                for i in range(plan.sigint_repeats):
                    with bench.step(f"shutdown {v} SIGINT ({i + 1}/{plan.sigint_repeats})"):
                        times.append(sigint_to_exit(v, bench.python))
                done = [t for t in times if t is not None]
                out["sigint"].append({"variant": v, "exit_after_sigint_s": summ(t[0] for t in done),
                                      "exit_codes": sorted({t[1] for t in done}), "hung": len(times) - len(done)})
        return out

    def targets(self, result: dict[str, Any]) -> list[Target]:
        out = []
        for row in result["rows"]:
            if row["api_workers"] == 2 and row["queue_size"] == 0 and row["time_scale"] == 0:
                tail = row["shutdown_tail_s"]
                out.append(Target(f"shutdown tail {row['variant']} at default workers: median < 1 ms",
                                  f"{units.ms(tail, spread=False)} ms", tail is not None and med(tail) < 0.001))
        return out

    def summary(self, result: dict[str, Any]) -> str:
        rows = [[row["variant"], units.count(row["api_workers"]), f"{row['time_scale']:g}",
                 row["queue_size"] or "unbounded", units.count(row["files"]), units.ms(row["shutdown_tail_s"]),
                 *[units.ms(row[f"pill_{stage}_s"]) for stage in CONSUMERS]] for row in result["rows"]]
        lines = ["## Shutdown tail and pill propagation (ms)", "",
                 "Shutdown tail: last file verified -> every worker exited.  Pills: the coordinator starts putting a "
                 "stage's pills -> the stage's last worker takes its pill.", "",
                 *table(["variant", "API workers", "time scale", "queue size", "files", "shutdown tail",
                         *[f"pills {stage}" for stage in CONSUMERS]], rows)]
        for s in result.get("sigint", []):
            hung = f", {s['hung']} did not exit within 60 s" if s.get("hung") else ""
            lines.append(f"\nSIGINT -> exit ({s['variant']}, 100k files at x0.01, queue 100, drain): "
                         f"{units.ms(s['exit_after_sigint_s'])} ms, exit codes {s['exit_codes']}{hung}")
        return "\n".join([*lines, ""])


def sigint_to_exit(variant: str, python: str | None = None) -> tuple[float, int] | None:
    """Start a long run, send SIGINT after a second, time until the process has exited (drain
    included); None when it did not exit within 60 s (then it is killed)."""
    proc = subprocess.Popen([python or sys.executable, "-m", MODULES[variant], "--files", "100000", "--time-scale",
                             "0.01", "--quiet", "--queue-size", "100"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(SIGINT_AFTER_S)
    t = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
    return time.perf_counter() - t, code


SCENARIO = Shutdown()
