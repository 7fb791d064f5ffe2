"""Runs across processes on a broker (docs/redis.md): ``pillpipe worker``, ``pillpipe dispatch``, and the
worker processes ``pillpipe run VARIANT --broker URL --processes K`` starts and stops.

Every process runs the variant's own ``run`` - the same worker loops, the same coordinator - in
its role (``Config.role``, ``common/remote.py``): a worker process runs the workers of one stage,
the dispatching process the dispatcher and the coordinator.  The workload travels through the
broker: the dispatching process publishes it under the run's keys, a worker process reads it (a
bounded wait), so every process derives the same latencies and failures from the same seed.
"""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from pillpipe.common.cli import DESCRIPTION, EXIT_INTERNAL, EXIT_SETUP, EXIT_SIGNAL, EXIT_USAGE, Services, main
from pillpipe.common.config import Config, Parser, SetupError, UsageError, build_parser, one_of
from pillpipe.common.context import WorkerCrashes
from pillpipe.common.events import say
from pillpipe.common.remote import new_run_id
from pillpipe.variants import variants

MODELS = ("threaded", "asyncio", "anyio")  # the models a worker process runs (anyio on its asyncio backend)
STAGES = ("s3", "api", "verify")
WAIT = 30.0  # seconds a worker process waits for its run's workload to be published
EXIT_WAIT = 15.0  # seconds a worker process may take to leave once its run has ended, before SIGTERM
EXIT_ORPHANED = 75  # EX_TEMPFAIL (sysexits.h): a worker process whose run's coordinator is gone, or aborted it, left
STOP_WAIT = 5.0  # seconds between SIGTERM and SIGKILL for a worker process that does not leave


# ``pillpipe worker`` ---------------------------------------------------------------------------
WORKER_HELP = """\
Run N workers of one stage of a run on a broker, in this process: they take their files from the
broker's queue, work them as every process of the run does (the workload comes from the broker),
pass them on, and leave on their pills - or at once if the stage's stream has already ended.
Start as many as you like, on any machine that reaches the broker, before or while the run goes on.
A worker process killed mid-file loses nothing: its lease runs out and a sibling works the file again.
If the run's coordinator dies (its lease runs out, the run not ended), the workers leave: exit 75.
If it aborts the run (a second Ctrl-C), so do they: what they hold ends aborted, then exit 75."""


def worker_parser(prog: str) -> Parser:
    p = Parser(prog=prog, description=WORKER_HELP)
    p.add_argument("--broker", required=True, metavar="URL", help="the broker: redis://HOST:PORT/DB")
    p.add_argument("--run", required=True, metavar="ID", help="the run to join (its dispatcher's --run)")
    p.add_argument("--stage", required=True, type=one_of(STAGES), metavar="{s3,api,verify}",
                   help="the stage these workers run")
    p.add_argument("--model", type=one_of(MODELS), default="asyncio", metavar="{threaded,asyncio,anyio}",
                   help="threads or asyncio tasks (default %(default)s); processes of either model mix in one run")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="workers in this process (default %(default)s; the verify stage runs one per process)")
    p.add_argument("--wait", type=float, default=WAIT, metavar="S",
                   help="seconds to wait for the run to be published on the broker (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no event lines, no summary line")
    return p


def worker_command(prog: str, argv: list[str]) -> int:
    parser = worker_parser(prog)
    ns = parser.parse_args(argv)
    try:
        config = joined_config(ns.broker, ns.run, ns.stage, ns.workers, ns.wait, ns.quiet)
    except UsageError as exc:
        parser.error(str(exc))
    except SetupError as exc:
        say(f"{prog}: error: {exc}")
        return EXIT_SETUP
    run = variants(ns.model)[ns.model]
    code = 0
    try:
        report = run(config)
    except WorkerCrashes as crashes:
        if crashes.report is None:
            raise
        report, code = crashes.report, EXIT_INTERNAL
    except UsageError as exc:
        parser.error(str(exc))
    except SetupError as exc:
        say(f"{prog}: error: {exc}")
        return EXIT_SETUP
    if report.stopped_by == "broker":
        code = EXIT_SETUP
    elif report.stopped_by == "coordinator":  # its run's coordinator is gone, or aborted it: the workers left
        code = EXIT_ORPHANED
    elif report.stopped_by in EXIT_SIGNAL:
        code = EXIT_SIGNAL[report.stopped_by]
    if not ns.quiet:
        files = report.timing.get("stages", {}).get(ns.stage, {}).get("files", 0)
        say(f"{prog}: {ns.workers} {ns.model} {ns.stage} worker{'s' * (ns.workers != 1)} left run {ns.run}: "
            f"{files} files worked here")
    for error in report.errors:
        say(f"{prog}: {error}")
    return code


