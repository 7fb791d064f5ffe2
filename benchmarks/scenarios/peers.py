"""Peers: the project's three models against pyper and pypeln on the same pipeline, beside the bare chains.

Every peer runs the project's topology, queue size, latencies and per-file work
(``benchmarks/peers.py``: their stage functions call the shared stage logic and ledger), so its
report must equal the project's - checked here, file digest included.  Two workloads: zero latency
(files/s, CPU per file, memory: the cost of the machinery itself; the bare chains, which pass
plain integers, show each model's floor) and the tutorial's latencies scaled down (makespan over
the ideal of ``common/simulate.py``: what each does with waiting).  Kinds run in interleaved
rounds, each run a fresh process.  Needs the ``peers`` extra; a peer whose library is missing is
reported as such, not measured.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pillpipe.common.config import Config
from pillpipe.common.simulate import simulate

from .. import units
from ..harness import ProbeFailed, med, summ
from ..peers import PEERS
from ..scenario import Bench, Scenario, Target, table

PROJECT = ("threaded", "asyncio", "anyio")
BARE = ("bare-threaded", "bare-asyncio", "bare-anyio-nowait")
MIB = 1024


@dataclass(frozen=True, kw_only=True)
class Plan:
    files: int  # at zero latency
    latency_files: int
    time_scale: float
    queue_size: int
    rounds: int
    warmup: int  # rounds thrown away first (zero latency only: the CPU-sensitive runs)

    def kinds(self, zero: bool) -> tuple[str, ...]:
        return (*(BARE if zero else ()), *PROJECT, *PEERS)


class Peers(Scenario):
    name = "peers"
    title = "pyper and pypeln on the same pipeline and work, beside the bare chains (needs the peers extra)"
    full = Plan(files=20_000, latency_files=1000, time_scale=0.01, queue_size=100, rounds=3, warmup=1)
    quick = None

    def count(self, plan: Plan, bench: Bench) -> int:
        return (plan.rounds + plan.warmup) * len(plan.kinds(True)) + plan.rounds * len(plan.kinds(False))

    def run(self, bench: Bench, plan: Plan) -> dict[str, Any]:
        zero = self._workload(bench, plan, plan.files, 0.0, plan.rounds, plan.warmup)
        latency = self._workload(bench, plan, plan.latency_files, plan.time_scale, plan.rounds, 0)
        return {"queue_size": plan.queue_size, "rounds": plan.rounds, "zero": zero, "latency": latency}

    def _workload(self, bench: Bench, plan: Plan, files: int, time_scale: float, rounds: int,
                  warmup: int) -> dict[str, Any]:
        kinds = plan.kinds(time_scale == 0)
        flags = ["--files", files, "--time-scale", time_scale, "--queue-size", plan.queue_size, "--quiet"]
        runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        errors: dict[str, str] = {}
        for r in range(warmup + rounds):  # interleaved: one run of every kind per round
            for kind in kinds:
                label = f"peers x{time_scale:g} {kind} ({'warm-up' if r < warmup else f'{r - warmup + 1}/{rounds}'})"
                if kind in errors:
                    with bench.step(label):
                        continue
                try:
                    x = bench.probe(label, kind, flags, timeout=1800)
                except ProbeFailed as exc:
                    errors[kind] = exc.reason
                    continue
                if r >= warmup:
                    runs[kind].append(x)
        ideal = simulate(Config(files=files, time_scale=time_scale, queue_size=plan.queue_size, quiet=True)).makespan
        reference = next((xs[0]["report"] for kind, xs in runs.items() if xs and "report" in xs[0]), None)
        rows = {}
        for kind, xs in runs.items():
            if not xs:
                rows[kind] = {"error": errors.get(kind, "no run")}
                continue
            row: dict[str, Any] = {
                "files_per_s": summ(files / x["elapsed_s"] for x in xs),
                "cpu_us_per_file": summ((x["cpu_user_s"] + x["cpu_sys_s"] + x.get("cpu_children_s", 0.0))
                                        / files * 1e6 for x in xs),
                "voluntary_switches_per_file": summ(x["voluntary_switches"] / files for x in xs),
                "rss_extra_mib": summ((x["rss_peak_kib"] - x["rss_before_kib"]) / MIB for x in xs),
                "rss_peak_mib": summ(x["rss_peak_kib"] / MIB for x in xs),
            }
            if "report" in xs[0]:
                row["makespan_over_ideal"] = summ(x["report"]["timing"]["wall_s"] / ideal for x in xs) if ideal else None
                row["same_report"] = all(_comparable(x["report"]) == _comparable(reference) for x in xs)
            rows[kind] = row
        return {"files": files, "time_scale": time_scale, "ideal_makespan_s": ideal, "rows": rows}

    def targets(self, result: dict[str, Any]) -> list[Target]:
        out = []
        for key in ("zero", "latency"):
            w = result[key]
            rows = {k: r for k, r in w["rows"].items() if "same_report" in r}
            differ = [k for k, r in rows.items() if not r["same_report"]]
            missing = [k for k in PEERS if "error" in w["rows"].get(k, {"error": ""})]
            out.append(Target(f"peers x{w['time_scale']:g}: every peer and model gives the same report (digest "
                              f"included)", f"{len(rows)} compared" + (f"; differ: {', '.join(differ)}" if differ else "")
                              + (f"; not run: {', '.join(missing)}" if missing else ""), not differ and not missing))
        return out

    def summary(self, result: dict[str, Any]) -> str:
        zero, latency = result["zero"], result["latency"]
        kinds = list(dict.fromkeys([*zero["rows"], *latency["rows"]]))
        rows = []
        for kind in kinds:
            z, lat = zero["rows"].get(kind, {}), latency["rows"].get(kind, {})
            if "error" in z or "error" in lat:
                rows.append([kind, z.get("error") or lat.get("error"), "", "", "", "", ""])
                continue
            rows.append([kind, units.rate(z.get("files_per_s")), units.us(z.get("cpu_us_per_file")),
                         f"{med(z['voluntary_switches_per_file']):.2f}" if z.get("voluntary_switches_per_file") else "-",
                         units.mib(z.get("rss_extra_mib")), units.factor(lat.get("makespan_over_ideal")),
                         units.us(lat.get("cpu_us_per_file"))])
        lat = f"x{latency['time_scale']:g}"
        return "\n".join([
            f"## Peers: the same pipeline on pyper and pypeln (queue size {result['queue_size']}, "
            f"{result['rounds']} interleaved rounds)", "",
            f"Zero latency: {zero['files']:,} files; latency {lat}: {latency['files']:,} files (ideal makespan "
            f"{latency['ideal_makespan_s']:.3f} s).  CPU includes child processes; extra RSS = peak - before the run.",
            "",
            *table(["run", "files/s (0 latency)", "CPU us/file (0 latency)", "switches/file (0 latency)",
                    "extra RSS MiB (0 latency)", f"makespan / ideal ({lat})", f"CPU us/file ({lat})"], rows), ""])

    def plots(self, result: dict[str, Any], out: Path) -> list[Path]:
        from .. import plots  # noqa: F401 - matplotlib on its Agg backend
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
        for ax, key, metric, label in ((left, "zero", "cpu_us_per_file", "CPU us per file, zero latency (log)"),
                                       (right, "latency", "makespan_over_ideal",
                                        f"makespan / ideal, latencies x{result['latency']['time_scale']:g}")):
            rows = [(k, r[metric]) for k, r in result[key]["rows"].items() if r.get(metric)]
            names = [k for k, _ in rows]
            meds = [v["median"] for _, v in rows]
            err = [[v["median"] - v["min"] for _, v in rows], [v["max"] - v["median"] for _, v in rows]]
            colours = ["grey" if k in BARE else "tab:blue" if k in PROJECT else "tab:orange" for k in names]
            ax.barh(names, meds, xerr=err, color=colours, capsize=3)
            ax.invert_yaxis()
            ax.set_xlabel(label)
            if key == "zero":
                ax.set_xscale("log")
                lo, hi = ax.get_xlim()
                ax.set_xticks([t for t in (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500) if lo <= t <= hi])
                ax.xaxis.set_major_formatter(ScalarFormatter())
                ax.xaxis.set_minor_formatter(NullFormatter())
            else:
                ax.axvline(1.0, color="black", linewidth=0.8, linestyle=":")
                ax.set_xlim(left=min(0.95, *meds) if meds else 0.95)
        fig.suptitle("pillpipe (blue) vs pyper and pypeln (orange); bare chains in grey")
        fig.tight_layout()
        path = out / "peers.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return [path]


def _comparable(report: dict[str, Any] | None) -> dict[str, Any]:
    """A report without what may differ between runs of the same work (``variant`` and ``timing``)."""
    return {k: v for k, v in (report or {}).items() if k not in ("variant", "timing")}


SCENARIO = Peers()
