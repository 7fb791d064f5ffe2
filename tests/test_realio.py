"""The pipeline on real sockets (``--io real``) in every model: threads (boto3 + urllib3, or httpx),
asyncio (aiobotocore + aiohttp, or both on httpx), anyio on asyncio and on trio (aiobotocore on
httpx + httpx).  Against our services (started and stopped here, on 127.0.0.1) and against
SeaweedFS, a real S3 server we did not write.

The reports of every model equal each other and the simulated report for the same flags: the same
hints drive the servers' latencies and faults as drive the simulation's waits.  Then the failures
only real sockets have: the API server killed mid-run, a hung call, a 503 storm, Ctrl-C while
calls are in flight.  Nothing is lost in any of them, nothing hangs.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from pillpipe import anyio_version, asyncio_version, threaded
from pillpipe.common.calls import Endpoints
from pillpipe.common.cli import EXIT_SETUP, main
from pillpipe.common.config import Config, SetupError, applicable
from pillpipe.common.report import Report
from pillpipe.common.workload import DEST_BUCKET
from pillpipe.services.embedded import EmbeddedServices, fetch_stats
from pillpipe.services.seaweed import SeaweedFS

from .conftest import ROOT

pytestmark = pytest.mark.timeout(120)

# name -> (run, what the model's flags add): every model, and the same-library controls
MODELS: dict[str, tuple[Callable[[Config], Report], dict[str, Any]]] = {
    "threaded": (threaded.run, {}),
    "threaded-httpx": (threaded.run, {"http_client": "httpx"}),
    "asyncio": (asyncio_version.run, {}),
    "asyncio-httpx": (asyncio_version.run, {"http_client": "httpx"}),
    "anyio": (anyio_version.run, {}),
    "anyio-trio": (anyio_version.run, {"backend": "trio"}),
}
BASE = ["threaded", "asyncio", "anyio", "anyio-trio"]  # one per model and backend
COMMAND = {"threaded": ["threaded"], "asyncio": ["asyncio_version"], "anyio": ["anyio_version"],
           "anyio-trio": ["anyio_version", "--backend", "trio"]}
# Faults of every kind, a hang cut by the stage timeout far from every latency (a real client's
# timer decides a call near the boundary: keep them apart), retries with backoff.
FAULTY = dict(files=24, time_scale=0.01, fail_rate=0.25, retries=2, retry_backoff=0.02, stage_timeout=1.0,
              faults=("s3:id=3:raise", "api:id=5:hang:times=2", "s3:id=7:slow=3", "api:id=9:raise:times=1"))


@pytest.fixture(scope="module")
def services():
    with EmbeddedServices(objects=64) as running:
        yield running


def real(endpoints: Endpoints, model: str = "threaded", **flags: Any) -> Config:
    flags.setdefault("quiet", True)
    return Config(io="real", endpoints=endpoints, **{**MODELS[model][1], **flags})


def run(model: str, config: Config) -> Report:
    return MODELS[model][0](config)


def simulated(**flags: Any) -> Report:
    return threaded.run(Config(quiet=True, **flags))


def attempts(report: Report, stage: str) -> tuple[int, int]:
    """(attempts made, attempts that failed) at ``stage``, from the per-file details."""
    made = failed = 0
    for f in report.files or []:
        n = f[f"{stage}_attempts"]
        made += n
        failed += n - (1 if n and f["failed_stage"] != stage else 0)
    return made, failed


# Parity ------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", list(MODELS))
def test_real_reports_equal_the_simulated_one(model, services):
    """Statuses, attempts, destination keys and error texts: every model and client library on real
    sockets gives exactly the simulated report (all but ``variant`` and ``timing``)."""
    report = run(model, real(services.endpoints, model, details=True, **FAULTY))
    assert report == simulated(details=True, **FAULTY)
    assert report.success and report.failed and report.expected == 24
    io = report.timing["io"]
    s3_made, s3_failed = attempts(report, "s3")
    api_made, api_failed = attempts(report, "api")
    assert io["calls"]["s3"]["calls"] == s3_made and io["calls"]["api"]["calls"] == api_made
    assert io["calls"]["verify"]["calls"] == 2 * report.success  # a HEAD and a GET per file that got there
    assert io["failed_attempts"]["timeout"] == 2  # file 5's two hung posts, each cut at 1 s
    assert sum(io["failed_attempts"].values()) == s3_failed + api_failed
    assert io["calls"]["api"]["p99_ms"] >= 990 > io["calls"]["api"]["p50_ms"]  # the histogram is within 1%
    assert io["hints"] is True and io["cpu_per_file_ms"] > 0
    assert io["pools"] == {"s3": 4, "api": 3}  # the workers (3 and 2), + 1 for the verifier
    assert io["connections"]["api"] >= 1


@pytest.mark.parametrize("model", BASE)
def test_the_verifier_checks_for_real(model, services, tmp_path):
    """What the simulation cannot see, the verifier does: an object copied with the wrong size fails
    at verify, and a source object that is not there fails the copy (404); the rest succeed."""
    services.seed([("ten-bytes", 10)])
    records = [{"id": 1, "name": "short.pdf", "source_key": "ten-bytes", "size": 20},
               {"id": 2, "name": "absent.pdf", "source_key": "no-such-object"},
               {"id": 3, "name": "right.pdf", "source_key": "ten-bytes", "size": 10}]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = run(model, real(services.endpoints, model, input=str(path), time_scale=0, details=True, seed=41))
    outcome = {f["id"]: (f["outcome"], f["failed_stage"], f["error"]) for f in report.files}
    assert outcome == {1: ("failed", "verify", "s3 head: size 10, expected 20"),
                       2: ("failed", "s3", "s3 copy: HTTP 404 NoSuchKey"),
                       3: ("success", None, None)}
    assert simulated(input=str(path), time_scale=0).success == 3  # a wait has nothing to check


# Failures only real sockets have -------------------------------------------------------------
@pytest.mark.parametrize("model", list(MODELS))
def test_a_503_storm_is_retried_with_backoff(model, services):
    """Most attempts answered 503 (the fail rate, played by the servers): every one is retried with
    backoff, counted by class, and the outcome is the simulated one."""
    flags = dict(files=40, time_scale=0.002, fail_rate=0.6, retries=5, retry_backoff=0.01, details=True, seed=3)
    before = services.stats()
    report = run(model, real(services.endpoints, model, **flags))
    after = services.stats()
    assert report == simulated(**flags)
    storm = sum(after[s]["statuses"].get("503", 0) - before[s]["statuses"].get("503", 0) for s in ("s3", "api"))
    (_, s3_failed), (_, api_failed) = attempts(report, "s3"), attempts(report, "api")
    assert storm == s3_failed + api_failed == report.timing["io"]["failed_attempts"]["unavailable"] > 40
    assert report.success > report.failed > 0


class Cli:
    """``python -m <model> --json ...`` as a user runs it; both pipes read by threads, so every wait
    here is bounded.  ``session``: in a session of its own, so a signal can go to its whole process
    group, as a terminal's Ctrl-C does."""

    def __init__(self, model: str, *args: str, session: bool = False, env: dict[str, str] | None = None,
                 stdin: str | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", *COMMAND[model], "--json", *args], cwd=ROOT,
                                     stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})},
                                     start_new_session=session)
        self.err: list[str] = []
        self.out: list[str] = []
        self._readers = [threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True),
                         threading.Thread(target=lambda: self.out.append(self.proc.stdout.read()), daemon=True)]
        for reader in self._readers:
            reader.start()
        if stdin is not None:
            self.proc.stdin.write(stdin)
            self.proc.stdin.close()

    def wait_until(self, ready: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"not ready (exit {self.proc.poll()}); stderr:\n{''.join(self.err)}")
            time.sleep(0.02)

    def finish(self, timeout: float = 60) -> tuple[int, dict[str, Any]]:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"hung; stderr:\n{''.join(self.err)}") from None
        for reader in self._readers:
            reader.join(10)
        out = "".join(self.out)
        assert out.strip(), f"no report (exit {code}); stderr:\n{''.join(self.err)}"
        return code, json.loads(out)


