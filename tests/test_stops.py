"""Every run stops, in bounded time, saying what it waits for - in every model and the sequential
reference.  The program runs as a subprocess (``python -m pillpipe run VARIANT``); every test
waits for a line the program prints before it signals it (no blind sleeps), asserts the exit
code and the report, and bounds every wait (a hang fails the test instead of hanging the suite).

The bounds under test are stated in ``common/stop.py``: a SIGTERM drains for 30 s by default,
then aborts; a drain says what it waits for every 3 s; an abort gives up a worker stuck for 5 s.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from pillpipe.common import stop as stop_module
from pillpipe.common.ledger import Ledger, never_started_term
from pillpipe.common.model import FileRecord
from pillpipe.common.stop import ABORT_BOUND, DEFAULT_GRACE, WAIT_EVERY
from pillpipe.common.workload import file_name

from .child import Child
from .conftest import RUNS, ROOT, fast, run_sequential

pytestmark = pytest.mark.timeout(120)

VARIANTS = ("threaded", "asyncio", "anyio", "sequential")
EVERY_RUN = {**RUNS, "sequential": run_sequential}
DRAINING = "draining - no new files"
ABORTING = "aborting - files in flight are marked aborted"


@pytest.fixture(params=VARIANTS)
def model(request: pytest.FixtureRequest) -> str:
    return request.param


def child_of(variant: str, *args: str, details: bool = True, **popen: Any) -> Child:
    """``python -m pillpipe run VARIANT --json [--details] ARGS``."""
    command = [sys.executable, "-m", "pillpipe", "run", variant, "--json", *(["--details"] * details), *args]
    return Child(command, **popen)


def outcomes(report: dict) -> dict[int, str]:
    return {f["id"]: f["outcome"] for f in report["files"]}


def check(report: dict) -> None:
    """The counts add up: every file in exactly one terminal state."""
    total = sum(report[k] for k in ("success", "failed", "cancelled", "aborted", "invalid", "duplicate"))
    assert report["expected"] == total
    if "files" in report:
        assert len(report["files"]) == total == len({f["id"] for f in report["files"]})


# Bounded stop by default (issue 9, item 3) ------------------------------------------------------
def test_sigterm_drains_with_a_default_grace_and_says_what_it_waits_for(model):
    """The reproducer was ``timeout 30 pillpipe run threaded --fault s3:id=1:hang``: a SIGTERM drained
    forever, silently.  Now it drains for 30 s (said in the first line), says every 3 s which file
    it waits for in which worker and for how long, and a second signal aborts it."""
    child = child_of(model, "--files", "6", "--time-scale", "0.02", "--fault", "api:id=1:hang")
    child.wait_for("stored file [file_100.pdf]")  # file 1 now hangs in its upload
    child.send(signal.SIGTERM)
    assert f"(again to abort, or after {DEFAULT_GRACE:g}s)" in child.wait_for(DRAINING)
    waiting = child.wait_for("⏳ draining for", timeout=WAIT_EVERY + 20)
    assert "(SIGTERM; aborting in 2" in waiting  # ~27 s of the 30 s grace left
    assert "waiting for 1 file - file_100.pdf in API-Worker-" in waiting and " s)" in waiting
    child.send(signal.SIGTERM)
    code, report, err, _ = child.finish()
    assert code == 143 and report["stopped_by"] == "SIGTERM"
    check(report)
    assert outcomes(report)[1] == "aborted" and "second SIGTERM: " + ABORTING in err


def test_sigint_has_no_default_grace(model):
    child = child_of(model, "--files", "6", "--time-scale", "0.02", "--fault", "s3:id=1:hang")
    child.wait_for("copy file file_100.pdf")
    child.send(signal.SIGINT)
    assert child.wait_for(DRAINING).rstrip().endswith("(again to abort)")
    child.send(signal.SIGINT)
    code, report, err, _ = child.finish()
    assert code == 130 and outcomes(report)[1] == "aborted" and "second SIGINT" in err


def test_the_grace_ends_a_drain_that_waits_for_a_hung_call(model):
    child = child_of(model, "--files", "6", "--time-scale", "0.02", "--fault", "s3:id=1:hang", "--shutdown-grace", "0.5")
    child.wait_for("copy file file_100.pdf")
    child.send(signal.SIGTERM)
    code, report, err, _ = child.finish()
    assert code == 143 and "shutdown grace expired: " + ABORTING in err
    check(report)
    assert outcomes(report)[1] == "aborted"


@pytest.mark.parametrize("name", VARIANTS)
def test_the_waiting_line_names_files_workers_and_durations(name, monkeypatch, capfd):
    """In-process, with the line due every 50 ms: the first copy done sends this process SIGINT;
    the drain then waits for file 1, hung in its upload, and says so; the line that names it
    there triggers the abort."""
    monkeypatch.setattr(stop_module, "WAIT_EVERY", 0.05)
    from pillpipe.common.context import Context

    lines: list[str] = []
    original = Context.waiting_for

    def waiting_for(self, depths=None):
        line = original(self, depths)
        lines.append(line)
        if "file_100.pdf in API-Worker-" in line:
            self.on_signal("SIGINT")  # the second signal: abort
        return line

    monkeypatch.setattr(Context, "waiting_for", waiting_for)
    original_release = Ledger.release

    def release(self, worker):
        if not lines and not getattr(self, "_signalled", False):
            self._signalled = True
            os.kill(os.getpid(), signal.SIGINT)
        return original_release(self, worker)

    monkeypatch.setattr(Ledger, "release", release)
    report = EVERY_RUN[name](fast(files=6, time_scale=0.02, faults=("api:id=1:hang",), details=True))
    assert report.stopped_by == "SIGINT" and {f["id"]: f["outcome"] for f in report.files}[1] == "aborted"
    named = [line for line in lines if "file_100.pdf in API-Worker-" in line]
    assert named and named[0].startswith("⏳ draining for") and "(SIGINT)" in named[0]
    assert re.search(r"file_100\.pdf in API-Worker-\d \(\d+\.\d s\)", named[0])  # for how long
    assert "⏳ draining for" in capfd.readouterr().err


# A second signal ends any run (issue 10, class 3) ------------------------------------------------
def test_a_drain_counts_a_billion_files_it_never_dispatched(model):
    """The rest of a run of 10^9 generated files is counted in one step, not cancelled one by one."""
    child = child_of(model, "--files", "1000000000", "--time-scale", "0.01", "--queue-size", "100", details=False)
    child.wait_for("✓ Verified")
    child.send(signal.SIGINT)
    code, report, err, _ = child.finish(timeout=30)
    assert code == 130 and report["expected"] == 10**9
    check(report)
    assert report["cancelled"] >= 10**9 - 10**6 and report["aborted"] == 0 and DRAINING in err


def test_unbounded_queues_at_zero_latency_still_take_a_signal(model):
    """asyncio's unbounded put never yields (CPython gh-87285): the dispatcher used to run the whole
    run ahead in one step, deaf to SIGINT.  Now a signal drains it at once, in every model."""
    child = child_of(model, "--files", "1000000000", "--time-scale", "0", details=False)
    child.wait_for("✓ Verified")
    child.send(signal.SIGINT)
    child.wait_for(DRAINING, timeout=10)
    code, report, err, _ = child.finish(timeout=30)
    assert code == 130 and report["expected"] == 10**9 and report["cancelled"] > 10**9 - 10**7
    check(report)


def test_the_digest_of_a_counted_range_equals_the_files_cancelled_one_by_one():
    one_by_one, counted = Ledger(), Ledger()
    for i in range(3, 41):
        one_by_one.settle_remaining()
        one_by_one.cancel_unadmitted([FileRecord(i, file_name(i))], "s3 stage dead")
    counted.cancel_range(3, 40, "s3 stage dead")
    a, b = (ledger.report("x", _timeline()) for ledger in (one_by_one, counted))
    assert a == b and a.cancelled == 38
    other = Ledger()
    other.cancel_range(3, 39, "s3 stage dead")
    other.cancel_unadmitted([FileRecord(41, file_name(41))], "s3 stage dead")  # a different set, same count
    assert other.report("x", _timeline()) != a
    assert never_started_term(1, 10**12, None) > 0  # a trillion, in closed form


def _timeline():
    from pillpipe.common.timing import Timeline

    return Timeline()


def test_a_silent_fifo_ends_on_the_second_signal(model, tmp_path):
    """``--input`` a FIFO whose writer stays open and silent: the dispatcher blocks in a read.  The
    event loop's models end that read from the signal handler itself (a drain does not wait for a
    stream that may never end); threads cannot be woken, so the abort gives the dispatcher up after
    ABORT_BOUND.  Either way: a report, the rest of the input said to be unknown."""
    fifo = tmp_path / "records.jsonl"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # holds the FIFO open (never blocks, never consumed by a check)
    try:
        os.write(writer, b'{"id": 1, "name": "a.pdf"}\n{"id": 2, "name": "b.pdf"}\n')
        child = child_of(model, "--input", str(fifo), "--time-scale", "0.01")
        child.wait_for("dispatching file b.pdf")
        child.send(signal.SIGINT)
        child.wait_for(DRAINING)
        if child.proc.poll() is None:
            child.send(signal.SIGINT)
        code, report, err, waited = child.finish(timeout=ABORT_BOUND + 25)
    finally:
        os.close(writer)
    assert code == 130 and report["expected"] == 2
    check(report)
    assert any(e.startswith("input not read to its end") for e in report["errors"]), report["errors"]


def test_a_second_signal_in_the_handling_of_the_first_raises_nothing(tmp_path):
    """The race behind a CI failure: the first signal ends a blocked read of a stream; the second
    lands while that interruption is being handled (saying the input was not read to its end).
    The second must not raise out of the dispatcher: one interruption per read, said once."""
    from pillpipe.common.context import Context

    ctx = Context(fast(files=3, input=str(tmp_path / "records.jsonl")), "asyncio", None)
    ctx._stream_input = True  # a FIFO or a pipe: a drain does not wait for its next line
    said = ctx._unread

    def unread_interrupted(why: str) -> None:
        ctx.interrupt_read()  # the second SIGINT's handler, in the middle of the handling
        said(why)

    ctx._unread = unread_interrupted  # type: ignore[method-assign]

    def blocked_read():
        ctx.on_signal("SIGINT")
        ctx.interrupt_read()  # the first SIGINT's handler, while the read blocks
        yield None

    assert ctx._next_input(blocked_read()) is None
    assert ctx.stop.draining and not ctx._reading
    unread = [e for e in ctx.ledger.errors if e.startswith("input not read to its end")]
    assert unread == ["input not read to its end (a signal ended the read): 0 records were read, "
                      "the rest is unknown"]


def test_dev_zero_ends_on_signals(model):
    from pillpipe.common import source

    if not hasattr(source, "MAX_LINE"):
        pytest.skip("reading /dev/zero is bounded once the input hardening lands (common/source.py MAX_LINE)")
    child = child_of(model, "--input", "/dev/zero")
    child.wait_for("")  # the first line said about it (a rejected line, or that it cannot be read)
    for _ in range(2):
        if child.proc.poll() is None:
            child.send(signal.SIGINT)
    code, report, err, _ = child.finish(timeout=ABORT_BOUND + 25)
    assert code in (130, 1) and report["expected"] == report["invalid"] + report["cancelled"]


# Signals in the start-up window (issue 10, class 4) ----------------------------------------------
@pytest.mark.parametrize("name", VARIANTS)
def test_a_signal_held_before_the_handlers_are_in_is_replayed(name):
    """The command line holds a signal that arrives before the run's handlers are in; the run
    replays it once they are: it drains from the start."""
    stop_module.hold_early("SIGTERM")
    report = EVERY_RUN[name](fast(files=20, time_scale=0.01))
    assert report.stopped_by == "SIGTERM" and report.cancelled == 20 == report.expected
    assert stop_module.EARLY == []


@pytest.mark.parametrize("name", VARIANTS)
def test_a_signal_at_any_instant_after_start_up_is_honoured(name):
    """Signals at random instants from the first moments of the process on: each is either too
    early (the process dies of it before the command line holds signals: no report at all), or
    honoured (exit 143, the report says SIGTERM), or too late (the run was over: said on stderr).
    Never a run that completes as if nothing happened."""
    rng = random.Random(f"startup-{name}")
    for _ in range(5):
        child = child_of(name, "--files", "8", "--time-scale", "0.05", details=False)  # ~0.5 s: signals land mid-run
        if rng.random() < 0.5:
            child.wait_for("")  # half of them once it has printed its first line
        time.sleep(rng.uniform(0, 0.15))  # the instant is what this test draws
        child.send(signal.SIGTERM)
        code = child.proc.wait(timeout=60)
        for reader in child.readers:
            reader.join(timeout=10)
        while (line := child.lines.get(timeout=10)) is not None:
            child.seen.append(line)
        err = "".join(child.seen)
        if code == -signal.SIGTERM:
            assert child.out == [""] or child.out[0] == "", "killed by the signal after a report was written"
            continue
        assert "Traceback" not in err, err
        report = json.loads(child.out[0])
        if code == 143:
            assert report["stopped_by"] == "SIGTERM"
        else:
            assert code == 0 and "SIGTERM arrived outside the run: ignored" in err, (code, err)


# Threads that cannot start (issue 10, class 5) ---------------------------------------------------
def _address_space(megabytes: int):
    """``ulimit -s 65536 -v MEGABYTES`` for the child: each thread reserves a 64 MiB stack, so only a
    few fit in the address space."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_STACK, (64 << 20, 64 << 20))
        resource.setrlimit(resource.RLIMIT_AS, (megabytes << 20, megabytes << 20))

    return limit


