"""Overhead: the per-file cost of each model at zero latency, against what it cannot go below.

The limit for a model is its bare chain (``benchmarks/bare.py``: the same queues and workers
passing plain integers) plus the sequential run of the stage logic; the target is a cost within
1.25 x that limit, at every queue size alike.  The threaded variant is measured one record at a
time (the tutorial's hand-offs, the default) and with ``--batch`` (``docs/performance.md``): its
cost follows its voluntary context switches, so they are reported per file.  anyio is measured
against asyncio (the same event loop under it), next to its own bare chain.  Every kind runs once
per round, rounds interleaved, each run a fresh process.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import units
from ..harness import MEASURED, med, summ
from ..scenario import Bench, Scenario, Target, table

MIB = 1024
LIMIT = 1.25  # cost per file over (bare chain + sequential)
ANYIO_OVER_ASYNCIO = 1.5  # anyio's cost per file over asyncio's
BARE = {"threaded": "bare-threaded", "asyncio": "bare-asyncio", "anyio": "bare-anyio-nowait"}


@dataclass(frozen=True, kw_only=True)
class Plan:
    files: int
    repeats: int  # interleaved rounds
    warmup: int  # rounds thrown away first
    queue_sizes: tuple[int, ...] = (10, 100, 1000)
    batch: int = 16

    def cells(self) -> list[tuple[str, str, list[Any]]]:
        """(label, probe kind, extra flags) for one round: the sequential run once, then per queue
        size each bare chain, each model, and the threaded model with --batch."""
        out: list[tuple[str, str, list[Any]]] = [("sequential", "sequential", [])]
        for q in self.queue_sizes:
            size = ["--queue-size", q]
            out += [(f"{bare} q{q}", bare, size) for bare in BARE.values()]
            out += [(f"threaded q{q}", "threaded", size), (f"threaded --batch {self.batch} q{q}", "threaded",
                                                            [*size, "--batch", self.batch]),
                    (f"asyncio q{q}", "asyncio", size), (f"anyio q{q}", "anyio", size)]
        return out


class Overhead(Scenario):
    name = "overhead"
    title = "zero latency: cost per file and switches per file vs the bare chain + the sequential run, per queue size"
    full = Plan(files=100_000, repeats=3, warmup=1)
    quick = Plan(files=5_000, repeats=1, warmup=0, queue_sizes=(100,))

    def count(self, plan: Plan, bench: Bench) -> int:
        return len(plan.cells()) * (plan.repeats + plan.warmup)

    def run(self, bench: Bench, plan: Plan) -> dict[str, Any]:
        base = ["--files", plan.files, "--time-scale", 0, "--quiet"]
        raw: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in plan.cells()}
        for r in range(plan.warmup + plan.repeats):
            for label, kind, flags in plan.cells():
                x = bench.probe(f"overhead {label} ({'warm-up' if r < plan.warmup else r - plan.warmup + 1})",
                                kind, [*base, *flags])
                if r >= plan.warmup:
                    raw[label].append(x)
        cells = {label: _stats(xs) for label, xs in raw.items()}
        sequential = med(cells["sequential"]["us_per_file"])
        for q in plan.queue_sizes:
            for model in ("threaded", f"threaded --batch {plan.batch}", "asyncio", "anyio"):
                cell = cells[f"{model} q{q}"]
                limit = med(cells[f"{BARE[model.split()[0]]} q{q}"]["us_per_file"]) + sequential
                cell["limit_us_per_file"] = limit
                cell["overhead_ratio"] = med(cell["us_per_file"]) / limit
            cells[f"anyio q{q}"]["over_asyncio"] = (med(cells[f"anyio q{q}"]["us_per_file"])
                                                   / med(cells[f"asyncio q{q}"]["us_per_file"]))
        return {"files": plan.files, "queue_sizes": list(plan.queue_sizes), "batch": plan.batch,
                "rounds": plan.repeats, "cells": cells}

    def targets(self, result: dict[str, Any]) -> list[Target]:
        if "runs" in result:
            return _legacy_targets(result)
        cells, out = result["cells"], []
        for q in result["queue_sizes"]:
            for model in (f"threaded --batch {result['batch']}", "asyncio"):
                cell = cells[f"{model} q{q}"]
                out.append(Target(f"overhead {model}, queue {q}: cost/file <= {LIMIT} x (bare chain + sequential)",
                                  f"{units.us(cell['us_per_file'], spread=False)} us vs "
                                  f"{units.us(cell['limit_us_per_file'])} us: {units.factor(cell['overhead_ratio'])}; "
                                  f"{units.ratio(cell['switches_per_file'], spread=False)} switches/file",
                                  cell["overhead_ratio"] <= LIMIT))
            one = cells[f"threaded q{q}"]
            out.append(Target(f"overhead threaded one at a time (the default), queue {q} (reported, not judged)",
                              f"{units.factor(one['overhead_ratio'])}; "
                              f"{units.ratio(one['switches_per_file'], spread=False)} switches/file", None))
            anyio = cells[f"anyio q{q}"]
            out.append(Target(f"anyio, queue {q}: cost/file <= {ANYIO_OVER_ASYNCIO} x asyncio's",
                              f"{units.us(anyio['us_per_file'], spread=False)} us vs "
                              f"{units.us(cells[f'asyncio q{q}']['us_per_file'], spread=False)} us: "
                              f"{units.factor(anyio['over_asyncio'])}", anyio["over_asyncio"] <= ANYIO_OVER_ASYNCIO))
        sequential = med(cells["sequential"]["us_per_file"])
        out.append(Target("per-file work cheap (a few us): sequential cost/file <= 5 us", f"{units.us(sequential)} us",
                          sequential <= 5))
        return out

    def summary(self, result: dict[str, Any]) -> str:
        if "runs" in result:
            return _legacy_summary(result)
        rows = [[label, units.rate(x["files_per_s"]), units.us(x["us_per_file"]), units.us(x["cpu_us_per_file"]),
                 units.ratio(x["switches_per_file"]), units.factor(x.get("overhead_ratio"), spread=False)
                 if "overhead_ratio" in x else "", units.factor(x.get("over_asyncio"), spread=False)
                 if "over_asyncio" in x else ""] for label, x in result["cells"].items()]
        sizes = ", ".join(str(q) for q in result["queue_sizes"])
        return "\n".join([f"## Overhead: {result['files']:,} files at --time-scale 0, --queue-size {sizes}", "",
                          f"{result['rounds']} interleaved rounds of fresh processes; medians (min-max).  Limit = the "
                          "model's bare chain at that queue size + the sequential run.", "",
                          *table(["run", "files/s", "us/file", "CPU us/file", "voluntary switches/file",
                                  "overhead vs (bare + sequential)", "anyio / asyncio"], rows), ""])


def _stats(runs: list[dict[str, Any]]) -> dict[str, Any]:
    files = runs[0]["files"]
    return {
        "files_per_s": summ(x["files"] / x["elapsed_s"] for x in runs),
        "us_per_file": summ(x["elapsed_s"] / x["files"] * 1e6 for x in runs),
        "cpu_us_per_file": summ((x["cpu_user_s"] + x["cpu_sys_s"]) / files * 1e6 for x in runs),
        "cpu_sys_s": summ(x["cpu_sys_s"] for x in runs),
        "switches_per_file": summ(x["voluntary_switches"] / files for x in runs),
        "rss_peak_mib": summ(x["rss_peak_kib"] / MIB for x in runs),
    }


# results.json written before the queue sizes (one queue size, consecutive repeats) --------------
def _legacy_targets(result: dict[str, Any]) -> list[Target]:
    runs = result["runs"]
    out = []
    for v in MEASURED:
        ratio = runs[v]["overhead_ratio"]
        cost, limit = units.us(runs[v]["us_per_file"], spread=False), units.us(runs[v]["limit_us_per_file"])
        out.append(Target(f"overhead {v}: cost/file <= 1.25 x (bare chain + sequential)",
                          f"{cost} us vs {limit} us: {units.factor(ratio)}", ratio <= 1.25))
    sequential = med(runs["sequential"]["us_per_file"])
    out.append(Target("per-file work cheap (a few us): sequential cost/file <= 5 us", f"{units.us(sequential)} us",
                      sequential <= 5))
    return out


def _legacy_summary(result: dict[str, Any]) -> str:
    rows = [[kind, units.rate(x["files_per_s"]), units.us(x["us_per_file"]), units.seconds(x["cpu_s"]),
             units.count(x["voluntary_switches"]), units.factor(x.get("overhead_ratio"), spread=False)
             if "overhead_ratio" in x else ""] for kind, x in result["runs"].items()]
    return "\n".join([f"## Overhead: {result['files']:,} files at --time-scale 0, --queue-size {result['queue_size']}",
                      "", *table(["run", "files/s", "us/file", "CPU s", "voluntary switches",
                                  "overhead vs (bare + sequential)"], rows), ""])


SCENARIO = Overhead()
