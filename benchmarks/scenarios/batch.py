"""Batch: what ``--batch N`` buys and what it costs, per model (docs/performance.md).

Two workloads, each batch size of each model in interleaved rounds of fresh processes: zero
latency (cost and CPU per file, voluntary switches per file: what batching saves; each file's
latency from its copy starting to its verification, p50/p95: what holding records back costs) and
the tutorial's latencies x0.001 (efficiency against the simulated ideal, and the same latencies).
Both report the shutdown tail (last file verified -> every worker exited) and how long the API
stage's pills took to reach its last worker: a batch in a worker's hands must be worked before
its pill is read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pillpipe.common.config import Config
from pillpipe.common.simulate import simulate
from pillpipe.variants import CONCURRENT

from .. import units
from ..harness import summ
from ..metrics import metrics
from ..scenario import Bench, Scenario, Target, table

MODELS = CONCURRENT


@dataclass(frozen=True, kw_only=True)
class Plan:
    batches: tuple[int, ...]
    files: int  # at zero latency
    latency_files: int
    time_scale: float
    queue_size: int
    rounds: int

    def cells(self) -> list[tuple[str, int]]:
        return [(model, batch) for model in MODELS for batch in self.batches]


class Batch(Scenario):
    name = "batch"
    title = "--batch N: cost, switches, file latency, efficiency and shutdown per batch size and model"
    full = Plan(batches=(1, 4, 16, 64), files=50_000, latency_files=1000, time_scale=0.001, queue_size=100, rounds=3)
    quick = None

    def count(self, plan: Plan, bench: Bench) -> int:
        return 2 * plan.rounds * len(plan.cells())

    def run(self, bench: Bench, plan: Plan) -> dict[str, Any]:
        return {"queue_size": plan.queue_size, "rounds": plan.rounds, "batches": list(plan.batches),
                "zero": self._workload(bench, plan, plan.files, 0.0),
                "latency": self._workload(bench, plan, plan.latency_files, plan.time_scale)}

    def _workload(self, bench: Bench, plan: Plan, files: int, time_scale: float) -> dict[str, Any]:
        flags = ["--files", files, "--time-scale", time_scale, "--queue-size", plan.queue_size, "--quiet", "--trace"]
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {cell: [] for cell in plan.cells()}
        for r in range(plan.rounds):
            for model, batch in plan.cells():
                runs[(model, batch)].append(bench.probe(f"batch x{time_scale:g} {model} --batch {batch} "
                                                        f"({r + 1}/{plan.rounds})", model,
                                                        [*flags, "--batch", batch]))
        ideal = simulate(Config(files=files, time_scale=time_scale, queue_size=plan.queue_size, quiet=True))
        rows = []
        for (model, batch), xs in runs.items():
            ms = [metrics(x, ideal if time_scale else None) for x in xs]
            rows.append({"model": model, "batch": batch,
                         "us_per_file": summ(x["elapsed_s"] / files * 1e6 for x in xs),
                         "cpu_us_per_file": summ((x["cpu_user_s"] + x["cpu_sys_s"]) / files * 1e6 for x in xs),
                         "switches_per_file": summ(x["voluntary_switches"] / files for x in xs),
                         "latency_p50_s": summ(m["latency_p50_s"] for m in ms),
                         "latency_p95_s": summ(m["latency_p95_s"] for m in ms),
                         "efficiency": summ(m.get("efficiency") for m in ms),
                         "shutdown_tail_s": summ(m["shutdown_tail_s"] for m in ms),
                         "pills_api_s": summ(m["pill_propagation_s"]["api"] for m in ms),
                         "success": min(x["report"]["success"] for x in xs)})
        return {"files": files, "time_scale": time_scale, "rows": rows}

    def targets(self, result: dict[str, Any]) -> list[Target]:
        return [Target(f"--batch, x{w['time_scale']:g}: every file succeeds at every batch size in every model",
                       f"{sum(r['success'] == w['files'] for r in w['rows'])} of {len(w['rows'])} cells",
                       all(r["success"] == w["files"] for r in w["rows"]))
                for w in (result["zero"], result["latency"])]

    def summary(self, result: dict[str, Any]) -> str:
        zero, lat = result["zero"], result["latency"]
        by_cell = {(r["model"], r["batch"]): r for r in lat["rows"]}
        rows = []
        for z in zero["rows"]:
            w = by_cell[(z["model"], z["batch"])]
            rows.append([z["model"], z["batch"], units.us(z["us_per_file"]), units.us(z["cpu_us_per_file"]),
                         units.ratio(z["switches_per_file"]), units.ms(z["latency_p50_s"]), units.ms(z["latency_p95_s"]),
                         units.ms(z["shutdown_tail_s"]), units.ratio(w["efficiency"]), units.ms(w["latency_p95_s"]),
                         units.ms(w["shutdown_tail_s"]), units.ms(w["pills_api_s"])])
        scale = f"x{lat['time_scale']:g}"
        return "\n".join([
            f"## --batch N: what it buys and what it costs (queue size {result['queue_size']}, {result['rounds']} "
            "interleaved rounds)", "",
            f"Zero latency: {zero['files']:,} files; latencies {scale}: {lat['files']:,} files.  File latency: its copy "
            "starting -> its verification (ms).  Tail: last file verified -> every worker exited (ms).  Pills api: "
            "the first API pill put -> the last API worker took its own (ms).", "",
            *table(["model", "batch", "us/file (0)", "CPU us/file (0)", "switches/file (0)", "latency p50 (0)",
                    "latency p95 (0)", "tail (0)", f"efficiency ({scale})", f"latency p95 ({scale})",
                    f"tail ({scale})", f"pills api ({scale})"], rows), ""])


SCENARIO = Batch()
