"""Durable runs (``--state``): what keeping the ledger in SQLite costs, how it scales, how fast a
resume is, and what a commit that blocks the event loop does (not in ``--quick``).

- cost per file at zero latency with ``--state`` and without (target: within 1.5x);
- a million files with ``--state``: peak RSS (flat: against the same run without a state, and
  against 100,000 files) and the state file's size;
- a million-file run killed with SIGKILL half-way (once its state has grown to half the size the
  uninterrupted run's ends at), then resumed: the restore alone, and the resumed run's wall time;
- the stall: files/s and the event loop's lag (a ticker task sleeping 1 ms, measuring how late it
  wakes) without a state, with the writer (each commit handed to a thread), and with the commit
  made where a file settles (``--inline-commit``, a benchmark-only switch): the writer's batches,
  or the naive one durable transaction per file.  On an event loop that blocks every coroutine
  for the length of each commit; in threads only the worker that commits.

The lag and restore measurements need a probe of their own, so this module is also runnable:
``python -m pillpipe.benchmarks.scenarios.durable lag KIND [run flags]`` and ``... restore PATH``.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from pillpipe.variants import CONCURRENT

from .. import units
from ..harness import MEASURED, ProbeFailed, _env, med, percentile, summ
from ..scenario import Bench, Scenario, Target, table

MIB = 1024
MODELS = CONCURRENT
# No state; the variant's writer; then the benchmark-only commits where a file settles (--inline-commit):
# the writer's batches, or one durable transaction (an fsync) per file, as SQLite's defaults would do.
MODES = ("none", "writer", "batched", "naive")
MODE_FLAGS: dict[str, tuple[str, ...]] = {"none": (), "writer": ("--state",),
                                          "batched": ("--state", "--inline-commit", "batched"),
                                          "naive": ("--state", "--inline-commit", "naive")}
TICK = 0.001  # the ticker's sleep (s)
TARGET_RATIO = 1.5
RSS_LIMIT_MIB = 64


@dataclass(frozen=True, kw_only=True)
class Stall:
    label: str
    files: int
    flags: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Plan:
    overhead_files: int
    repeats: int
    warmup: int
    big_files: int  # the flat-memory and the resume runs
    stalls: tuple[Stall, ...]
    stall_repeats: int
    queue_size: int = 1000


STALLS = (Stall(label="latencies x0.01, 50 S3 + 100 API workers", files=10_000,
                flags=("--time-scale", "0.01", "--s3-workers", "50", "--api-workers", "100")),)


class Durable(Scenario):
    name = "durable"
    title = "--state: cost per file, a million files, resume after a kill, the blocking commit's stall (not in --quick)"
    full = Plan(overhead_files=100_000, repeats=3, warmup=1, big_files=1_000_000, stalls=STALLS, stall_repeats=3)
    quick = None

    def count(self, plan: Plan, bench: Bench) -> int:
        return (len(MODELS) * 2 * (plan.repeats + plan.warmup)  # overhead: without and with a state
                + len(MEASURED) * 2  # a million files, without and with
                + len(MEASURED) * 3  # killed half-way, the restore alone, the resume
                + len(MODELS) * len(MODES) * len(plan.stalls) * plan.stall_repeats)

    def run(self, bench: Bench, plan: Plan) -> dict[str, Any]:
        base = ["--time-scale", 0, "--quiet", "--queue-size", plan.queue_size]
        with tempfile.TemporaryDirectory(prefix="pillpipe-durable-") as folder:
            states = _States(Path(folder))
            out: dict[str, Any] = {"overhead": self._overhead(bench, plan, base, states),
                                   "big": self._big(bench, plan, base, states),
                                   "stall": self._stall(bench, plan, states)}
            out["resume"] = self._resume(bench, plan, base, states, out["big"])
        out.update(files=plan.overhead_files, big_files=plan.big_files, queue_size=plan.queue_size)
        return out

    # Cost per file at zero latency -------------------------------------------------------------
    def _overhead(self, bench: Bench, plan: Plan, base: list[Any], states: "_States") -> dict[str, Any]:
        rows: dict[str, Any] = {}
        for v in MODELS:
            row: dict[str, Any] = {}
            for mode in ("none", "writer"):
                runs = []
                for i in range(plan.warmup + plan.repeats):
                    flags = [*base, "--files", plan.overhead_files, *states.flags(mode)]
                    x = bench.probe(f"durable overhead {v} {mode} ({i + 1}/{plan.warmup + plan.repeats})", v, flags)
                    states.clear()
                    if i >= plan.warmup:
                        runs.append(x)
                row[mode] = {"us_per_file": summ(x["elapsed_s"] / x["files"] * 1e6 for x in runs),
                             "cpu_s": summ(x["cpu_user_s"] + x["cpu_sys_s"] for x in runs),
                             "rss_peak_mib": summ(x["rss_peak_kib"] / MIB for x in runs)}
            row["ratio"] = med(row["writer"]["us_per_file"]) / med(row["none"]["us_per_file"])
            rows[v] = row
        return rows

    # A million files: memory and the state's size ----------------------------------------------
    def _big(self, bench: Bench, plan: Plan, base: list[Any], states: "_States") -> dict[str, Any]:
        rows: dict[str, Any] = {}
        for v in MEASURED:
            row: dict[str, Any] = {}
            for mode in ("none", "writer"):
                path = states.fresh()
                flags = [*base, "--files", plan.big_files, *(["--state", path] if mode == "writer" else [])]
                x = bench.probe(f"durable {plan.big_files:,} files {v} {mode}", v, flags, timeout=1800)
                row[mode] = {"rss_peak_mib": x["rss_peak_kib"] / MIB, "wall_s": x["elapsed_s"],
                             "cpu_s": x["cpu_user_s"] + x["cpu_sys_s"], "success": x["report"]["success"]}
                if mode == "writer":
                    row[mode]["state_bytes"] = os.path.getsize(path)
                    row[mode]["state_bytes_per_file"] = os.path.getsize(path) / plan.big_files
                    states.drop(path)
            rows[v] = row
        return rows

    # Killed half-way, then resumed ---------------------------------------------------------------
    def _resume(self, bench: Bench, plan: Plan, base: list[Any], states: "_States",
                big: dict[str, Any]) -> dict[str, Any]:
        rows: dict[str, Any] = {}
        for v in MEASURED:
            path = states.fresh()
            flags = [*base, "--files", plan.big_files, "--state", path]
            with bench.step(f"durable {v}: SIGKILL half-way through {plan.big_files:,} files"):
                killed = _kill_half_way(bench.python, v, flags, path, big[v]["writer"]["state_bytes"])
            copy = states.copy(path)
            restore = _own_probe(bench, f"durable {v}: restore {killed['recorded']:,} rows", ["restore", copy])
            states.drop(copy)
            x = bench.probe(f"durable {v}: resume", v, [*flags, "--resume"], timeout=1800)
            rows[v] = {"killed": killed, "restore": restore, "resume_wall_s": x["elapsed_s"],
                       "resume_rss_peak_mib": x["rss_peak_kib"] / MIB, "success": x["report"]["success"],
                       "uninterrupted_wall_s": big[v]["writer"]["wall_s"]}
            states.drop(path)
        return rows

    # The stall: files/s and loop lag -------------------------------------------------------------
    def _stall(self, bench: Bench, plan: Plan, states: "_States") -> list[dict[str, Any]]:
        rows = []
        for stall in plan.stalls:
            for v in MODELS:
                for mode in MODES:
                    runs = []
                    for i in range(plan.stall_repeats):
                        flags = ["--files", stall.files, "--quiet", "--queue-size", plan.queue_size, *stall.flags,
                                 *states.flags(mode)]
                        runs.append(_own_probe(bench, f"durable stall {stall.label} {v} {mode} ({i + 1})",
                                               ["lag", v, *flags]))
                        states.clear()
                    rows.append({"workload": stall.label, "variant": v, "mode": mode, "files": stall.files,
                                 "files_per_s": summ(x["files"] / x["elapsed_s"] for x in runs),
                                 "lag_p50_s": summ(x["lag_s"]["p50"] for x in runs),
                                 "lag_p99_s": summ(x["lag_s"]["p99"] for x in runs),
                                 "lag_max_s": summ(x["lag_s"]["max"] for x in runs)})
        return rows

    # Targets and the summary ----------------------------------------------------------------------
    def targets(self, result: dict[str, Any]) -> list[Target]:
        out = []
        for v, row in result["overhead"].items():
            out.append(Target(f"--state at zero latency, {v}: cost/file <= {TARGET_RATIO} x without",
                              f"{units.us(row['writer']['us_per_file'], spread=False)} us vs "
                              f"{units.us(row['none']['us_per_file'], spread=False)} us: {units.factor(row['ratio'])}",
                              row["ratio"] <= TARGET_RATIO))
        for v, row in result["big"].items():
            rss = row["writer"]["rss_peak_mib"]
            out.append(Target(f"{result['big_files']:,} files with --state, {v}: peak RSS < {RSS_LIMIT_MIB} MiB",
                              f"{units.mib(rss)} MiB (without a state {units.mib(row['none']['rss_peak_mib'])})",
                              rss < RSS_LIMIT_MIB))
        return out

    def summary(self, result: dict[str, Any]) -> str:
        files, big = result["files"], result["big_files"]
        overhead = [[v, units.us(r["none"]["us_per_file"]), units.us(r["writer"]["us_per_file"]),
                     units.factor(r["ratio"], spread=False), units.seconds(r["none"]["cpu_s"]),
                     units.seconds(r["writer"]["cpu_s"]), units.mib(r["writer"]["rss_peak_mib"])]
                    for v, r in result["overhead"].items()]
        memory = [[v, units.mib(r["none"]["rss_peak_mib"]), units.mib(r["writer"]["rss_peak_mib"]),
                   units.mib(result["overhead"][v]["writer"]["rss_peak_mib"]), units.seconds(r["none"]["wall_s"]),
                   units.seconds(r["writer"]["wall_s"]), f"{r['writer']['state_bytes'] / 2 ** 20:.1f}",
                   f"{r['writer']['state_bytes_per_file']:.0f}"] for v, r in result["big"].items()]
        resume = [[v, f"{r['killed']['recorded']:,} ({r['killed']['recorded'] / big:.0%})",
                   units.seconds(r["restore"]["elapsed_s"]), units.seconds(r["restore"]["cpu_s"]),
                   units.seconds(r["resume_wall_s"]), units.seconds(r["uninterrupted_wall_s"]),
                   units.mib(r["resume_rss_peak_mib"]), f"{r['success']:,}"] for v, r in result["resume"].items()]
        stall = [[r["workload"], r["variant"], r["mode"], units.rate(r["files_per_s"]), units.ms(r["lag_p50_s"]),
                  units.ms(r["lag_p99_s"]), units.ms(r["lag_max_s"])] for r in result["stall"]]
        return "\n".join([
            f"## Durable runs (--state): {files:,} files at --time-scale 0, --queue-size {result['queue_size']}", "",
            *table(["variant", "us/file without", "us/file with --state", "with / without", "CPU s without",
                    "CPU s with", "peak RSS MiB with"], overhead), "",
            f"### {big:,} files with --state: flat memory, the state's size", "",
            *table(["variant", "peak RSS MiB without", "peak RSS MiB with", f"with, {files:,} files", "wall s without",
                    "wall s with", "state MiB", "bytes per file"], memory), "",
            f"### Resume after SIGKILL half-way through {big:,} files", "",
            *table(["variant", "rows committed at the kill", "restore s", "restore CPU s", "resumed run s",
                    "uninterrupted run s", "resumed peak RSS MiB", "success"], resume), "",
            "### The stall: a commit inside the event loop (ticker: a task sleeping 1 ms; lag = how late it wakes)",
            "", "Modes: `none` no state; `writer` --state, each batch committed by the variant's writer (a thread, "
            "or handed to one); `batched` the same batches committed where a file settles; `naive` one durable "
            "transaction (an fsync) per file, committed where it settles (both: the benchmark-only "
            "`--inline-commit`; on an event loop they block every coroutine). Threads: the ticker is a thread.", "",
            *table(["workload", "variant", "mode", "files/s", "lag p50 ms", "lag p99 ms", "lag max ms"], stall), ""])


# Where the states live -------------------------------------------------------------------------
class _States:
    """Fresh state paths in one temporary folder, each removed (with its WAL files) when done."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.made = folder, 0

    def fresh(self) -> str:
        self.made += 1
        return str(self.folder / f"run-{self.made}.db")

    def flags(self, mode: str) -> list[str]:
        wanted = MODE_FLAGS[mode]
        return [] if not wanted else ["--state", self.fresh(), *wanted[1:]]  # a new state for every run

    def copy(self, path: str) -> str:
        copy = self.fresh()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                shutil.copyfile(path + suffix, copy + suffix)
        return copy

    def clear(self) -> None:
        for path in self.folder.iterdir():
            path.unlink()

    def drop(self, path: str) -> None:
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(path + suffix)
            except FileNotFoundError:
                pass