def _served_by(pid: int) -> list[int]:
    """The PIDs of our embedded servers that process ``pid`` started (asked of /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"pillpipe.services.server" in cmdline and f"{pid}".encode() in cmdline:
                found.append(int(entry))
    return found


@pytest.mark.parametrize("model", BASE)
def test_the_api_server_killed_mid_run(model):
    """The API server vanishes after a few uploads: every post and check after it is refused (or
    finds its connection lost), retried, and fails; the report is printed, exit 1, and nothing hangs."""
    with EmbeddedServices(objects=30) as services:
        e = services.endpoints
        cli = Cli(model, "--io", "real", "--s3-endpoint", e.s3_url, "--api-url", e.api_url, "--files", "30",
                  "--time-scale", "0.05", "--retries", "2", "--retry-backoff", "0.01", "--details")
        cli.wait_until(lambda: fetch_stats(e.api_url)["records"] >= 4)
        services.api.kill()
        started = time.monotonic()
        code, report = cli.finish()
        assert time.monotonic() - started < 30
    assert code == 1 and report["expected"] == 30 and report["stopped_by"] is None
    assert report["success"] + report["failed"] == 30 and report["failed"] >= 20  # nothing lost or aborted
    errors = {f["error"] for f in report["files"] if f["outcome"] == "failed"}
    assert errors <= {"api post: connection refused", "api post: connection lost", "api get: connection refused",
                      "api get: connection lost"}, errors
    failed_posts = [f for f in report["files"] if f["failed_stage"] == "api"]
    assert failed_posts and all(f["api_attempts"] == 3 for f in failed_posts)  # retried, then failed
    classes = report["timing"]["io"]["failed_attempts"]
    assert set(classes) <= {"refused", "lost"} and classes.get("refused", 0) > 0


@pytest.mark.parametrize("model", BASE)
def test_ctrl_c_drains_the_calls_in_flight_not_the_servers(model):
    """The embedded default, no endpoint flags: a terminal's Ctrl-C reaches the whole foreground
    process group.  The pipeline drains - every call in flight completes and is verified for real,
    so the servers it started are still there - the rest is cancelled; then they are stopped."""
    cli = Cli(model, "--io", "real", "--files", "40", "--time-scale", "0.05", "--details", session=True)
    cli.wait_until(lambda: sum("uploaded" in line for line in cli.err) >= 3)
    os.killpg(cli.proc.pid, signal.SIGINT)
    code, report = cli.finish()
    assert code == 130 and report["stopped_by"] == "SIGINT"
    assert report["success"] >= 3 and report["cancelled"] > 0
    assert report["success"] + report["cancelled"] == report["expected"] == 40  # no failure, nothing aborted
    assert not _served_by(cli.proc.pid)  # and its services are gone


@pytest.mark.parametrize("model", BASE)
def test_a_hung_call_is_bounded_and_an_abort_never_waits_forever(model):
    """A call that never returns is cut by --stage-timeout.  Aborting while it hangs: the coroutine
    models cancel it at once; a thread in a socket read cannot be woken, so the threaded run ends
    when the call's finite timeout fires.  Either way the file ends aborted, the rest finish."""
    with EmbeddedServices(objects=6) as services:
        e = services.endpoints
        cli = Cli(model, "--io", "real", "--s3-endpoint", e.s3_url, "--api-url", e.api_url, "--files", "6",
                  "--time-scale", "0.01", "--fault", "api:id=1:hang", "--stage-timeout", "4", "--details")
        cli.wait_until(lambda: fetch_stats(e.api_url)["hung"] >= 1 and sum("Verified" in x for x in cli.err) >= 5)
        cli.proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        cli.proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        code, report = cli.finish()
        took = time.monotonic() - started
    assert code == 130 and report["aborted"] == 1 and report["success"] == 5
    assert [f["outcome"] for f in report["files"] if f["id"] == 1] == ["aborted"]
    assert took < (8 if model == "threaded" else 3)  # threads: until the 4 s timeout fires; coroutines: at once


