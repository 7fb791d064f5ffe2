"""The third model: anyio (a task group + memory object streams, no pills) on the asyncio and trio backends.

It must give the same reports as the other variants, end every stream by closing the last clone of
its send side, and keep the same reliability behaviour: faults, timeouts, dead workers, signals.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import json
import math
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings

import pillpipe.anyio_version.pipeline as npipe
from pillpipe import asyncio_version
from pillpipe import threaded
import pillpipe.threaded.pipeline as tpipe
from pillpipe.common.config import Config
from pillpipe.common.context import Context, WorkerCrashes
from pillpipe.common.model import PILL, FileRecord

from .conftest import ROOT, cli, configs, fast, in_flight_bound, run_sequential
from .test_cli import BAD_USAGE, REPORT_BLOCK, _check_tutorial_output, timeless

BACKENDS = ["asyncio", "trio"]
OTHERS = {"threaded": threaded.run, "asyncio": asyncio_version.run}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The anyio pytest plugin's fixture: coroutine-level tests run on both backends."""
    return request.param


def run_on(backend: str, config: Config):
    return npipe.run(dataclasses.replace(config, backend=backend))


def run_crashing(backend: str, config: Config):
    """Run a config whose worker loop must die: returns the report ``WorkerCrashes`` carries."""
    with pytest.raises(WorkerCrashes) as info:
        run_on(backend, config)
    return info.value.report


# Parity ------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs(max_files=150, max_workers=12))
def test_reports_equal_the_other_variants_on_both_backends(config: Config):
    reference = run_sequential(config)
    others = {name: run(config) for name, run in OTHERS.items()}
    for backend in BACKENDS:
        report = run_on(backend, config)
        assert report.variant == ("anyio" if backend == "asyncio" else "anyio-trio")
        assert report.comparable() == reference.comparable(), backend
        assert report == reference
        for name, other in others.items():
            assert report == other, (backend, name)
    assert reference.expected == config.files == reference.processed


@pytest.mark.parametrize("queue_size", [0, 2])
def test_real_waits_give_the_same_report_on_trio(queue_size):
    """On the asyncio backend tests/test_parity.py runs the same case ([anyio] is in RUNS)."""
    config = fast(files=30, time_scale=0.002, queue_size=queue_size, fail_rate=0.2, retries=1, seed=11, details=True)
    report = run_on("trio", config)
    assert report == run_sequential(config)
    assert 0 < report.failed < 30 and report.success + report.failed == 30


def test_memory_is_flat_with_bounded_streams_on_trio(in_flight_peak):
    """On the asyncio backend tests/test_parity.py runs the same case ([anyio] is in RUNS)."""
    report = run_on("trio", fast(files=5_000, queue_size=10))
    assert report.success == 5_000
    assert in_flight_peak[0] <= in_flight_bound(10)


# How the streams end -----------------------------------------------------------------
@pytest.mark.parametrize("queue_size", [0, 1, 4])
def test_every_worker_sees_its_stream_end_and_exits(backend, queue_size):
    report = run_on(backend, fast(files=40, s3_workers=4, api_workers=3, queue_size=queue_size, time_scale=0.001))
    workers = report.timing["workers"]
    names = set(workers) - {"Dispatcher"}
    assert names == {"S3-Worker-1", "S3-Worker-2", "S3-Worker-3", "S3-Worker-4",
                     "API-Worker-1", "API-Worker-2", "API-Worker-3", "Verifier"}
    for name in names:  # "pill_s" is when the worker's stream ended
        assert workers[name]["pill_s"] is not None, name
        assert workers[name]["exited_s"] >= workers[name]["pill_s"], name
    assert workers["Dispatcher"]["exited_s"] is not None
    assert sum(w["files"] for n, w in workers.items() if n.startswith("S3")) == 40


def test_a_stream_ends_only_when_its_last_producer_has_closed_its_clone(backend):
    """A slow last file keeps one S3 worker (one clone of the API stream) open: no API worker may
    see the end before it exits, and that file is not cut off."""
    report = run_on(backend, fast(files=12, time_scale=0.001, faults=("s3:id=12:slow=50",), details=True))
    assert report.success == 12 and report.files[-1]["outcome"] == "success"
    workers = report.timing["workers"]
    s3_done = max(w["exited_s"] for n, w in workers.items() if n.startswith("S3"))
    api_done = max(w["exited_s"] for n, w in workers.items() if n.startswith("API"))
    assert min(w["pill_s"] for n, w in workers.items() if n.startswith("API")) >= s3_done
    assert workers["Verifier"]["pill_s"] >= api_done


