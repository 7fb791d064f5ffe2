"""Redis: the pipeline across processes (``--broker``, docs/redis.md), on a real redis-server the
scenario starts on a free loopback port and stops by PID.

- files/s against worker processes per stage (``pillpipe run MODEL --broker URL --processes K``,
  K = 1, 2, 4, each process with the default 3 S3 / 2 API workers) at a latency-bound scale and at
  zero latency, beside the same run in one process (no broker) and in one process on the broker's
  queues (K = 0), for threads and for asyncio;
- a Redis hop against an in-process hop, per model: the cost per file at zero latency on the
  broker's queues in one process, less the in-process run's, over the three hand-offs a file makes;
- recovery after a kill -9: an API worker process killed mid-run; the time until its lease has run
  out and its file is back on the queue (the broker's reclaim), and what the kill costs the run;
- workers per process until it is CPU-bound, threads against asyncio: ONE ``pillpipe worker``
  process of N API workers (N = 1, 4, 16, ...) works a queue the S3 stage has filled before it
  starts (every upload a constant ``crowd_latency``, so N workers could move N / latency files/s);
  its files/s (from its first take to its last hand-off, read on the broker) and its CPU time over
  the same interval (``/proc/PID/stat``), as N grows.

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
    latency_processes: tuple[int, ...] = ()  # more K for the latency-bound series only (K=8: 25 processes)
    crowd: tuple[int, ...] = ()  # workers in the one measured process (workers per process until CPU-bound)
    crowd_latency: float = 0.02  # seconds per API upload there, constant
    crowd_files: int = 6000  # at most, per N (fewer for small N: about 2 s of ideal work)


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
                rounds=1, latency_processes=(8,), crowd=(1, 4, 16, 64, 256, 1024))
    quick = None  # it starts a redis-server and worker processes: not a smoke run

    def count(self, plan: Plan, bench: Bench) -> int:
        return (plan.rounds * len(MODELS) * (2 * (2 + len(plan.processes)) + len(plan.latency_processes))
                + (1 if plan.recovery_files else 0) + len(MODELS) * len(plan.crowd))

    def run(self, bench: Bench, plan: Plan) -> dict[str, Any]:
        from pillpipe.services.redis import RedisServer

        with RedisServer() as server:
            workloads = {"latency": (plan.latency_files, plan.time_scale), "zero": (plan.zero_files, 0.0)}
            result: dict[str, Any] = {"models": list(MODELS), "rounds": plan.rounds}
            for key, (files, scale) in workloads.items():
                base = ["--files", files, "--time-scale", scale]
                more = plan.latency_processes if key == "latency" else ()
                names = ["in-process", "K=0", *(f"K={k}" for k in (*plan.processes, *more))]
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
            if plan.crowd:
                rows = []
                for model in MODELS:
                    for n in plan.crowd:
                        with bench.step(f"redis {n} {model} API workers in one process"):
                            rows.append(self._crowd(server.url, model, n, plan))
                result["crowd"] = {"latency_s": plan.crowd_latency, "rows": rows}
        return result

    def _crowd(self, url: str, model: str, n: int, plan: Plan) -> dict[str, Any]:
        """One process of ``n`` API workers of ``model`` on a full queue: files/s and CPU, measured
        from its first take to its last hand-off.  The dispatcher and an S3 process fill the API
        queue first (S3 at zero latency); the verifier starts after, so the run ends whole."""
        import redis

        from pillpipe.common.broker import Keys
        from pillpipe.common.model import Stage

        latency = plan.crowd_latency
        files = max(100, min(plan.crowd_files, round(2 * n / latency)))
        keys = Keys(f"bench-{uuid.uuid4().hex[:10]}")
        run = keys.run
        flags = ["--files", str(files), "--s3-latency", "0", "0", "--api-latency", str(latency), str(latency),
                 "--broker-wait", "600", "--json", "--quiet"]
        coordinator = subprocess.Popen([sys.executable, "-m", "pillpipe", "dispatch", "--broker", url, "--run", run,
                                        *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        children = [self._worker(url, run, "s3", 4)]
        client = redis.Redis.from_url(url)
        api, verify = keys.queue(Stage.API), keys.queue(Stage.VERIFY)

        def depths() -> tuple[int, int]:
            pipe = client.pipeline(transaction=False)
            pipe.llen(api)
            pipe.llen(verify)
            a, v = pipe.execute()
            return int(a), int(v)

        def until(done: Any, what: str) -> None:
            deadline = time.monotonic() + 300
            while not done(*depths()):
                if time.monotonic() > deadline or coordinator.poll() is not None or any(c.poll() for c in children):
                    raise RuntimeError(f"redis crowd {model} N={n}: not {what} within 300 s")
                time.sleep(0.005)

        try:
            until(lambda a, v: a >= files, "every file on the API queue")
            worker = self._worker(url, run, "api", n, model)
            children.append(worker)
            until(lambda a, v: a < files, "a first take")
            start, cpu0 = time.perf_counter(), _cpu_s(worker.pid)
            until(lambda a, v: v >= files, "every file handed on")
            took, cpu = time.perf_counter() - start, _cpu_s(worker.pid) - cpu0
            children.append(self._worker(url, run, "verify", 1))
            out, err = coordinator.communicate(timeout=300)
            if coordinator.returncode != 0:
                raise RuntimeError(f"dispatch: exit {coordinator.returncode}: {err.strip()[-500:]}")
            assert json.loads(out)["success"] == files
        finally:
            client.close()
            if coordinator.poll() is None:
                coordinator.kill()
                coordinator.communicate()
            for child in children:
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        return {"model": model, "workers": n, "files": files, "wall_s": took, "files_per_s": files / took,
                "ideal_files_per_s": n / latency, "cpu_s": cpu, "cpu_share": cpu / took,
                "cpu_us_per_file": cpu / files * 1e6}

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
    def _worker(url: str, run: str, stage: str, workers: int, model: str = MODEL) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "pillpipe", "worker", "--broker", url, "--run", run, "--stage",
                                 stage, "--model", model, "--workers", str(workers), "--quiet"], env=_env())

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
                 *([units.rate(zr["files_per_s"]), units.seconds(zr["wall_s"])]
                   if (zr := by_cell.get((r["model"], r["cell"]))) else ["-", "-"])] for r in lat["rows"]]
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
        crowd = result.get("crowd")
        if crowd:
            lines += [f"Workers per process until it is CPU-bound: one `pillpipe worker --stage api --workers N` "
                      f"process on a full queue, every upload {crowd['latency_s'] * 1000:g} ms (ideal: N / "
                      f"{crowd['latency_s']:g} files/s); files/s and the process's CPU from its first take to its "
                      "last hand-off (CPU share 1.0 = one core busy).", "",
                      *table(["model", "N", "files", "files/s", "ideal files/s", "CPU share", "CPU us/file"],
                             [[r["model"], str(r["workers"]), str(r["files"]), f"{r['files_per_s']:,.0f}",
                               f"{r['ideal_files_per_s']:,.0f}", f"{r['cpu_share']:.2f}",
                               f"{r['cpu_us_per_file']:,.0f}"] for r in crowd["rows"]]), ""]
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
        paths = [plots.line_plot(series, "worker processes per stage (0: every worker in the coordinator's process)",
                                 "files/s", "Files/s vs worker processes per stage, on Redis",
                                 out / "files-per-s-vs-processes.png", logx=False, logy=True)]
        crowd = result.get("crowd")
        if crowd:
            per: dict[str, list[tuple[float, Any]]] = {}
            for row in crowd["rows"]:
                per.setdefault(f"{row['model']} files/s", []).append((row["workers"], row["files_per_s"]))
            ideal = sorted({(row["workers"], row["ideal_files_per_s"]) for row in crowd["rows"]})
            per["ideal (N / latency)"] = [(n, rate) for n, rate in ideal]
            paths.append(plots.line_plot(per, "API workers in the one process", "files/s",
                                         "Workers per process on Redis: files/s until CPU-bound",
                                         out / "workers-per-process.png", logx=True, logy=True))
        return paths


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) process ``pid`` has used so far (Linux /proc)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SCENARIO = Redis()