# The embedded default, from the command line ---------------------------------------------------
def test_every_model_prints_the_same_report_with_no_setup():
    """``python -m <model> --io real``: the services start by themselves, and the three models print
    one report (and the simulated one)."""
    flags = ["--time-scale", "0.05", "--files", "12", "--fail-rate", "0.2", "--retries", "1"]
    reports = {}
    for model in ("threaded", "asyncio", "anyio"):
        code, reports[model] = Cli(model, "--io", "real", *flags).finish()
        assert code in (0, 1)
    code, reports["sim"] = Cli("threaded", *flags).finish()
    comparable = [{k: v for k, v in r.items() if k not in ("variant", "timing")} for r in reports.values()]
    assert all(c == comparable[0] for c in comparable) and comparable[0]["success"] >= 8


def test_tls_end_to_end():
    """``--tls``: the embedded services serve https with a CA made for the run, which the clients trust."""
    code, report = Cli("anyio-trio", "--io", "real", "--tls", "--files", "4", "--time-scale", "0").finish()
    assert (code, report["success"]) == (0, 4)


def test_input_records_are_seeded_and_stdin_is_read_once():
    """``--input -`` with the embedded default: the objects the records name (other buckets, keys and
    sizes) are seeded from a copy of stdin, and the run reads the same records."""
    records = [{"id": 7, "name": "report.csv", "source_bucket": "archive", "source_key": "2024/report.csv",
                "size": 5000},
               {"id": 8, "name": "naïve name.pdf", "size": 1},
               {"id": 7, "name": "duplicate.pdf"}, {"name": "no id"}]
    text = "".join(json.dumps(r) + "\n" for r in records)
    code, report = Cli("asyncio", "--io", "real", "--input", "-", "--time-scale", "0", "--details",
                       stdin=text).finish()
    assert (code, report["success"], report["duplicate"], report["invalid"]) == (1, 2, 1, 1)
    assert report["timing"]["io"]["calls"]["verify"]["calls"] == 4


