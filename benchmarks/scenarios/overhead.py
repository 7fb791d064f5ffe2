"""Overhead: the per-file cost of each model at zero latency, against what it cannot go below.

The limit for a model is its bare chain (``benchmarks/bare.py``: the same queues and workers
passing plain integers) plus the sequential run of the stage logic; the target is a cost within
1.25 x that limit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import units
from ..harness import MEASURED, med, summ
from ..scenario import Bench, Scenario, Target, table

KINDS = ("sequential", *(f"bare-{v}" for v in MEASURED), *MEASURED)
MIB = 1024


@dataclass(frozen=True, kw_only=True)
class Plan:
    files: int
    repeats: int
    warmup: int
    queue_size: int = 1000


class Overhead(Scenario):
    name = "overhead"
    title = "zero latency: cost per file vs the bare chain + the sequential run"
    full = Plan(files=100_000, repeats=3, warmup=1)
    quick = Plan(files=5_000, repeats=1, warmup=0)

    def count(self, plan: Plan, bench: Bench) -> int:
        return len(KINDS) * (plan.repeats + plan.warmup)

    def run(self, bench: Bench, plan: Plan) -> dict[str, Any]:
        flags = ["--files", plan.files, "--time-scale", 0, "--quiet", "--queue-size", plan.queue_size]
        out: dict[str, Any] = {"files": plan.files, "queue_size": plan.queue_size, "runs": {}}
        for kind in KINDS:
            runs = bench.repeat(f"overhead {kind}", kind, flags, plan.repeats, plan.warmup)
            out["runs"][kind] = {
                "files_per_s": summ(x["files"] / x["elapsed_s"] for x in runs),
                "us_per_file": summ(x["elapsed_s"] / x["files"] * 1e6 for x in runs),
                "cpu_s": summ(x["cpu_user_s"] + x["cpu_sys_s"] for x in runs),
                "cpu_sys_s": summ(x["cpu_sys_s"] for x in runs),
                "voluntary_switches": summ(x["voluntary_switches"] for x in runs),
                "rss_peak_mib": summ(x["rss_peak_kib"] / MIB for x in runs),
            }
        sequential = med(out["runs"]["sequential"]["us_per_file"])
        for v in MEASURED:
            limit = med(out["runs"][f"bare-{v}"]["us_per_file"]) + sequential
            out["runs"][v]["limit_us_per_file"] = limit
            out["runs"][v]["overhead_ratio"] = med(out["runs"][v]["us_per_file"]) / limit
        return out

    def targets(self, result: dict[str, Any]) -> list[Target]:
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

    def summary(self, result: dict[str, Any]) -> str:
        rows = [[kind, units.rate(x["files_per_s"]), units.us(x["us_per_file"]), units.seconds(x["cpu_s"]),
                 units.count(x["voluntary_switches"]), units.factor(x.get("overhead_ratio"), spread=False)
                 if "overhead_ratio" in x else ""] for kind, x in result["runs"].items()]
        return "\n".join([f"## Overhead: {result['files']:,} files at --time-scale 0, --queue-size {result['queue_size']}",
                          "", *table(["run", "files/s", "us/file", "CPU s", "voluntary switches",
                                      "overhead vs (bare + sequential)"], rows), ""])


SCENARIO = Overhead()