def test_no_pill_is_ever_sent_and_every_clone_is_closed(backend, monkeypatch):
    sent: list[object] = []
    streams: list[object] = []
    put, start = npipe._put, npipe._start

    async def spy_put(ctx, me, stream, record):
        sent.append(record)
        await put(ctx, me, stream, record)

    def spy_start(tg, ctx, stage, index, target, *args):
        streams.extend(a for a in args if hasattr(a, "statistics"))
        return start(tg, ctx, stage, index, target, *args)

    monkeypatch.setattr(npipe, "_put", spy_put)
    monkeypatch.setattr(npipe, "_start", spy_start)
    report = run_on(backend, fast(files=25, s3_workers=3, api_workers=2, queue_size=2))
    assert report.success == 25
    assert len(sent) == 3 * 25 and all(isinstance(r, FileRecord) for r in sent) and PILL not in sent
    assert len(streams) == 1 + 2 * 3 + 2 * 2 + 1  # one clone per end each task holds
    for stream in streams:
        stats = stream.statistics()
        assert (stats.open_send_streams, stats.open_receive_streams, stats.current_buffer_used) == (0, 0, 0)


@pytest.mark.anyio
async def test_pipeline_runs_on_the_test_loop_and_names_every_task(monkeypatch):
    """Coroutine level, on both backends through anyio's pytest plugin."""
    ctx = Context(fast(files=30, s3_workers=5, api_workers=4, queue_size=2), "anyio", None)
    names: list[str] = []
    start = npipe._start

    def spy(tg, ctx_, stage, index, target, *args):
        worker = start(tg, ctx_, stage, index, target, *args)
        names.append(worker.name)
        return worker

    monkeypatch.setattr(npipe, "_start", spy)
    await npipe.pipeline(ctx)
    report = ctx.report()
    assert report.success == 30
    assert names == ["Dispatcher", *(f"S3-Worker-{i}" for i in range(1, 6)), *(f"API-Worker-{i}" for i in range(1, 5)),
                     "Verifier"]
    assert all(w["exited_s"] is not None for w in report.timing["workers"].values())


