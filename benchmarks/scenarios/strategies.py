"""Strategies: every model x termination strategy x event loop on the same workloads.

Cells (``cells()``): threaded with every ``--shutdown`` strategy but ``cancel``; asyncio with all
of them, on each ``--loop``; anyio (no pills: closing the last send clone ends a stream) on each
``--backend``.  ``queue-shutdown`` needs Python 3.13: it runs under the first ``--python``
interpreter that is 3.13+ (else it is recorded as skipped).

Per cell:
- throughput: files/s at ``--time-scale 0`` (fresh process each, median over repeats), at the
  default workers and at many API workers;
- shutdown tail (last file verified -> every worker exited) and stream-end propagation per stage
  (``metrics.stream_end``);
- a worker dying mid-run (``--fault``), run through the real command line with a timeout: exit
  code, whether it hung, files lost (expected minus the sum of terminal states), the counts.

Plus ``interpreters``: a few headline cells under every ``--python`` given, side by side.  Each
strategy's size in lines of code is counted by hand in ``benchmarks/results/README.md``.
"""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pillpipe.common.config import BACKENDS, LOOPS
from pillpipe.common.shutdown import STRATEGIES
from pillpipe.variants import MODULES

from .. import units
from ..harness import ROOT, ProbeFailed, _env, summ
from ..metrics import CONSUMERS, metrics, stream_end
from ..scenario import Bench, Scenario, table

TERMINAL = ("success", "failed", "cancelled", "aborted", "invalid", "duplicate")
FAULTS = ("api:worker=1:after=2:die", "s3:worker=*:after=3:die")


@dataclass(frozen=True)
class Cell:
    model: str      # threaded | asyncio | anyio
    strategy: str   # one of STRATEGIES, or close (anyio)
    loop: str       # threading | one of LOOPS (asyncio) | one of BACKENDS (anyio)

    @property
    def label(self) -> str:
        return f"{self.model}/{self.loop}/{self.strategy}" if self.model != "threaded" else f"threaded/{self.strategy}"

    @property
    def needs_313(self) -> bool:
        return self.strategy == "queue-shutdown"

    def flags(self) -> list[str]:
        if self.model == "anyio":
            return ["--backend", self.loop]
        out = ["--shutdown", self.strategy]
        if self.model == "asyncio":
            out += ["--loop", self.loop]
        return out


def cells() -> list[Cell]:
    """Every supported model x strategy x loop."""
    out = [Cell("threaded", s, "threading") for s in STRATEGIES if s != "cancel"]
    out += [Cell("asyncio", s, loop) for loop in LOOPS for s in STRATEGIES]
    return out + [Cell("anyio", "close", backend) for backend in BACKENDS]


@dataclass(frozen=True, kw_only=True)
class Plan:
    files: int
    queue_size: int
    workers: tuple[int, ...]      # API workers
    repeats: int
    fault_files: int
    fault_repeats: int
    fault_timeout: float
    faults: tuple[str, ...]
    only: tuple[str, ...] | None  # cell labels (None: every cell)
    interpreter_cells: tuple[str, ...]

    def cells(self) -> list[Cell]:
        return [c for c in cells() if self.only is None or c.label in self.only]