@pytest.mark.parametrize("name", VARIANTS)
def test_out_of_threads_the_run_stops_cleanly_with_a_report(name):
    """Under ``ulimit -v``, 20 API workers cannot all be threads: the threaded run says what ran out
    and stops with a report (exit 70, every file in one state); tasks need no thread, so the other
    models run to the end under the same limit."""
    done = subprocess.run([sys.executable, "-m", "pillpipe", "run", name, "--files", "50", "--time-scale", "0",
                           "--quiet", "--json", "--s3-workers", "4", "--api-workers", "20"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, preexec_fn=_address_space(500))
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    report = json.loads(done.stdout)
    check(report)
    if name != "threaded":
        assert done.returncode == 0 and report["success"] == 50
        return
    assert done.returncode == 70 and report["stopped_by"] == "crash" and report["expected"] == 50
    assert any(e.endswith("could not start: can't start new thread") for e in report["errors"])
    assert "could not start (can't start new thread)" in done.stderr


def test_a_worker_that_cannot_start_leaves_its_siblings_the_work(monkeypatch):
    """What could start runs: an S3 thread that cannot start is a worker that never lived."""

    from pillpipe.common.context import WorkerCrashes

    original = threading.Thread.start

    def start(self):
        if self.name == "S3-Worker-2":
            raise RuntimeError("can't start new thread")
        return original(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(WorkerCrashes) as caught:
        RUNS["threaded"](fast(files=40, time_scale=0.001))
    report = caught.value.report
    assert report.success == 40 == report.expected and report.stopped_by is None
    assert report.errors == ["S3-Worker-2 could not start: can't start new thread"]
    assert "S3-Worker-2" not in report.timing["workers"] and report.timing["stages"]["s3"]["workers"] == 2


def test_details_list_a_counted_range_up_to_a_bound():
    from pillpipe.common.ledger import DETAILS_RANGE

    ledger = Ledger(details=True)
    ledger.cancel_range(1, 5, None)
    ledger.cancel_range(6, DETAILS_RANGE + 10, "s3 stage dead")
    report = ledger.report("x", _timeline())
    assert report.cancelled == DETAILS_RANGE + 10 and len(report.files) == DETAILS_RANGE + 5
    assert report.files[0] == {"id": 1, "name": "file_100.pdf", "outcome": "cancelled", "dest_key": None,
                               "failed_stage": None, "error": None, "s3_attempts": 0, "api_attempts": 0,
                               "last_stage": "dispatch"}
    assert report.errors == [f"--details: files {DETAILS_RANGE + 6}..{DETAILS_RANGE + 10} (cancelled, never "
                             "dispatched) are counted but not listed"]