def test_our_own_services_given_by_url_play_the_hints():
    """``pillpipe serve``'s services given with --s3-endpoint/--api-url answer as ours: the run sends
    them its hints (and any credentials do); SeaweedFS's would not, so there the run plays them."""
    with EmbeddedServices(objects=4) as services:
        e = services.endpoints
        code, report = Cli("threaded", "--io", "real", "--s3-endpoint", e.s3_url + "/", "--api-url", e.api_url,
                           "--files", "4", "--time-scale", "0", "--fault", "s3:id=2:raise").finish()
        assert services.stats()["s3"]["statuses"].get("503") == 1  # the server answered the injected 503
    assert code == 1 and report["failed"] == 1 and report["timing"]["io"]["hints"] is True


def test_credentials_are_never_printed(services, capsys):
    config = real(services.endpoints, details=True, files=3, time_scale=0, quiet=False)
    report = threaded.run(config)
    printed = capsys.readouterr()
    secrets = (services.endpoints.access_key, services.endpoints.secret_key)
    for text in (report.to_json(), report.format(), printed.out, printed.err, repr(config), repr(config.endpoints)):
        assert not any(secret in text for secret in secrets)


# Against SeaweedFS, a real S3 server -----------------------------------------------------------
SEAWEEDFS = pytest.mark.xdist_group("seaweedfs")  # one worker starts the servers: several at once starve each other


@pytest.fixture(scope="module")
def seaweedfs():
    with SeaweedFS(objects=24) as server:
        client = server.client()  # its first write to a bucket grows a volume first (seconds, at times)
        client.put_object(Bucket=DEST_BUCKET, Key="warm-up", Body=b"")
        client.close()
        yield server


@SEAWEEDFS
@pytest.mark.parametrize("model", BASE)
def test_the_same_job_against_seaweedfs(model, seaweedfs, services):
    """SeaweedFS ignores hints, so the pipeline plays the injected faults itself: the outcome is still
    the simulated one, copies verified by SeaweedFS's own HEAD."""
    endpoints = Endpoints(seaweedfs.url, services.endpoints.api_url, access_key=seaweedfs.access_key,
                          secret_key=seaweedfs.secret_key, hints=False)
    flags = {**FAULTY, "time_scale": 0, "stage_timeout": 2.0, "details": True,  # 2 s: far above its latency
             "faults": ("s3:id=3:raise", "api:id=5:hang:times=1", "s3:id=7:slow=3", "api:id=9:raise:times=1")}
    report = run(model, real(endpoints, model, **flags))
    assert report == simulated(**flags)
    io = report.timing["io"]
    assert io["hints"] is False and io["calls"]["verify"]["calls"] == 2 * report.success > 0
    assert io["failed_attempts"]["timeout"] == 1  # played here: SeaweedFS never saw a hint


