"""Per-file errors, retries, timeouts, dead workers and a dead stage, a closed stdout: both variants."""
from __future__ import annotations

import subprocess
import sys

import pytest

from pillpipe.common.context import WorkerCrashes
from pillpipe.common.faults import InjectedCrash
from pillpipe.common.workload import dest_key

from .conftest import MODULES, ROOT, cli, fast

pytestmark = pytest.mark.timeout(60)


def by_id(report) -> dict[int, dict]:
    return {f["id"]: f for f in report.files}


def invariants(report, files: int) -> None:
    """Every file ends in exactly one terminal state and the counts add up."""
    assert report.expected == files == report.terminal_total
    ids = [f["id"] for f in report.files]
    assert sorted(ids) == list(range(1, files + 1))
    for name in ("success", "failed", "cancelled", "aborted"):
        assert getattr(report, name) == sum(f["outcome"] == name for f in report.files), name


def crashed(run, config):
    """Run a config in which some worker loop dies: ``run`` raises, the report rides along."""
    with pytest.raises(WorkerCrashes) as info:
        run(config)
    assert all(isinstance(e, InjectedCrash) for e in info.value.exceptions)
    return info.value, info.value.report


def test_one_file_raising_on_every_attempt_fails_alone(run):
    report = run(fast(files=10, retries=2, faults=("s3:id=5:raise",), details=True))
    invariants(report, 10)
    assert (report.success, report.failed, report.processed) == (9, 1, 10)
    bad = by_id(report)[5]
    assert bad["outcome"] == "failed" and bad["failed_stage"] == "s3"
    assert bad["error"] == "injected s3 error" and bad["s3_attempts"] == 3 and bad["api_attempts"] == 0
    assert report.errors == [] and report.stopped_by is None
    workers = report.timing["workers"]
    assert sum(w["files"] for n, w in workers.items() if n.startswith("S3")) == 10  # the worker kept consuming


def test_every_file_failing_in_the_api_stage(run):
    faults = tuple(f"api:id={i}:raise" for i in range(1, 9))
    report = run(fast(files=8, retries=1, faults=faults, details=True))
    invariants(report, 8)
    assert (report.success, report.failed, report.processed) == (0, 8, 8)
    for f in report.files:
        assert f["failed_stage"] == "api" and f["api_attempts"] == 2 and f["last_stage"] == "s3"
        assert f["dest_key"] == dest_key(0, f["name"])


@pytest.mark.parametrize("retries, outcome", [(2, "success"), (1, "failed")])
def test_a_transient_failure_within_and_beyond_the_retries(run, retries, outcome):
    report = run(fast(files=8, retries=retries, retry_backoff=0.01, time_scale=0.01,
                      faults=("api:id=7:raise:times=2",), details=True))
    invariants(report, 8)
    seven = by_id(report)[7]
    assert seven["outcome"] == outcome and seven["api_attempts"] == retries + 1
    assert report.success == 8 - (outcome == "failed")


def test_a_retried_copy_keeps_one_key_and_one_copy_downstream(run):
    report = run(fast(files=6, retries=3, seed=4, faults=("s3:id=3:raise:times=2",), details=True))
    invariants(report, 6)
    three = by_id(report)[3]
    assert three["outcome"] == "success" and three["s3_attempts"] == 3 and three["api_attempts"] == 1
    assert three["dest_key"] == dest_key(4, "file_102.pdf")
    assert report.processed == 6  # a second copy downstream would have reached the verifier twice


def test_a_hang_past_the_stage_timeout_fails_with_timeout(run):
    report = run(fast(files=6, time_scale=0.01, stage_timeout=0.3, faults=("api:id=4:hang",), details=True))
    invariants(report, 6)
    four = by_id(report)[4]
    assert four["outcome"] == "failed" and four["error"] == "timeout after 0.3s" and four["failed_stage"] == "api"
    assert report.success == 5


def test_a_hang_on_the_first_attempt_only_succeeds_on_retry(run):
    report = run(fast(files=4, retries=1, stage_timeout=0.2, faults=("s3:id=2:hang:times=1",), details=True))
    two = by_id(report)[2]
    assert two["outcome"] == "success" and two["s3_attempts"] == 2 and report.success == 4


def test_every_s3_worker_dying_with_a_bounded_queue(run):
    crashes, report = crashed(run, fast(files=20, queue_size=2, time_scale=0.01,
                                        faults=("s3:worker=*:after=2:die",), details=True))
    invariants(report, 20)
    assert len(crashes.exceptions) == 3 and report.stopped_by == "crash"
    assert report.success == 6  # each of the 3 workers finished 2 files, then died taking its 3rd
    held = [f for f in report.files if f["outcome"] == "failed"]
    assert len(held) == 3 and all(f["error"].startswith("worker crashed: S3-Worker-") for f in held)
    cancelled = [f for f in report.files if f["outcome"] == "cancelled"]
    assert len(cancelled) == 11 and all(f["s3_attempts"] == 0 for f in cancelled)
    assert all(f["error"] in ("s3 stage dead",) for f in cancelled)


