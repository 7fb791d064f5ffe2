"""Redis: the pipeline across processes (``--broker``, docs/redis.md), on a real redis-server the
scenario starts on a free loopback port and stops by PID.

- files/s against worker processes per stage (``pillpipe run MODEL --broker URL --processes K``,
  K = 1, 2, 4, each process with the default 3 S3 / 2 API workers) at a latency-bound scale and at
  zero latency, beside the same run in one process (no broker) and in one process on the broker's
  queues (K = 0), for threads and for asyncio;
- a Redis hop against an in-process hop, per model: the cost per file at zero latency on the
  broker's queues in one process, less the in-process run's, over the three hand-offs a file makes;
- recovery after a kill -9: an API worker process killed mid-run; the time until its lease has run
  out and its file is back on the queue (the broker's reclaim), and what the kill costs the run.

Every measurement is one command in fresh processes (``python -m pillpipe run ...``); the wall time
is the coordinator's (``timing.wall_s``: from its start to its report, worker start-up included).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .. import plots, units
from ..harness import _env, summ
from ..scenario import Bench, Scenario, Target, table

MODELS = ("asyncio", "threaded")
MODEL = "asyncio"  # the recovery measurement's


@dataclass(frozen=True, kw_only=True)
class Plan:
    processes: tuple[int, ...]
    latency_files: int
    time_scale: float
    zero_files: int
    recovery_files: int
    rounds: int


def _run(model: str, flags: Sequence[Any], timeout: float = 600) -> dict[str, Any]:
    """One ``pillpipe run`` in a fresh process: its JSON report, and the command's own wall time."""
    argv = [sys.executable, "-m", "pillpipe", "run", model, *map(str, flags), "--json", "--quiet"]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_env())
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[3:])}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    return {"report": report, "elapsed_s": elapsed, "wall_s": report["timing"]["wall_s"]}