@SEAWEEDFS
def test_seaweedfs_from_the_command_line(seaweedfs, services):
    env = {"AWS_ACCESS_KEY_ID": seaweedfs.access_key, "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key}
    code, report = Cli("threaded", "--io", "real", "--s3-endpoint", seaweedfs.url, "--api-url",
                       services.endpoints.api_url, "--files", "10", "--time-scale", "0", env=env).finish()
    assert (code, report["success"], report["timing"]["io"]["hints"]) == (0, 10, False)


# The command line's rules ----------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--s3-endpoint", "http://127.0.0.1:9"], "--s3-endpoint applies to --io real only"),
    (["--io", "real", "--api-url", "ftp://127.0.0.1:9"], "needs http:// or https:// and a host"),
    (["--io", "real", "--api-url", "http://127.0.0.1:9/v1"], "no path"),
    (["--io", "real", "--pool", "0"], "--pool must be a whole number from 1 to 1_000_000 (got 0)"),
    (["--io", "real", "--http-client", "aiohttp"], "--http-client aiohttp is not a client of the threaded model"),
    (["--io", "real", "--http-client", "curl"], "is not one of urllib3, httpx, aiohttp"),
    (["--io", "real", "--ca-file", "ca.pem"], "--ca-file applies to https:// endpoints"),
    (["--io", "real", "--tls", "--s3-endpoint", "http://127.0.0.1:9", "--api-url", "http://127.0.0.1:9"],
     "--tls makes the embedded services serve https"),
])
def test_bad_real_io_flags_are_one_line_usage_errors(args, message):
    done = subprocess.run([sys.executable, "-m", "threaded", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and done.stdout == "" and len(done.stderr.splitlines()) == 1
    assert message in done.stderr, done.stderr


def test_real_io_applies_to_the_concurrent_models_only():
    config = Config(io="real", http_client="httpx")
    assert [applicable(config, v) is None for v in ("threaded", "asyncio", "anyio", "anyio-trio")] == [True] * 4
    assert "the sequential reference only simulates" in applicable(config, "sequential")
    assert "not a client of the anyio model" in applicable(Config(io="real", http_client="aiohttp"), "anyio")


def test_services_that_cannot_start_are_one_line_and_exit_69(capsys):
    def failing(config: Config):
        raise SetupError("the embedded services did not start: port taken")

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert main(threaded.run, "prog", ["--io", "real"], services=failing) == EXIT_SETUP == 69
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert capsys.readouterr().err.strip() == "prog: error: the embedded services did not start: port taken"


def test_the_core_opens_no_clients_and_imports_no_client_library_when_simulating():
    code = ("import sys; from pillpipe import threaded, asyncio_version, anyio_version; "
            "from pillpipe.common.config import Config; c = Config(files=3, time_scale=0, quiet=True); "
            "[m.run(c) for m in (threaded, asyncio_version, anyio_version)]; "
            "print(sorted(m for m in ('boto3', 'botocore', 'aiobotocore', 'aiohttp', 'httpx2', 'urllib3') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_every_real_call_has_a_finite_timeout():
    from pillpipe.common.realio import RealIO

    e = Endpoints("http://127.0.0.1:1", "http://127.0.0.1:2")
    assert RealIO(Config(io="real", endpoints=e)).timeout == pytest.approx(12.0)  # 10 s past the 2 s latency
    slow = Config(io="real", endpoints=e, api_latency=(1, 3), faults=("api:id=1:slow=4",))
    assert RealIO(slow).timeout == pytest.approx(22.0)
    assert RealIO(dataclasses.replace(slow, stage_timeout=0.5)).timeout == 0.5
    assert RealIO(Config(io="real", endpoints=e, pool=9)).pools == {"s3": 9, "api": 9}


# The benchmark scenario ------------------------------------------------------------------------
def test_the_real_benchmark_scenario_runs_what_it_plans_and_renders(tmp_path):
    """A small plan of ``benchmarks/scenarios/real.py``: each point a fresh probe with its own
    services; count() agrees with what run() did; the reports agree; summary and plots render."""
    from pillpipe.benchmarks.harness import interpreter
    from pillpipe.benchmarks.scenario import Bench
    from pillpipe.benchmarks.scenarios.real import SCENARIO, Plan

    plan = Plan(repeats=1, latency_models=("asyncio",), latency_workers=(), pool_models=("threaded",),
                pool_workers=(4,), cpu_models=("anyio-trio",), cpu_files=20, tls_models=(),
                seaweed_models=())
    bench = Bench(False, [interpreter()], quick=False)
    result = SCENARIO.run(bench, plan)
    assert bench.steps == SCENARIO.count(plan, bench) == 5  # latency: real and simulated
    targets = SCENARIO.targets(result)  # the parity targets must hold; efficiency is the benchmark's to judge
    assert targets and all(t.met for t in targets if "same report" in t.target), targets
    assert [p["pool"] for p in result["pool"]] == [5, 10]
    assert all(p["success"] == [20] for p in result["cpu"])
    assert SCENARIO.summary(result).startswith("## Real I/O")
    for path in SCENARIO.plots(result, tmp_path):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