# The probes of its own -------------------------------------------------------------------------
def _own_probe(bench: Bench, label: str, args: Sequence[Any], timeout: float = 600) -> dict[str, Any]:
    with bench.step(label):
        cmd = [bench.python or sys.executable, "-m", __name__, *map(str, args)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())
        except subprocess.TimeoutExpired:
            raise ProbeFailed(str(args[0]), f"timed out after {timeout:g} s") from None
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            tail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            raise ProbeFailed(str(args[0]), f"exit {done.returncode}: {tail[:300]}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result


def _kill_half_way(python: str | None, kind: str, flags: Sequence[Any], state: str, full_bytes: int) -> dict[str, Any]:
    """Start a probe of ``kind`` with ``flags`` and SIGKILL it once its state (file and WAL) has
    grown to half ``full_bytes`` - the size the same run's state ends at - so about half the rows
    are committed (the size is watched, not the rows: counting them would compete for the CPU);
    return when that was and how many rows the state holds then."""
    cmd = [python or sys.executable, "-m", "pillpipe.benchmarks.probe", kind, *map(str, flags)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = time.monotonic()
    try:
        while _size(state) < full_bytes / 2:
            if proc.poll() is not None:
                raise ProbeFailed(kind, "the run ended before half its state was written")
            if time.monotonic() - started > 1800:
                raise ProbeFailed(kind, "half the state was not written within 30 minutes")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    from pillpipe.common.sqlite_store import SqliteStore

    with SqliteStore.read(state) as store:
        return {"after_s": time.monotonic() - started, "recorded": store.summary()["recorded"]}


def _size(state: str) -> int:
    return sum(os.path.getsize(state + suffix) for suffix in ("", "-wal") if os.path.exists(state + suffix))


def _restore_probe(path: str) -> dict[str, Any]:
    """Count a state's committed rows into a fresh ledger, as a resume does before its first file."""
    import resource

    from pillpipe.common.ledger import Ledger
    from pillpipe.common.sqlite_store import SqliteStore
    from pillpipe.common.store import restore_all

    t, cpu = time.perf_counter(), time.process_time()
    with SqliteStore.read(path) as store:
        settled = restore_all(store, Ledger())
    return {"rows": len(settled), "elapsed_s": time.perf_counter() - t, "cpu_s": time.process_time() - cpu,
            "rss_peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def _lag_probe(kind: str, argv: list[str]) -> dict[str, Any]:
    """``benchmarks.probe``'s measurement of one run, with a ticker beside the workers."""
    from pillpipe.benchmarks.probe import measure
    from pillpipe.variants import MODULES

    samples: list[float] = []
    module = importlib.import_module(f"{MODULES[kind]}.pipeline")
    setattr(module, "pipeline", _ticking(kind, getattr(module, "pipeline"), samples))  # run() looks it up
    out = measure(kind, argv)
    lags = sorted(samples)
    out["lag_s"] = {"p50": percentile(lags, 50) or 0.0, "p99": percentile(lags, 99) or 0.0,
                    "max": lags[-1] if lags else 0.0, "ticks": len(lags)}
    out.pop("report", None)
    return out


def _ticking(kind: str, pipeline: Callable[..., Any], samples: list[float]) -> Callable[..., Any]:
    """``pipeline`` with a ticker beside it: it sleeps ``TICK`` again and again and records how late
    it woke (a task on the event loop; a thread in threads)."""
    if kind == "threaded":
        def threaded(ctx: Any) -> None:
            done = threading.Event()
            ticker = threading.Thread(target=lambda: _tick(done.is_set, time.sleep, samples), daemon=True)
            ticker.start()
            try:
                pipeline(ctx)
            finally:
                done.set()
                ticker.join()
        return threaded
    if kind == "asyncio":
        import asyncio

        async def on_asyncio(ctx: Any) -> None:
            ticker = asyncio.create_task(_atick(asyncio.sleep, samples))
            try:
                await pipeline(ctx)
            finally:
                ticker.cancel()
        return on_asyncio
    import anyio

    async def on_anyio(ctx: Any) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_atick, anyio.sleep, samples)
            try:
                await pipeline(ctx)
            finally:
                tg.cancel_scope.cancel()
    return on_anyio


def _tick(done: Callable[[], bool], sleep: Callable[[float], None], samples: list[float]) -> None:
    while not done():
        t = time.perf_counter()
        sleep(TICK)
        samples.append(time.perf_counter() - t - TICK)


async def _atick(sleep: Callable[[float], Any], samples: list[float]) -> None:
    while True:
        t = time.perf_counter()
        await sleep(TICK)
        samples.append(time.perf_counter() - t - TICK)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["lag"] and len(args) > 1:
        result = _lag_probe(args[1], args[2:])
    elif args[:1] == ["restore"] and len(args) == 2:
        result = _restore_probe(args[1])
    else:
        sys.stderr.write(f"usage: python -m {__name__} lag KIND [run flags] | restore PATH\n")
        return 2
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


SCENARIO = Durable()

if __name__ == "__main__":
    raise SystemExit(main())
