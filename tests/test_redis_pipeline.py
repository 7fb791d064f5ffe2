"""The pipeline across processes on Redis (``--broker``): a real redis-server on a free loopback port
per module, real ``pillpipe worker`` / ``pillpipe dispatch`` processes.

Every run has its own run id on the module's server (or a server of its own when a test kills it).
Without redis-server (or redis-py) these tests skip, saying how to install it - except under CI=true,
where they fail (``tests/test_broker.py``'s rule).
"""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from pillpipe import asyncio_version, threaded
from pillpipe.common.config import Config
from pillpipe.services.process import free_port
from pillpipe.services.redis import RedisServer

from .conftest import ROOT, cli, fast, run_sequential
from .test_broker import need_redis

RUNS = {"threaded": threaded.run, "asyncio": asyncio_version.run}


@pytest.fixture(scope="module")
def server():
    need_redis()
    with RedisServer() as redis_server:
        yield redis_server


def new_run() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def report_of(done) -> dict:
    """The JSON report a command printed, minus what may differ between runs of one workload."""
    report = json.loads(done.stdout)
    report.pop("variant"), report.pop("timing")
    return report


def reference(**flags) -> dict:
    report = run_sequential(fast(**flags)).comparable()
    return report


WORKLOAD = dict(files=60, fail_rate=0.2, retries=1, seed=7, details=True)


# One process on the broker's queues -----------------------------------------------------------
@pytest.mark.parametrize("variant", list(RUNS))
@pytest.mark.parametrize("queue_size", [0, 3])
def test_a_run_on_the_broker_s_queues_reports_what_an_in_process_run_does(server, variant, queue_size):
    config = fast(**WORKLOAD, queue_size=queue_size, broker=server.url, run_id=new_run())
    report = RUNS[variant](config)
    assert report.comparable() == reference(**WORKLOAD, queue_size=queue_size)
    assert report.expected == report.terminal_total == 60 and report.processed == 60
    assert 0 < report.failed < 60


@pytest.mark.parametrize("variant", list(RUNS))
def test_a_run_with_real_waits_on_the_broker_interleaves_and_still_agrees(server, variant):
    flags = dict(files=30, time_scale=0.002, fail_rate=0.2, retries=1, seed=11, s3_workers=4, api_workers=3)
    report = RUNS[variant](fast(**flags, broker=server.url))
    assert report.comparable() == reference(**flags)


# Bad input and a broker that is not there -----------------------------------------------------
@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "redis://", "redis://h:99999", "redis://h:1/x"])
def test_a_bad_broker_url_is_one_line_and_exit_2(url):
    done = cli("pillpipe", "run", "asyncio", "--broker", url, "--files", "1", "--time-scale", "0")
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pillpipe run asyncio: error: --broker "), lines


@pytest.mark.parametrize("flags", [["--shutdown", "relay"], ["--state", "s.db"], ["--batch", "4"],
                                   ["--processes", "2", "--broker", ""]])
def test_what_a_run_across_processes_does_not_do_is_refused_in_one_line(flags):
    argv = ["--broker", "redis://127.0.0.1:1/0", *flags] if "--broker" not in flags else flags
    done = cli("pillpipe", "run", "threaded", *argv, "--files", "1", "--time-scale", "0")
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "error: --" in done.stderr, done.stderr


def test_anyio_and_the_sequential_reference_refuse_a_broker_in_one_line():
    for variant in ("anyio", "sequential"):
        done = cli("pillpipe", "run", variant, "--broker", "redis://127.0.0.1:1/0", "--files", "1")
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
        assert "--broker redis://127.0.0.1:1/0 applies to the threaded and asyncio variants only" in done.stderr


@pytest.mark.parametrize("variant", list(RUNS))
def test_a_broker_that_is_down_at_the_start_is_one_line_and_exit_69_fast(variant):
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = cli("pillpipe", "run", variant, "--broker", url, "--files", "5", "--time-scale", "0", timeout=30)
    assert done.returncode == 69 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and f"broker {url} unreachable" in lines[0], lines


