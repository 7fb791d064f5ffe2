"""Latency-bound: the tutorial's latencies scaled down, efficiency = ideal makespan / measured.

The ideal is ``common/simulate.py``'s zero-overhead replay of the same workload; the calibrated
ideal replays it with each model's measured timer (``Bench.timer``) applied to every sleep.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pillpipe.common.config import Config
from pillpipe.common.simulate import simulate

from .. import plots, units
from ..harness import MEASURED, med, summ
from ..metrics import metrics
from ..scenario import Bench, Scenario, Target, table


@dataclass(frozen=True, kw_only=True)
class Point:
    time_scale: float
    files: int
    repeats: int


@dataclass(frozen=True, kw_only=True)
class Plan:
    points: tuple[Point, ...]
    warmup: int  # before each point at time scale <= WARM_UP_BELOW (the CPU-sensitive ones)


WARM_UP_BELOW = 0.01


class Latency(Scenario):
    name = "latency"
    title = "the tutorial's latencies scaled down: efficiency vs the ideal and the calibrated ideal"
    full = Plan(points=(Point(time_scale=0.0001, files=1000, repeats=3), Point(time_scale=0.001, files=1000, repeats=3),
                        Point(time_scale=0.01, files=1000, repeats=3), Point(time_scale=0.1, files=200, repeats=1),
                        Point(time_scale=1.0, files=16, repeats=1)), warmup=1)
    quick = Plan(points=(Point(time_scale=0.001, files=200, repeats=1), Point(time_scale=0.01, files=40, repeats=1)),
                 warmup=0)

    def _warmup(self, plan: Plan, point: Point) -> int:
        return plan.warmup if point.time_scale <= WARM_UP_BELOW else 0

    def count(self, plan: Plan, bench: Bench) -> int:
        return len(MEASURED) * (1 + sum(p.repeats + self._warmup(plan, p) for p in plan.points))  # + the timers

    def run(self, bench: Bench, plan: Plan) -> dict[str, Any]:
        timers = {v: bench.timer(v) for v in MEASURED}
        points = []
        for p in plan.points:
            config = Config(files=p.files, time_scale=p.time_scale, quiet=True)
            ideal = simulate(config)
            point: dict[str, Any] = {"time_scale": p.time_scale, "files": p.files, "ideal_makespan_s": ideal.makespan}
            for v in MEASURED:
                calibrated = simulate(config, timer=timers[v])
                runs = bench.repeat(f"latency x{p.time_scale:g} {v}", v,
                                    ["--files", p.files, "--time-scale", p.time_scale, "--quiet"],
                                    p.repeats, self._warmup(plan, p), timeout=3600)
                ms = [metrics(x, ideal, calibrated) for x in runs]
                point[v] = {
                    "calibrated_makespan_s": calibrated.makespan,
                    "makespan_s": summ(m["makespan_s"] for m in ms),
                    "efficiency": summ(m["efficiency"] for m in ms),
                    "efficiency_calibrated": summ(m["efficiency_calibrated"] for m in ms),
                    "cpu_s": summ(m["cpu_s"] for m in ms),
                }
            points.append(point)
        return {"points": points, "timer_models": {v: m.to_dict() for v, m in timers.items()}}

    def targets(self, result: dict[str, Any]) -> list[Target]:
        out = []
        for p in result["points"]:
            if p["time_scale"] < 0.01:
                continue  # sub-millisecond waits: reported, not a target
            need = 0.995 if p["time_scale"] >= 1 else 0.97
            for v in MEASURED:
                e = p[v]["efficiency"]
                out.append(Target(f"efficiency {v} at x{p['time_scale']:g} ({p['files']} files) >= {need}",
                                  f"{units.ratio(e, False)} (calibrated {units.ratio(p[v]['efficiency_calibrated'], False)})",
                                  e is not None and med(e) >= need))
        return out

    def summary(self, result: dict[str, Any]) -> str:
        timers = "; ".join(f"{v}: rounds to {units.ms(m['quantum_s'])} ms, +{units.us(m['offset_s'] * 1e6)} us"
                           if m["quantum_s"] else f"{v}: +{units.us(m['offset_s'] * 1e6)} us per sleep"
                           for v, m in result["timer_models"].items())
        header = ["time scale", "files", "ideal makespan s"]
        for v in MEASURED:
            header += [v, f"{v} (calibrated)"]
        rows = [[f"{p['time_scale']:g}", p["files"], units.seconds(p["ideal_makespan_s"]),
                 *[units.ratio(p[v][key]) for v in MEASURED for key in ("efficiency", "efficiency_calibrated")]]
                for p in result["points"]]
        return "\n".join(["## Latency-bound: efficiency = ideal makespan / measured makespan", "",
                          f"Timer models measured: {timers}", "", *table(header, rows), ""])

    def plots(self, result: dict[str, Any], out: Path) -> list[Path]:
        series = {}
        for v in MEASURED:
            for key, label in (("efficiency", v), ("efficiency_calibrated", f"{v} vs calibrated ideal")):
                series[label] = [(p["time_scale"], p[v][key]) for p in result["points"]]
        return [plots.line_plot(series, "latency scale (x tutorial latencies: 1 = S3 0.2-0.5 s, API 1-2 s)",
                                "efficiency (ideal / measured makespan)", "Efficiency vs latency scale",
                                out / "efficiency-vs-latency.png", hlines={"0.97": 0.97})]


SCENARIO = Latency()
