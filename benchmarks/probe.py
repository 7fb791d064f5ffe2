"""One measurement, in the fresh process it runs in: ``python -m pillpipe.benchmarks.probe KIND [run flags]``.

KIND is a variant (``threaded``, ``asyncio``, ``anyio``, ``sequential``), a bare chain
(``bare-threaded``, ``bare-asyncio``, ``bare-anyio``, ``bare-anyio-nowait``; anyio's on
``--backend``), a peer (``pyper-thread``, ``pyper-async``, ``pypeln-thread``, ``pypeln-task``:
``benchmarks/peers.py``) or a timer probe (``timer-threaded``, ``timer-asyncio``, ``timer-anyio``,
given ``--delays``; anyio on ``--backend``).  It prints one JSON object on stdout: the report
(variants and peers), the time the run took in-process, peak RSS before and after the run (VmHWM;
``resource.getrusage`` elsewhere), CPU time (and that of the child processes it waited for: pyper
starts a multiprocessing manager), context switches, and the OS threads and asyncio tasks the run
started.  Anything the run prints goes to stderr.  A peer whose library is missing exits 2 with
one line saying what to install.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import threading
import time
from typing import Any, Awaitable, Callable, Coroutine

from pillpipe.benchmarks.bare import CHAINS
from pillpipe.benchmarks.peers import PEERS
from pillpipe.variants import CONCURRENT, VARIANTS

KINDS = (*VARIANTS, *CHAINS, *PEERS, *(f"timer-{v}" for v in CONCURRENT))


class _Counts:
    threads = 0
    tasks = 0


def _count_workers() -> None:
    """Count every thread started and every task created (once per worker: negligible cost)."""
    start, create_task = threading.Thread.start, asyncio.create_task

    def counted_start(self: threading.Thread) -> None:
        _Counts.threads += 1
        start(self)

    def counted_create_task(*args: Any, **kwargs: Any) -> asyncio.Task[Any]:
        _Counts.tasks += 1
        return create_task(*args, **kwargs)

    threading.Thread.start = counted_start  # type: ignore[method-assign]
    asyncio.create_task = counted_create_task


def _peak_rss_kib() -> int:
    """Peak RSS of this process image.  ``getrusage``'s ru_maxrss survives ``exec`` on Linux (a probe
    started from a 70 MiB harness would report 70 MiB), so prefer VmHWM, which is per address space."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _usage() -> dict[str, float]:
    ru, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"rss_kib": _peak_rss_kib(), "user": ru.ru_utime, "sys": ru.ru_stime, "vcs": ru.ru_nvcsw, "ivcs": ru.ru_nivcsw,
            "children": children.ru_utime + children.ru_stime}


def sleep_samples(kind: str, delays: list[float], repeats: int = 1, backend: str = "asyncio") -> list[tuple[float, float]]:
    """(requested, measured) pairs for each delay, slept the way the variant sleeps (anyio: on ``backend``)."""
    samples: list[tuple[float, float]] = []
    if kind == "timer-threaded":
        event = threading.Event()  # the threaded variant waits on an Event (so an abort wakes it)
        for _ in range(repeats):
            for d in delays:
                t = time.perf_counter()
                event.wait(d)
                samples.append((d, time.perf_counter() - t))
        return samples

    sleep: Callable[[float], Awaitable[None]]
    run: Callable[[Callable[[], Coroutine[Any, Any, None]]], None]
    if kind == "timer-anyio":
        import anyio

        sleep, run = anyio.sleep, lambda main: anyio.run(main, backend=backend)
    else:
        sleep, run = asyncio.sleep, lambda main: asyncio.run(main())

    async def main() -> None:
        for _ in range(repeats):
            for d in delays:
                t = time.perf_counter()
                await sleep(d)
                samples.append((d, time.perf_counter() - t))

    run(main)
    return samples


def measure(kind: str, argv: list[str]) -> dict[str, Any]:
    from pillpipe.common.config import parse_config

    if kind.startswith("timer-"):
        p = argparse.ArgumentParser(prog=f"probe {kind}")
        p.add_argument("--delays", required=True, help="comma-separated seconds")
        p.add_argument("--repeats", type=int, default=1)
        p.add_argument("--backend", default="asyncio", help="the anyio timer's event loop")
        ns = p.parse_args(argv)
        delays = [float(x) for x in ns.delays.split(",") if x]
        return {"kind": kind, "samples": sleep_samples(kind, delays, ns.repeats, ns.backend)}

    config = parse_config(argv, f"probe {kind}")
    run: Callable[[], Any]
    if kind.startswith("bare-"):
        from pillpipe.benchmarks import bare

        chain = bare.chain(kind, config.backend)
        run = lambda: chain(config.files, config.s3_workers, config.api_workers, config.queue_size)  # noqa: E731
    elif kind in PEERS:
        from pillpipe.benchmarks import peers

        peer = peers.runner(kind)
        run = lambda: peer(config)  # noqa: E731
    else:
        from pillpipe.common.context import WorkerCrashes
        from pillpipe.variants import variants

        variant = variants(kind)[kind]

        def run() -> Any:
            try:
                return variant(config)
            except WorkerCrashes as crashes:
                return crashes.report

    with contextlib.ExitStack() as services:
        if config.io == "real":  # the embedded services, started before the measurement and stopped after
            from pillpipe.services.embedded import serving

            config = services.enter_context(serving(config))
        _count_workers()
        before = _usage()
        t = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            result: Any = run()  # seconds (bare-*) or a Report
        elapsed = time.perf_counter() - t
        after = _usage()
    out: dict[str, Any] = {
        "kind": kind,
        "files": config.files,
        "elapsed_s": elapsed,
        "rss_before_kib": before["rss_kib"],
        "rss_peak_kib": after["rss_kib"],
        "cpu_user_s": after["user"] - before["user"],
        "cpu_sys_s": after["sys"] - before["sys"],
        "cpu_children_s": after["children"] - before["children"],
        "voluntary_switches": after["vcs"] - before["vcs"],
        "involuntary_switches": after["ivcs"] - before["ivcs"],
        "threads_started": _Counts.threads,
        "tasks_created": _Counts.tasks,
        "os_threads": 1 + _Counts.threads,
    }
    if not kind.startswith("bare-"):
        out["report"] = result.to_dict()
    return out


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in KINDS:
        sys.stderr.write(f"usage: python -m pillpipe.benchmarks.probe {{{','.join(KINDS)}}} [run flags]\n")
        return 2
    from pillpipe.benchmarks.peers import MissingPeer
    from pillpipe.common.config import UsageError

    try:
        result = measure(args[0], args[1:])
    except (UsageError, MissingPeer) as exc:  # a flag the variant rejects, a peer not installed: one line, exit 2
        sys.stderr.write(f"probe {args[0]}: error: {exc}\n")
        return 2
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