def _pick_python(cell: Cell, interpreters: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The interpreter a cell runs under: the first one given (the primary), or for queue-shutdown
    the first 3.13+ one; None when none fits (or it lacks the cell's library)."""
    choices = [i for i in interpreters if i["queue_shutdown"]] if cell.needs_313 else interpreters[:1]
    return next((info for info in choices if _has_libraries(cell, info)), None)


def _has_libraries(cell: Cell, info: dict[str, Any]) -> bool:
    libs = info.get("libraries") or {}
    return (cell.model != "anyio" or bool(libs.get("anyio"))) and \
        (cell.loop not in ("uvloop", "trio") or bool(libs.get(cell.loop)))


def _runs_under(cell: Cell, info: dict[str, Any]) -> bool:
    """Whether an interpreter can run the cell (the side-by-side table)."""
    return (not cell.needs_313 or info["queue_shutdown"]) and _has_libraries(cell, info)


def _side_by_side(plan: Plan, interpreters: list[dict[str, Any]]) -> list[tuple[Cell, dict[str, Any]]]:
    by_label = {c.label: c for c in cells()}
    return [(by_label[label], info) for label in plan.interpreter_cells for info in interpreters]


class Strategies(Scenario):
    name = "strategies"
    title = "every model x termination strategy x loop: files/s, shutdown tail, stream end, worker deaths"
    full = Plan(files=20_000, queue_size=100, workers=(2, 1_000), repeats=3, fault_files=2_000, fault_repeats=2,
                fault_timeout=30, faults=FAULTS, only=None,
                interpreter_cells=("threaded/pills", "asyncio/asyncio/pills", "asyncio/uvloop/pills",
                                   "anyio/asyncio/close", "anyio/trio/close", "threaded/queue-shutdown",
                                   "asyncio/asyncio/queue-shutdown"))
    quick = Plan(files=300, queue_size=100, workers=(2,), repeats=1, fault_files=100, fault_repeats=1, fault_timeout=60,
                 faults=FAULTS[:1], only=("threaded/pills", "asyncio/asyncio/last-out"), interpreter_cells=())

    def count(self, plan: Plan, bench: Bench) -> int:
        per_cell = len(plan.workers) * plan.repeats + len(plan.faults) * plan.fault_repeats
        cells_run = sum(_pick_python(cell, bench.interpreters) is not None for cell in plan.cells())
        side = sum(_runs_under(cell, info) for cell, info in _side_by_side(plan, bench.interpreters))
        return cells_run * per_cell + side * plan.repeats

    def run(self, bench: Bench, plan: Plan) -> dict[str, Any]:
        out: dict[str, Any] = {"plan": asdict(plan), "cells": [], "interpreters": []}
        for cell in plan.cells():
            row: dict[str, Any] = {"label": cell.label, "model": cell.model, "strategy": cell.strategy,
                                   "loop": cell.loop}
            info = _pick_python(cell, bench.interpreters)
            if info is None:
                row["skipped"] = ("needs Python 3.13+ (give --python PATH to a 3.13 interpreter)" if cell.needs_313
                                  else f"the interpreter lacks {cell.loop if cell.loop in ('uvloop', 'trio') else 'anyio'}")
                out["cells"].append(row)
                continue
            row["python"] = info["python"]
            row["throughput"] = []
            for workers in plan.workers:
                try:
                    row["throughput"].append(throughput(bench, cell, info["path"], plan, workers))
                except ProbeFailed as exc:
                    row["throughput"].append({"api_workers": workers, "error": exc.reason})
            row["faults"] = []
            for fault in plan.faults:
                for i in range(plan.fault_repeats):
                    with bench.step(f"strategies {cell.label} {fault} ({i + 1}/{plan.fault_repeats})"):
                        row["faults"].append(fault_run(cell, info["path"], fault, plan))
            out["cells"].append(row)
        for cell, info in _side_by_side(plan, bench.interpreters):
            entry: dict[str, Any] = {"label": cell.label, "python": info["python"]}
            if not _runs_under(cell, info):
                entry["skipped"] = "not available on this interpreter"
            else:
                try:
                    entry.update(throughput(bench, cell, info["path"], plan, plan.workers[0]))
                except ProbeFailed as exc:
                    entry["error"] = exc.reason
            out["interpreters"].append(entry)
        return out

    def summary(self, result: dict[str, Any]) -> str:
        plan = result["plan"]
        rows = []
        for c in result["cells"]:
            if "skipped" in c:
                rows.append([c["label"], "-", "-", f"skipped: {c['skipped']}", "", "", "", "", ""])
                continue
            for t in c["throughput"]:
                if "error" in t:
                    rows.append([c["label"], c["python"], units.count(t["api_workers"]), f"error: {t['error']}",
                                 "", "", "", "", ""])
                    continue
                rows.append([c["label"], c["python"], units.count(t["api_workers"]), units.rate(t["files_per_s"]),
                             units.ms(t["shutdown_tail_s"], False),
                             *[units.ms(t[f"end_{stage}_s"], False) for stage in CONSUMERS],
                             units.ms(t["handover_api_s"], False)])
        lines = ["## Termination strategies: every model x strategy x loop", "",
                 f"{plan['files']:,} files at --time-scale 0, --queue-size {plan['queue_size']}, {plan['repeats']} "
                 "fresh processes per point (median, min-max). Tail: last file verified -> every worker exited. End "
                 "s3/api/verify: the stream starting to end (pills put, queue shut down, or the last clone closed) -> "
                 "the stage's last consumer exited. Handover api: the last S3 worker exited -> the last API worker "
                 "exited (comparable across strategies). Times in ms.", "",
                 *table(["cell", "python", "API workers", "files/s", "tail", *[f"end {s}" for s in CONSUMERS],
                         "handover api"], rows)]
        faults = list(dict.fromkeys(f["fault"] for c in result["cells"] for f in c.get("faults", [])))
        if faults:
            lines += ["", f"### A worker dies mid-run ({plan['fault_files']:,} files, time-scale 0, queue "
                          f"{plan['queue_size']}; {plan['fault_repeats']} runs each via the command line, "
                          f"killed after {plan['fault_timeout']:g} s = hung; lost = expected - sum of terminal states)",
                      "", *table(["cell", *[f"`{f}`" for f in faults]],
                                 [[c["label"], *[fault_text([r for r in c["faults"] if r["fault"] == f]) for f in faults]]
                                  for c in result["cells"] if "faults" in c])]
        if result["interpreters"]:
            rows = [[e["label"], e["python"], e.get("skipped") or e.get("error"), "", ""]
                    if "skipped" in e or "error" in e else
                    [e["label"], e["python"], units.rate(e["files_per_s"]), units.ms(e["shutdown_tail_s"], False),
                     units.ms(e["end_api_s"], False)] for e in result["interpreters"]]
            lines += ["", "### Interpreters side by side (default workers; files/s, tail ms)", "",
                      *table(["cell", "python", "files/s", "tail", "end api"], rows)]
        return "\n".join([*lines, ""])

    def plots(self, result: dict[str, Any], out: Path) -> list[Path]:
        from .. import plots

        made = plots.strategies(result, out / "strategies.png")
        return [made] if made else []


def throughput(bench: Bench, cell: Cell, python: str, plan: Plan, workers: int) -> dict[str, Any]:
    flags = ["--files", plan.files, "--time-scale", 0, "--queue-size", plan.queue_size, "--api-workers", workers,
             "--quiet", *cell.flags()]
    runs = bench.repeat(f"strategies {cell.label} api={workers}", cell.model, flags, plan.repeats, python=python)
    ms = [metrics(x) for x in runs]
    ends = [stream_end(x["report"]["timing"], closes=cell.model == "anyio") for x in runs]
    row: dict[str, Any] = {
        "api_workers": workers, "files": plan.files, "queue_size": plan.queue_size,
        "success": [x["report"]["success"] for x in runs],
        "files_per_s": summ(x["files"] / x["elapsed_s"] for x in runs),
        "wall_s": summ(m["wall_s"] for m in ms),
        "cpu_s": summ(m["cpu_s"] for m in ms),
        "rss_peak_mib": summ(m["rss_peak_mib"] for m in ms),
        "shutdown_tail_s": summ(m["shutdown_tail_s"] for m in ms),
    }
    for stage in CONSUMERS:
        row[f"end_{stage}_s"] = summ(e[stage]["end_to_exit_s"] for e in ends)
        row[f"handover_{stage}_s"] = summ(e[stage]["handover_s"] for e in ends)
        row[f"pill_arrival_{stage}_s"] = summ(m["pill_propagation_s"][stage] for m in ms)
    return row


def fault_run(cell: Cell, python: str, fault: str, plan: Plan) -> dict[str, Any]:
    """The real command line with ``--fault``; a hang is a finding (killed after the timeout)."""
    cmd = [python, "-m", MODULES[cell.model], "--files", str(plan.fault_files), "--time-scale", "0",
           "--queue-size", str(plan.queue_size), "--quiet", "--json", "--fault", fault, *cell.flags()]
    t = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=plan.fault_timeout, env=_env())
    except subprocess.TimeoutExpired:
        return {"fault": fault, "hung": True, "exit_code": None, "seconds": plan.fault_timeout, "lost": None}
    out: dict[str, Any] = {"fault": fault, "hung": False, "exit_code": done.returncode,
                           "seconds": time.perf_counter() - t}
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        out.update({"lost": None, "error": (done.stderr.strip().splitlines() or ["no output"])[-1][:300]})
        return out
    counts = {k: report.get(k, 0) for k in ("expected", "processed", *TERMINAL)}
    out["counts"] = counts
    out["lost"] = counts["expected"] - sum(counts[k] for k in TERMINAL)
    out["stopped_by"] = report.get("stopped_by")
    return out


def fault_text(runs: list[dict[str, Any]]) -> str:
    """One cell's fault runs for one fault, in a few words."""
    if not runs:
        return "-"
    hung = sum(r["hung"] for r in runs)
    if hung:
        return f"HUNG {hung}/{len(runs)}"
    broken = [r for r in runs if r.get("error")]
    if broken:  # no report at all: every file's outcome is unreported
        codes = sorted({r["exit_code"] for r in broken})
        return (f"NO REPORT {len(broken)}/{len(runs)}: exit {','.join(map(str, codes))}, traceback "
                f"`{broken[0]['error']}`")
    codes = sorted({r["exit_code"] for r in runs})
    lost = sorted({r["lost"] for r in runs}, key=lambda x: (x is None, x))
    c = runs[0].get("counts") or {}
    what = f"exit {','.join(map(str, codes))}, lost {','.join('?' if x is None else str(x) for x in lost)}"
    if c:
        what += f"; {c['success']} ok/{c['failed']} failed/{c['cancelled']} cancelled"
    return what


SCENARIO = Strategies()