def test_a_run_id_already_on_the_broker_is_refused(server):
    run = new_run()
    RUNS["threaded"](fast(files=3, broker=server.url, run_id=run))
    done = cli("pillpipe", "run", "threaded", "--broker", server.url, "--run", run, "--files", "3",
               "--time-scale", "0")
    assert done.returncode == 2 and f"--run {run}: a run of that name is already on the broker" in done.stderr


def test_the_embedded_default_is_untouched_by_the_broker_flags():
    assert Config().broker is None and Config().processes == 0 and Config().role == "all"


# Across processes ------------------------------------------------------------------------------
FLAGS = ["--files", "60", "--fail-rate", "0.2", "--retries", "1", "--seed", "7", "--details", "--time-scale", "0",
         "--json", "--quiet"]


def popen_worker(server, run: str, stage: str, model: str, workers: int = 1, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "pillpipe", "worker", "--broker", server.url, "--run", run, "--stage", stage,
            "--model", model, "--workers", str(workers), "--quiet", *extra]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(children: list[subprocess.Popen], timeout: float = 60) -> list[int | None]:
    """Each child's exit code, waiting (bounded) for it; one still running is killed by PID."""
    codes = []
    for child in children:
        try:
            codes.append(child.wait(timeout))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            codes.append(None)
    return codes


@pytest.mark.parametrize("variant", ["asyncio", "threaded"])
def test_run_with_worker_processes_prints_the_in_process_report(server, variant):
    done = cli("pillpipe", "run", variant, "--broker", server.url, "--processes", "2", *FLAGS, timeout=120)
    assert done.returncode == 1, done.stderr  # some files failed, by the seed
    assert report_of(done) == reference(**WORKLOAD)
    workers = json.loads(done.stdout)["timing"]["workers"]
    assert list(workers) == ["Dispatcher"]  # every S3, API and verify worker ran in a child process


def test_a_mixed_run_threads_and_coroutines_in_worker_processes_then_dispatch(server):
    run = new_run()
    children = [popen_worker(server, run, "s3", "threaded", 3), popen_worker(server, run, "s3", "asyncio", 2),
                popen_worker(server, run, "api", "asyncio", 2), popen_worker(server, run, "verify", "threaded")]
    try:
        done = cli("pillpipe", "dispatch", "--broker", server.url, "--run", run, *FLAGS, timeout=120)
    finally:
        codes = finished(children)
    assert done.returncode == 1, done.stderr
    assert report_of(done) == reference(**WORKLOAD)
    assert codes == [0, 0, 0, 0], [child.stderr.read() for child in children]


def test_a_worker_for_a_run_that_never_comes_says_so_within_its_wait(server):
    done = cli("pillpipe", "worker", "--broker", server.url, "--run", new_run(), "--stage", "s3", "--wait", "0.5",
               timeout=30)
    assert done.returncode == 69 and len(done.stderr.splitlines()) == 1
    assert "no run" in done.stderr and "pillpipe dispatch" in done.stderr


@pytest.mark.parametrize("argv, says", [
    (["--run", "r", "--stage", "s3"], "--broker"),
    (["--broker", "redis://127.0.0.1:1/0", "--run", "r", "--stage", "sss"], "'sss' is not one of s3, api, verify"),
    (["--broker", "http://x", "--run", "r", "--stage", "s3"], "not a Redis URL"),
    (["--broker", "redis://127.0.0.1:1/0", "--run", "r r", "--stage", "s3"], "a run id is"),
    (["--broker", "redis://127.0.0.1:1/0", "--run", "r", "--stage", "verify", "--workers", "2"], "one verifier"),
])
def test_a_worker_with_bad_flags_is_one_line_and_exit_2(argv, says):
    done = cli("pillpipe", "worker", *argv)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and says in done.stderr, done.stderr


def test_dispatch_needs_a_broker_and_a_run_and_its_help_says_what_it_does():
    done = cli("pillpipe", "dispatch", "--files", "1")
    assert done.returncode == 2 and "needs --broker URL and --run ID" in done.stderr
    helped = cli("pillpipe", "dispatch", "--help")
    assert helped.returncode == 0 and "pillpipe worker" in helped.stdout and "--model" in helped.stdout
    helped = cli("pillpipe", "worker", "--help")
    assert helped.returncode == 0 and "--stage" in helped.stdout and "lease" in helped.stdout