class Redis(Scenario):
    name = "redis"
    title = "--broker: files/s vs worker processes per stage, a Redis hop vs an in-process one, recovery after kill -9"
    full = Plan(processes=(1, 2, 4), latency_files=400, time_scale=0.05, zero_files=2000, recovery_files=300,
                rounds=1)
    quick = None  # it starts a redis-server and worker processes: not a smoke run

    def count(self, plan: Plan, bench: Bench) -> int:
        return plan.rounds * 2 * len(MODELS) * (2 + len(plan.processes)) + (1 if plan.recovery_files else 0)

    def run(self, bench: Bench, plan: Plan) -> dict[str, Any]:
        from pillpipe.services.redis import RedisServer

        with RedisServer() as server:
            workloads = {"latency": (plan.latency_files, plan.time_scale), "zero": (plan.zero_files, 0.0)}
            result: dict[str, Any] = {"models": list(MODELS), "rounds": plan.rounds}
            for key, (files, scale) in workloads.items():
                base = ["--files", files, "--time-scale", scale]
                names = ["in-process", "K=0", *(f"K={k}" for k in plan.processes)]
                cells: dict[tuple[str, str], list[dict[str, Any]]] = {(m, c): [] for m in MODELS for c in names}
                for r in range(plan.rounds):
                    for model, cell in cells:
                        flags = list(base)
                        if cell != "in-process":
                            flags += ["--broker", server.url, "--processes", cell.removeprefix("K=")]
                        with bench.step(f"redis x{scale:g} {model} {cell} ({r + 1}/{plan.rounds})"):
                            cells[(model, cell)].append(_run(model, flags))
                result[key] = {"files": files, "time_scale": scale, "rows": [
                    {"model": model, "cell": cell, "files_per_s": summ(files / x["wall_s"] for x in xs),
                     "wall_s": summ(x["wall_s"] for x in xs), "elapsed_s": summ(x["elapsed_s"] for x in xs),
                     "success": min(x["report"]["success"] for x in xs)} for (model, cell), xs in cells.items()]}
            zero = {(row["model"], row["cell"]): row for row in result["zero"]["rows"]}
            result["hop"] = {}
            for model in MODELS:
                here, broker = (zero[(model, c)]["wall_s"]["median"] / plan.zero_files for c in ("in-process", "K=0"))
                result["hop"][model] = {"in_process_us_per_file": here * 1e6, "broker_us_per_file": broker * 1e6,
                                        "redis_hop_us": (broker - here) / 3 * 1e6}
            if plan.recovery_files:
                with bench.step("redis recovery after kill -9"):
                    result["recovery"] = self._recovery(server.url, plan)
        return result

    def _recovery(self, url: str, plan: Plan) -> dict[str, Any]:
        """Workers in processes of their own, the dispatcher in another; one API worker process is
        killed (SIGKILL) mid-run; how long until the broker has reclaimed its lease (its file is
        back on the queue), and the run's wall time against the same run with no kill."""
        import redis

        from pillpipe.common.broker import TTL, Keys
        from pillpipe.common.model import Stage

        flags = ["--files", str(plan.recovery_files), "--time-scale", str(plan.time_scale), "--json", "--quiet"]
        walls, reclaimed = {}, None
        for kill in (False, True):
            run = f"bench-{uuid.uuid4().hex[:10]}"
            workers = [self._worker(url, run, stage, n) for stage, n in (("s3", 3), ("api", 2), ("api", 2),
                                                                        ("verify", 1))]
            coordinator = subprocess.Popen([sys.executable, "-m", "pillpipe", "dispatch", "--broker", url, "--run", run,
                                            *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                           env=_env())
            try:
                if kill:
                    time.sleep(2.0)
                    victim = workers[1]
                    victim.kill()
                    killed_at = time.perf_counter()
                    client = redis.Redis.from_url(url)
                    key, mark = Keys(run).workers(Stage.API), f"/{victim.pid}/".encode()
                    while any(mark in member for member in client.zrange(key, 0, -1)):
                        time.sleep(0.01)
                    reclaimed = time.perf_counter() - killed_at
                    client.close()
                out, err = coordinator.communicate(timeout=300)
                if coordinator.returncode != 0:
                    raise RuntimeError(f"dispatch: exit {coordinator.returncode}: {err.strip()[-500:]}")
                report = json.loads(out)
                assert report["success"] == plan.recovery_files, report
                walls[kill] = report["timing"]["wall_s"]
            finally:
                for worker in workers:
                    try:
                        worker.wait(30)
                    except subprocess.TimeoutExpired:
                        worker.kill()
                        worker.wait()
        return {"ttl_s": TTL, "reclaimed_s": reclaimed, "wall_s": walls[False], "wall_killed_s": walls[True],
                "files": plan.recovery_files}

    @staticmethod
    def _worker(url: str, run: str, stage: str, workers: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "pillpipe", "worker", "--broker", url, "--run", run, "--stage",
                                 stage, "--model", MODEL, "--workers", str(workers), "--quiet"], env=_env())

    def targets(self, result: dict[str, Any]) -> list[Target]:
        out = [Target(f"--broker, x{w['time_scale']:g}: every file succeeds in every cell",
                      f"{sum(r['success'] == w['files'] for r in w['rows'])} of {len(w['rows'])} cells",
                      all(r["success"] == w["files"] for r in w["rows"]))
               for w in (result["latency"], result["zero"])]
        rows = {(r["model"], r["cell"]): r for r in result["latency"]["rows"]}
        for model in result["models"]:
            ks = sorted(int(c.removeprefix("K=")) for m, c in rows if m == model and c.startswith("K=") and c != "K=0")
            if len(ks) > 1:
                first, last = (rows[(model, f"K={k}")]["files_per_s"]["median"] for k in (ks[0], ks[-1]))
                out.append(Target(f"latency-bound, {model}: K={ks[-1]} worker processes per stage move more files/s "
                                  f"than K={ks[0]}", f"{last:.1f} vs {first:.1f} files/s ({last / first:.2f}x)",
                                  last > first))
        return out

    def summary(self, result: dict[str, Any]) -> str:
        lat, zero = result["latency"], result["zero"]
        by_cell = {(r["model"], r["cell"]): r for r in zero["rows"]}
        rows = [[r["model"], r["cell"], units.rate(r["files_per_s"]), units.seconds(r["wall_s"]),
                 units.rate(by_cell[(r["model"], r["cell"])]["files_per_s"]),
                 units.seconds(by_cell[(r["model"], r["cell"])]["wall_s"])] for r in lat["rows"]]
        hops = "; ".join(f"{model}: {hop['broker_us_per_file']:.0f} us per file on the broker's queues in one process "
                         f"against {hop['in_process_us_per_file']:.0f} us in process, about {hop['redis_hop_us']:.0f} us "
                         "more per hand-off" for model, hop in result["hop"].items())
        lines = [
            f"## --broker: the pipeline across processes on Redis ({result['rounds']} round(s))", "",
            f"Latency-bound: {lat['files']:,} files at x{lat['time_scale']:g} of the tutorial's latencies; zero latency: "
            f"{zero['files']:,} files.  in-process: no broker; K=0: every worker in the coordinator's process on the "
            "broker's queues; K=N: N worker processes per stage (3 S3 / 2 API workers each, one verifier), "
            "start-up included.", "",
            *table(["model", "cell", f"files/s (x{lat['time_scale']:g})", f"wall (x{lat['time_scale']:g})",
                    "files/s (0)", "wall (0)"], rows), "",
            f"A Redis hop (put + reliable take + ack, plus the file's row committed before its ack): {hops}.", ""]
        rec = result.get("recovery")
        if rec:
            lines += [f"Recovery after kill -9 ({MODEL} worker processes; an API one killed, {rec['files']} files): "
                      f"its lease reclaimed "
                      f"{rec['reclaimed_s']:.2f} s after the kill (lease {rec['ttl_s']:g} s, renewed and reclaimed every "
                      f"{rec['ttl_s'] / 3:.2f} s); the run took {rec['wall_killed_s']:.2f} s against "
                      f"{rec['wall_s']:.2f} s with no kill.", ""]
        return "\n".join(lines)

    def plots(self, result: dict[str, Any], out: Path) -> list[Path]:
        series: dict[str, list[tuple[float, Any]]] = {}
        for key in ("latency", "zero"):
            work = result[key]
            for row in work["rows"]:
                if row["cell"].startswith("K="):
                    series.setdefault(f"{row['model']} x{work['time_scale']:g}", []).append(
                        (int(row["cell"].removeprefix("K=")), row["files_per_s"]))
        return [plots.line_plot(series, "worker processes per stage (0: every worker in the coordinator's process)",
                                "files/s", "Files/s vs worker processes per stage, on Redis",
                                out / "files-per-s-vs-processes.png", logx=False, logy=True)]


SCENARIO = Redis()