@pytest.mark.anyio
@pytest.mark.parametrize("size,checkpoints", [(1000, 0), (math.inf, 1000 // npipe.CEDE_EVERY)])
async def test_only_an_unbounded_send_cedes_when_it_need_not_wait(monkeypatch, size, checkpoints):
    """A send with room takes no checkpoint into a bounded stream (its producer waits when the
    buffer is full; a trip round the loop per 64 sends released the GIL so often that the state's
    writer thread starved), and one every CEDE_EVERY sends into an unbounded one (else its producer
    would never yield)."""
    taken = []

    async def checkpoint() -> None:
        taken.append(1)

    monkeypatch.setattr(npipe, "_SENT", itertools.count(1))
    monkeypatch.setattr(npipe.anyio.lowlevel, "checkpoint", checkpoint)
    send, receive = anyio.create_memory_object_stream[FileRecord](size)
    with send, receive:
        for i in range(1, 1001):
            await npipe._send(send, FileRecord(i, f"file_{i}"))
        assert receive.statistics().current_buffer_used == 1000
    assert len(taken) == checkpoints


# Mirror ------------------------------------------------------------------------------
def _functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_mirrors_the_other_pipelines():
    public = [n for n in _functions(ROOT / "threaded" / "pipeline.py") if not n.startswith("_")]
    assert [n for n in _functions(ROOT / "anyio_version" / "pipeline.py") if not n.startswith("_")] == public
    for name in public:  # a queue parameter becomes the send or receive end of a stream
        theirs = [p.replace("_queue", "") for p in inspect.signature(getattr(tpipe, name)).parameters]
        ours = [p.replace("_send", "").replace("_receive", "").replace("streams", "queues")
                for p in inspect.signature(getattr(npipe, name)).parameters]
        assert ours == theirs, name
        assert inspect.iscoroutinefunction(getattr(npipe, name)) == (name != "run"), name


# Reliability: faults, timeouts, dead workers -------------------------------------------
@pytest.mark.parametrize("faults,retries", [(("s3:id=3:raise",), 0), (("api:id=5:raise",), 1),
                                            (("s3:id=3:raise:times=1",), 1), (("api:id=2:slow=30",), 0)])
def test_faults_give_the_sequential_report(backend, faults, retries):
    config = fast(files=10, time_scale=0.001, faults=faults, retries=retries, details=True)
    report = run_on(backend, config)
    assert report == run_sequential(config)
    assert report.success + report.failed == 10


def test_an_injected_raise_fails_that_file_only(backend):
    report = run_on(backend, fast(files=10, faults=("s3:id=3:raise",), details=True))
    failed = [f for f in report.files if f["outcome"] == "failed"]
    assert [(f["id"], f["failed_stage"], f["error"]) for f in failed] == [(3, "s3", "injected s3 error")]
    assert report.success == 9


def test_a_hang_is_cut_by_the_stage_timeout(backend):
    config = fast(files=6, faults=("s3:id=2:hang", "api:id=4:hang:times=1"), stage_timeout=0.2, retries=0,
                  details=True)
    report = run_on(backend, config)
    assert report == run_sequential(config)
    failed = {f["id"]: f["error"] for f in report.files if f["outcome"] == "failed"}
    assert failed == {2: "timeout after 0.2s", 4: "timeout after 0.2s"}


def test_a_dying_worker_fails_its_file_and_its_siblings_carry_on(backend):
    report = run_crashing(backend, fast(files=30, s3_workers=2, time_scale=0.001, faults=("s3:worker=2:after=0:die",),
                                        details=True))
    crashed = [f for f in report.files if f["outcome"] == "failed"]
    assert len(crashed) == 1 and crashed[0]["error"].startswith("worker crashed")
    assert report.success == 29 and report.stopped_by is None
    assert report.errors == ["S3-Worker-2: S3-Worker-2 died (injected) after 0 files"]
    assert report.timing["workers"]["S3-Worker-1"]["files"] == 29


@pytest.mark.parametrize("fault", ["s3:worker=*:after=2:die", "api:worker=*:after=2:die", "verifier:after=3:crash"])
@pytest.mark.parametrize("queue_size", [0, 1])
def test_a_dead_stage_is_drained_and_nothing_blocks(backend, fault, queue_size):
    report = run_crashing(backend, fast(files=40, time_scale=0.001, queue_size=queue_size, faults=(fault,)))
    assert report.stopped_by == "crash"
    assert report.expected == report.terminal_total == 40
    assert report.cancelled > 0 and report.aborted == 0
    assert report.success < 40


def test_config_rejects_an_unknown_backend():
    with pytest.raises(ValueError, match="--backend"):
        Config(backend="curio")


# The command line --------------------------------------------------------------------
@pytest.mark.slow
def test_no_flags_reproduce_the_tutorials_run():
    done = cli("anyio_version")
    assert done.returncode == 0, done.stderr
    _check_tutorial_output(done.stdout)
    assert done.stderr == ""


def test_the_tutorials_run_on_trio_and_through_pillpipe():
    for command in (("anyio_version", "--backend", "trio"), ("pillpipe", "run", "anyio")):
        done = cli(*command, "--time-scale", "0.005")
        assert done.returncode == 0, done.stderr
        # trio does not promise which idle worker a stream wakes first: who copies file_100 may vary
        _check_tutorial_output(re.sub(r"Uploader S3-Worker-\d+ (copy|stored) file (\[?)file_100\.",
                                      r"Uploader S3-Worker-1 \1 file \2file_100.", done.stdout))
        assert done.stdout.count("is DONE") == 3 and done.stdout.count("got DONE signal") == 2


def test_json_report_equals_the_threaded_one_on_both_backends():
    args = ("--files", "60", "--time-scale", "0", "--json", "--quiet", "--seed", "9", "--fail-rate", "0.2",
            "--retries", "1", "--queue-size", "3", "--s3-workers", "5", "--api-workers", "4", "--details")
    reference = json.loads(cli("threaded", *args).stdout)
    del reference["variant"], reference["timing"]
    for backend in BACKENDS:
        report = json.loads(cli("anyio_version", *args, "--backend", backend).stdout)
        assert report.pop("variant") == ("anyio" if backend == "asyncio" else "anyio-trio")
        del report["timing"]
        assert report == reference


def test_quiet_prints_only_the_report_and_help_names_the_backend():
    assert timeless(cli("anyio_version", "--time-scale", "0", "--quiet", "--backend", "trio").stdout) == REPORT_BLOCK
    text = cli("anyio_version", "--help").stdout
    assert "--backend" in text and "anyio variant only" in " ".join(text.split())


@pytest.mark.parametrize("args", [*BAD_USAGE, ["--backend", "curio"], ["--backend"]],
                         ids=[" ".join(a) for a in [*BAD_USAGE, ["--backend", "curio"], ["--backend"]]])
def test_bad_usage_is_one_line_and_exit_2(args):
    _one_line_usage_error(cli("anyio_version", *args))


def test_trio_requested_but_not_installed_is_a_usage_error():
    hide_trio = ("import runpy, sys; sys.modules['trio'] = None; sys.argv[0] = 'anyio_version'; "
                 "runpy.run_module('anyio_version', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", hide_trio, "--backend", "trio"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    _one_line_usage_error(done)
    assert "trio" in done.stderr


def _one_line_usage_error(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("fault,code", [("s3:id=3:raise", 1), ("s3:worker=*:after=2:die", 70)])
def test_exit_codes_for_a_failed_file_and_a_dead_stage(backend, fault, code):
    done = cli("anyio_version", "--backend", backend, "--files", "40", "--time-scale", "0", "--quiet", "--fault", fault)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr


# Signals -----------------------------------------------------------------------------
SLOW = ("--files", "20", "--s3-workers", "2", "--api-workers", "1", "--queue-size", "1", "--s3-latency", "1", "1",
        "--api-latency", "1", "1", "--time-scale", "0.3", "--json", "--details")


def _signalled(backend: str, *args: str, signals: list[tuple[signal.Signals, str]]) -> tuple[int, dict]:
    """Start the CLI, and for each (signal, line): wait until ``line`` appears on stderr, then send it."""
    proc = subprocess.Popen([sys.executable, "-m", "anyio_version", "--backend", backend, *SLOW, *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8")
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=lambda: [*map(lines.put, proc.stderr), lines.put(None)], daemon=True)
    reader.start()
    try:
        for sig, ready in signals:
            while (line := lines.get(timeout=60)) is not None and ready not in line:
                pass  # never sleep blindly: the run says when it is ready
            assert line is not None, f"the run ended before {ready!r}"
            proc.send_signal(sig)
        proc.wait(timeout=60)
        out = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
        proc.stdout.close()
        proc.stderr.close()
    return proc.returncode, json.loads(out)


def test_sigterm_drains_started_files_finish_the_rest_are_cancelled(backend):
    code, report = _signalled(backend, signals=[(signal.SIGTERM, "copy file")])
    assert code == 143 and report["stopped_by"] == "SIGTERM"
    assert report["success"] >= 1 and report["cancelled"] >= 1 and report["aborted"] == 0
    assert report["success"] + report["cancelled"] == 20 == report["expected"]
    started = [f for f in report["files"] if f["s3_attempts"] > 0]
    assert all(f["outcome"] == "success" for f in started)


def test_a_second_sigint_aborts_what_the_drain_is_waiting_for(backend):
    code, report = _signalled(backend, "--fault", "s3:id=1:hang",
                              signals=[(signal.SIGINT, "copy file file_100"), (signal.SIGINT, "draining")])
    assert code == 130 and report["stopped_by"] == "SIGINT"
    outcomes = {f["id"]: f["outcome"] for f in report["files"]}
    assert outcomes[1] == "aborted"
    assert report["expected"] == 20 and report["cancelled"] >= 1


def test_the_shutdown_grace_ends_a_drain_that_would_never_finish(backend):
    code, report = _signalled(backend, "--fault", "s3:id=1:hang", "--shutdown-grace", "0.3",
                              signals=[(signal.SIGTERM, "copy file file_100")])
    assert code == 143 and report["stopped_by"] == "SIGTERM"
    assert {f["id"]: f["outcome"] for f in report["files"]}[1] == "aborted"
    assert report["expected"] == 20