def joined_config(url: str, run: str, stage: str, workers: int, wait: float, quiet: bool = True) -> Config:
    """The config of a worker process: the workload its run published, with its own role and workers.
    A bad flag is a UsageError; a broker that does not answer, or no such run, a BrokerError."""
    from pillpipe.common.broker import Keys, check_url
    from pillpipe.common.redisstore import RedisStore, joined

    check_url(url)
    Keys(run)
    if not 0 < wait <= 86400:
        raise UsageError(f"--wait must be a number above 0 and at most 86400 seconds (got {wait:g})")
    if stage == "verify" and workers != 1:
        raise UsageError("--workers: the verify stage runs one verifier per process (start more processes)")
    store = RedisStore.open(url, run)
    try:
        workload = store.workload(wait)
    finally:
        store.close()
    count = {"s3": "s3_workers", "api": "api_workers"}.get(stage)
    changes = {"broker": url, "run_id": run, "role": stage, "quiet": quiet, "progress": "off"}
    if count is not None:
        changes[count] = workers
    return joined(workload, **changes)


# ``pillpipe dispatch`` -------------------------------------------------------------------------
DISPATCH_HELP = """\
Dispatch a run on a broker and coordinate it: this process reads (generates) the files, puts them
on the broker's first queue, ends each stage's stream with one pill per live consumer wherever it
runs, and prints the run's report - the same report as an in-process run of the same flags.  The
workers are pillpipe worker processes (started before or after this one) with the same --run."""


def dispatch_command(prog: str, argv: list[str]) -> int:
    model, rest = _model(argv)
    if rest and rest[0] in ("-h", "--help"):
        parser = build_parser(prog, f"{DISPATCH_HELP}\n\n{DESCRIPTION}", model)
        parser.add_argument("--model", choices=MODELS, default="threaded",
                            help="the model of the dispatcher and the coordinator (default threaded)")
        sys.stdout.write(parser.format_help())
        return 0
    if model not in MODELS:
        say(f"{prog}: error: --model must be one of {', '.join(MODELS)} (got {model})")
        return EXIT_USAGE
    return main(variants(model)[model], prog, rest, services=_dispatching)


def _model(argv: list[str]) -> tuple[str, list[str]]:
    """``--model M`` taken out of ``argv`` (default threaded), and the rest."""
    rest, model = list(argv), "threaded"
    for i, arg in enumerate(rest):
        if arg == "--model" and i + 1 < len(rest):
            model = rest[i + 1]
            del rest[i:i + 2]
            break
        if arg.startswith("--model="):
            model = arg.partition("=")[2]
            del rest[i]
            break
    return model, rest


@contextmanager
def _dispatching(config: Config) -> Iterator[Config]:
    if config.broker is None or config.run_id is None:
        raise UsageError("pillpipe dispatch needs --broker URL and --run ID (the workers join that run)")
    if config.processes:
        raise UsageError("--processes: pillpipe dispatch starts no workers (pillpipe run --processes K does)")
    yield dataclasses.replace(config, role="dispatch")


# ``pillpipe run VARIANT --broker URL --processes K`` --------------------------------------------
def across(variant: str, services: Services) -> Services:
    """``services`` (the embedded ones for --io real), then - with --broker and --processes K - K
    worker processes per stage of ``variant``'s model, started before the run and stopped after it."""

    @contextmanager
    def both(config: Config) -> Iterator[Config]:
        with services(config) as served:
            if served.broker is None or not served.processes:
                yield served
                return
            run = served.run_id or new_run_id()
            with workers(served.broker, run, variant, served):
                yield dataclasses.replace(served, run_id=run, role="dispatch")

    return both


@contextmanager
def workers(url: str, run: str, model: str, config: Config,
            popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen) -> Iterator[list[subprocess.Popen[bytes]]]:
    """K ``pillpipe worker`` processes per stage (K = ``config.processes``), each with the config's
    workers of its stage, in sessions of their own: a Ctrl-C reaches the coordinator only, which
    drains the run as in one process.  On the way out each leaves on its own (its pills, or the
    run's end) or is stopped by PID: SIGTERM, then SIGKILL - bounded waits on every exit path."""
    children: list[subprocess.Popen[bytes]] = []
    counts = {stage.value: n for stage, n in config.workers().items()}
    ok = False
    try:
        for stage in STAGES:
            for _ in range(config.processes):
                children.append(popen(worker_argv(url, run, stage, model, counts[stage]), stdout=subprocess.DEVNULL,
                                      start_new_session=True))  # a Ctrl-C is the coordinator's to handle
        yield children
        ok = True
    finally:
        stop(children, EXIT_WAIT if ok else 0.0)


def worker_argv(url: str, run: str, stage: str, model: str, workers: int) -> list[str]:
    return [sys.executable, "-m", "pillpipe", "worker", "--broker", url, "--run", run, "--stage", stage,
            "--model", model, "--workers", str(workers), "--quiet"]


def stop(children: Sequence[subprocess.Popen[bytes]], grace: float) -> None:
    """Let ``children`` leave for ``grace`` seconds, then SIGTERM, then SIGKILL after STOP_WAIT."""
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    alive = [child for child in children if child.poll() is None]
    for child in alive:
        child.terminate()
    deadline = time.monotonic() + STOP_WAIT
    for child in alive:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