def test_every_api_worker_dying_while_the_s3_stage_is_full_never_hangs(run):
    """Bounded queues, slow copies: the S3 workers block on a dead stage's queue while the
    coordinator puts pills into a full S3 queue; it must keep tending and finish."""
    crashes, report = crashed(run, fast(files=30, queue_size=1, s3_workers=3, api_workers=1, time_scale=0.01,
                                        s3_latency=(1, 1), api_latency=(0.1, 0.1),
                                        faults=("api:worker=*:after=6:die",), details=True))
    invariants(report, 30)
    assert report.stopped_by == "crash" and report.success == 6 and report.failed == 1
    assert report.cancelled == 23
    assert {f["error"] for f in report.files if f["outcome"] == "cancelled"} == {"api stage dead"}


def test_one_api_worker_dying_the_other_takes_over(run):
    crashes, report = crashed(run, fast(files=12, time_scale=0.01, faults=("api:worker=1:after=2:die",),
                                        details=True))
    invariants(report, 12)
    assert len(crashes.exceptions) == 1 and report.stopped_by is None
    assert (report.success, report.failed, report.processed) == (11, 1, 11)
    assert report.errors == ["API-Worker-1: API-Worker-1 died (injected) after 2 files"]
    assert report.timing["workers"]["API-Worker-2"]["files"] == 9


def test_the_verifier_crashing(run):
    crashes, report = crashed(run, fast(files=10, queue_size=2, time_scale=0.01,
                                        faults=("verifier:after=5:crash",), details=True))
    invariants(report, 10)
    assert report.stopped_by == "crash" and report.processed == 5 and report.success == 5
    assert report.failed == 1 and report.cancelled == 4
    assert {f["error"] for f in report.files if f["outcome"] == "cancelled"} == {"verify stage dead"}


def test_a_straggler_behind_a_bounded_queue_is_not_cut_off(run):
    report = run(fast(files=12, queue_size=1, time_scale=0.002, details=True,
                      faults=("s3:id=12:slow=40", "api:id=12:slow=10")))
    invariants(report, 12)
    assert report.success == 12 and by_id(report)[12]["outcome"] == "success"
    verify = report.timing["workers"]["Verifier"]
    assert verify["pill_s"] >= report.timing["last_verified_s"]


@pytest.mark.parametrize("args, code", [
    ((), 0),
    (("--fault", "s3:id=3:raise"), 1),
    (("--fault", "api:worker=2:after=1:die"), 1),
    (("--fault", "s3:worker=*:after=1:die", "--queue-size", "2"), 70),
    (("--fault", "verifier:after=2:crash"), 70),
    (("--fault", "api:id=2:hang", "--stage-timeout", "0.2"), 1),
    (("--fault", "s3:id=x:raise"), 2),
])
def test_exit_codes(variant, args, code):
    done = cli(MODULES[variant], "--files", "8", "--time-scale", "0.01", "--quiet", *args)
    assert done.returncode == code, done.stderr
    if code == 2:
        assert done.stdout == "" and len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    else:
        assert "=== Pipeline complete ===" in done.stdout and "Traceback" not in done.stderr


@pytest.mark.parametrize("fault, code", [((), 0), (("--fault", "s3:id=3:raise"), 1)])
def test_output_piped_to_head_never_kills_a_worker(variant, fault, code):
    """``| head -n 1``: the reader goes away after one line; every file is still worked and the
    exit code is the run's."""
    child = subprocess.Popen([sys.executable, "-m", MODULES[variant], "--files", "30", "--time-scale", "0.005",
                              *fault], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = child.stdout.readline()
    child.stdout.close()  # what head does after its line
    try:
        _, err = child.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # a hang guard, never expected
        child.kill()
        raise
    assert first.startswith("🔖 Dispatcher: dispatching file file_100.pdf".encode())
    assert child.returncode == code, err
    assert b"Traceback" not in err and b"BrokenPipe" not in err


def test_a_crash_that_carries_no_report_goes_on_up():
    """The command prints the report a ``WorkerCrashes`` carries; one without a report (a run
    never raises it so) is raised on, not turned into an AttributeError on ``None``."""
    from pillpipe.common.cli import main

    def run(config):
        raise WorkerCrashes("worker crashed", [RuntimeError("boom")])

    with pytest.raises(WorkerCrashes) as info:
        main(run, "pillpipe run test", ["--files", "1", "--quiet"])
    assert info.value.report is None and str(info.value.exceptions[0]) == "boom"
