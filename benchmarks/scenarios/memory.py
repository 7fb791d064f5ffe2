"""Memory: peak RSS for a million files at zero latency, bounded vs unbounded queues (not in --quick)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import units
from ..harness import MEASURED, ProbeFailed
from ..scenario import Bench, Scenario, Target, table

MIB = 1024
QUEUE_SIZES = (1000, 0)  # 0: unbounded
LIMIT_MIB = 64


@dataclass(frozen=True, kw_only=True)
class Plan:
    files: int


class Memory(Scenario):
    name = "memory"
    title = "peak RSS for a million files, bounded vs unbounded queues (not in --quick)"
    full = Plan(files=1_000_000)
    quick = None

    def count(self, plan: Plan, bench: Bench) -> int:
        return len(QUEUE_SIZES) * len(MEASURED)

    def run(self, bench: Bench, plan: Plan) -> dict[str, Any]:
        rows = []
        for size in QUEUE_SIZES:
            for v in MEASURED:
                try:
                    x = bench.probe(f"memory {v} queue={size}", v, ["--files", plan.files, "--time-scale", 0,
                                                                   "--queue-size", size, "--quiet"], timeout=1800)
                except ProbeFailed as exc:
                    rows.append({"variant": v, "queue_size": size, "error": exc.reason})
                    continue
                rows.append({"variant": v, "queue_size": size, "files": plan.files,
                             "rss_peak_mib": x["rss_peak_kib"] / MIB, "wall_s": x["elapsed_s"],
                             "cpu_user_s": x["cpu_user_s"], "cpu_sys_s": x["cpu_sys_s"],
                             "voluntary_switches": x["voluntary_switches"], "success": x["report"]["success"]})
        return {"rows": rows}

    def targets(self, result: dict[str, Any]) -> list[Target]:
        return [Target(f"{units.count(row.get('files'))} files, bounded queues, {row['variant']}: peak RSS < "
                       f"{LIMIT_MIB} MiB",
                       row.get("error") or f"{units.mib(row['rss_peak_mib'])} MiB ({units.seconds(row['wall_s'])} s)",
                       "rss_peak_mib" in row and row["rss_peak_mib"] < LIMIT_MIB)
                for row in result["rows"] if row["queue_size"] > 0]

    def summary(self, result: dict[str, Any]) -> str:
        rows = []
        for row in result["rows"]:
            size = row["queue_size"] or "unbounded"
            if "error" in row:
                rows.append([row["variant"], size, row["error"], "", "", ""])
            else:
                rows.append([row["variant"], size, units.mib(row["rss_peak_mib"]), units.seconds(row["wall_s"]),
                             f"{units.seconds(row['cpu_user_s'])} + {units.seconds(row['cpu_sys_s'])}",
                             units.count(row["voluntary_switches"])])
        return "\n".join(["## Memory: 1,000,000 files at --time-scale 0", "",
                          *table(["variant", "queue size", "peak RSS MiB", "wall s", "CPU user + sys s",
                                  "voluntary switches"], rows), ""])


SCENARIO = Memory()
