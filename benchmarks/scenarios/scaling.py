"""Worker scaling: API workers from 1 up to where the model stops.

Idle runs (no files) give memory per worker, start-up (until every worker runs) and stop (first
pill to last exit); busy runs (S3 latency 0, API 20-40 ms, 2 files per worker) give files/s.  A
model's series ends at the first worker count it cannot start (threads: ``pid_max``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pillpipe.common.config import Config
from pillpipe.common.simulate import simulate

from .. import metrics as m_, plots, units
from ..harness import MEASURED, ProbeFailed, med, summ
from ..scenario import Bench, Scenario, Target, table

MIB = 1024
BUSY_API_LATENCY = (0.02, 0.04)
ONE_IDLE_RUN_ABOVE = 10_000  # workers: above this, one idle run instead of ``repeats``


@dataclass(frozen=True, kw_only=True)
class Plan:
    workers: dict[str, tuple[int, ...]]  # model -> API worker counts
    repeats: int  # idle runs per point
    busy_max_workers: int  # a busy run only up to this many workers
    busy_files: int | None  # None: max(200, 2 x workers)


class Scaling(Scenario):
    name = "scaling"
    title = "API workers from 1 up: memory, start-up and stop (idle), files/s (busy)"
    full = Plan(workers={"threaded": (1, 10, 100, 1_000, 3_000, 10_000, 30_000, 40_000),
                         "asyncio": (1, 10, 100, 1_000, 10_000, 100_000)},
                repeats=3, busy_max_workers=10_000, busy_files=None)
    quick = Plan(workers={"threaded": (1, 100), "asyncio": (1, 100, 1000)}, repeats=1, busy_max_workers=100,
                 busy_files=40)

    def _idle_runs(self, plan: Plan, n: int) -> int:
        return plan.repeats if n <= ONE_IDLE_RUN_ABOVE else 1

    def count(self, plan: Plan, bench: Bench) -> int:
        return sum(self._idle_runs(plan, n) + (n <= plan.busy_max_workers) for v in MEASURED for n in plan.workers[v])

    def run(self, bench: Bench, plan: Plan) -> dict[str, Any]:
        out: dict[str, Any] = {"busy": {"s3_latency": [0, 0], "api_latency": list(BUSY_API_LATENCY),
                                        "files": plan.busy_files or "max(200, 2 x workers)"}, "variants": {}}
        for v in MEASURED:
            points: list[dict[str, Any]] = []
            stopped: dict[str, Any] | None = None
            for n in plan.workers[v]:
                try:
                    idle = bench.repeat(f"scaling {v} {n} idle", v, ["--files", 0, "--api-workers", n, "--quiet"],
                                        self._idle_runs(plan, n), timeout=300)
                except ProbeFailed as exc:
                    stopped = {"workers": n, "reason": exc.reason}
                    break
                ms = [m_.metrics(x) for x in idle]
                point: dict[str, Any] = {
                    "workers": n,
                    "rss_extra_mib": summ(m["rss_extra_mib"] for m in ms),
                    "rss_peak_mib": summ(m["rss_peak_mib"] for m in ms),
                    "startup_s": summ(m["startup_s"] for m in ms),
                    "stop_s": summ(m_.stop(x["report"]["timing"]) for x in idle),
                    "wall_s": summ(m["wall_s"] for m in ms),
                    "os_threads": ms[0]["os_threads"], "tasks": ms[0]["tasks"],
                }
                if n <= plan.busy_max_workers:
                    point.update(self._busy(bench, plan, v, n))
                points.append(point)
            base = points[0]["rss_extra_mib"]["median"] if points else 0.0
            for p in points:
                if p["workers"] > 1:
                    p["kib_per_worker"] = (p["rss_extra_mib"]["median"] - base) * MIB / (p["workers"] - 1)
            out["variants"][v] = {"points": points, "stopped": stopped}
        return out

    def _busy(self, bench: Bench, plan: Plan, v: str, n: int) -> dict[str, Any]:
        files = plan.busy_files or max(200, 2 * n)
        try:
            busy = bench.probe(f"scaling {v} {n} busy", v, ["--files", files, "--api-workers", n, "--s3-latency", 0, 0,
                                                           "--api-latency", *BUSY_API_LATENCY, "--quiet"])
        except ProbeFailed as exc:
            return {"busy_error": exc.reason}
        config = Config(files=files, api_workers=n, s3_latency=(0, 0), api_latency=BUSY_API_LATENCY, quiet=True)
        m = m_.metrics(busy, simulate(config))
        return {"files": files, "files_per_s": m["files_per_s"], "efficiency": m["efficiency"],
                "shutdown_tail_s": m["shutdown_tail_s"], "busy_rss_peak_mib": m["rss_peak_mib"]}

    def targets(self, result: dict[str, Any]) -> list[Target]:
        out = []
        variants = result["variants"]
        a = {p["workers"]: p for p in variants["asyncio"]["points"]}
        if 10_000 in a:
            p = a[10_000]
            extra = med(p["rss_extra_mib"]) - med(a[1]["rss_extra_mib"])
            out += [Target("10,000 asyncio API workers: < 20 MiB extra RSS", f"{units.mib(extra)} MiB", extra < 20),
                    Target("10,000 asyncio API workers: started within 100 ms", f"{units.ms(p['startup_s'], False)} ms",
                           p["startup_s"] is not None and med(p["startup_s"]) < 0.1),
                    Target("10,000 asyncio API workers: stopped within 100 ms", f"{units.ms(p['stop_s'], False)} ms",
                           p["stop_s"] is not None and med(p["stop_s"]) < 0.1)]
        t = {p["workers"]: p for p in variants["threaded"]["points"]}
        if 1_000 in t:
            p = t[1_000]
            out.append(Target("1,000 threads started and stopped (cost reported, not judged)",
                              f"start {units.ms(p['startup_s'], False)} ms, stop {units.ms(p['stop_s'], False)} ms, "
                              f"{units.kib(p.get('kib_per_worker'))} KiB/thread", None))
        return out

    def summary(self, result: dict[str, Any]) -> str:
        rows = []
        for v, data in result["variants"].items():
            for p in data["points"]:
                rows.append([v, units.count(p["workers"]), units.mib(p["rss_extra_mib"]),
                             units.kib(p.get("kib_per_worker")), units.ms(p["startup_s"]), units.ms(p["stop_s"]),
                             units.rate(p.get("files_per_s")) if p.get("files_per_s") else p.get("busy_error", "-"),
                             units.ratio(p.get("efficiency"))])
            if data["stopped"]:
                rows.append([v, units.count(data["stopped"]["workers"]), f"stopped: {data['stopped']['reason']}",
                             "", "", "", "", ""])
        busy = result["busy"]
        return "\n".join([
            "## Worker scaling (API workers)", "",
            "Idle runs (no files) give memory, start-up (until every worker runs) and stop (first pill to last exit); "
            f"busy runs ({busy['files']} files, S3 latency 0, API 20-40 ms) give files/s.", "",
            *table(["variant", "API workers", "extra RSS MiB", "KiB/worker", "start-up ms", "stop ms", "files/s",
                    "efficiency"], rows), ""])

    def plots(self, result: dict[str, Any], out: Path) -> list[Path]:
        def series(key: str) -> dict[str, list[tuple[float, Any]]]:
            return {v: [(p["workers"], p.get(key)) for p in data["points"]] for v, data in result["variants"].items()}

        times = {f"{v} stop": pts for v, pts in series("stop_s").items()}
        times.update({f"{v} start-up": pts for v, pts in series("startup_s").items()})
        return [plots.line_plot(series("files_per_s"), "API workers", "files/s",
                                "Throughput vs workers (API 20-40 ms, S3 0 ms, 2 files per worker)",
                                out / "files-per-s-vs-workers.png", logy=True),
                plots.line_plot(series("rss_extra_mib"), "API workers", "extra peak RSS (MiB)",
                                "Memory vs workers (idle workers: RSS added by the run)",
                                out / "memory-vs-workers.png", logy=True),
                plots.line_plot(times, "API workers", "ms", "Start-up and shutdown time vs workers "
                                "(first pill -> last exit)", out / "shutdown-vs-workers.png", scale=1e3, logy=True)]


SCENARIO = Scaling()
