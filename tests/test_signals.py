"""Signals, as a user sends them: the program runs as a subprocess; every test waits for a line
the program prints before it sends anything (no blind sleeps), and asserts the exit code exactly.

First SIGINT/SIGTERM drains (started files finish, the rest are cancelled); a second SIGINT or
the end of ``--shutdown-grace`` aborts (files in flight are aborted).  Always a full report.
"""
from __future__ import annotations

import os
import random
import signal
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .child import Child
from .conftest import MODULES

pytestmark = pytest.mark.timeout(90)

DRAINING = "draining - no new files"
ABORTING = "aborting - files in flight are marked aborted"


def child_of(variant: str, *args: str, ignore_sigint: bool = False) -> Child:
    """``python -m <variant> --json --details ...``, optionally started with SIGINT ignored."""
    def ignore() -> None:  # what `sh -c 'cmd &'` does to a background job
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return Child([sys.executable, "-m", MODULES[variant], "--json", "--details", *args],
                 preexec_fn=ignore if ignore_sigint else None)


def check(report: dict, files: int) -> dict[str, list[dict]]:
    """Every file in exactly one terminal state; the counts add up; files grouped by outcome."""
    ids = sorted(f["id"] for f in report["files"])
    assert ids == list(range(1, files + 1))
    groups: dict[str, list[dict]] = {}
    for f in report["files"]:
        groups.setdefault(f["outcome"], []).append(f)
    for name in ("success", "failed", "cancelled", "aborted", "invalid", "duplicate"):
        assert report[name] == len(groups.get(name, [])), name
    assert report["expected"] == files == sum(len(g) for g in groups.values())
    return groups


def test_sigint_mid_run_drains(variant):
    child = child_of(variant, "--files", "20", "--time-scale", "0.1")
    child.wait_for("✓ Verified")
    child.send(signal.SIGINT)
    code, report, err, _ = child.finish()
    assert code == 130 and report["stopped_by"] == "SIGINT"
    groups = check(report, 20)
    assert err.count(DRAINING) == 1 and ABORTING not in err
    assert report["aborted"] == 0 and report["cancelled"] > 0 and report["success"] >= 1
    assert all(f["s3_attempts"] == 0 and f["last_stage"] == "dispatch" for f in groups["cancelled"])
    started = [f for f in report["files"] if f["s3_attempts"] > 0]
    assert started and all(f["outcome"] == "success" for f in started)  # files already started finish


def test_a_second_sigint_aborts(variant):
    child = child_of(variant, "--files", "20", "--queue-size", "2", "--time-scale", "1")
    child.wait_for("💾 Uploader")  # a file is copied; its upload takes 1-2 s
    child.send(signal.SIGINT)
    child.wait_for(DRAINING)
    child.send(signal.SIGINT)
    code, report, err, _ = child.finish()
    assert code == 130 and report["stopped_by"] == "SIGINT"
    groups = check(report, 20)  # with a bounded queue the dispatcher was blocked: the rest still counts
    assert err.count(ABORTING) == 1 and "second SIGINT" in err
    assert report["aborted"] >= 1
    assert all(f["s3_attempts"] >= 1 for f in groups["aborted"])
    assert all(f["s3_attempts"] == 0 for f in groups["cancelled"])


def test_sigterm_drains_and_exits_143(variant):
    child = child_of(variant, "--files", "20", "--time-scale", "0.1")
    child.wait_for("✓ Verified")
    child.send(signal.SIGTERM)
    code, report, err, _ = child.finish()
    assert code == 143 and report["stopped_by"] == "SIGTERM"
    check(report, 20)
    assert report["aborted"] == 0 and report["cancelled"] > 0 and f"SIGTERM: {DRAINING}" in err


def test_sigterm_with_a_hung_call_aborts_when_the_grace_ends(variant):
    child = child_of(variant, "--files", "6", "--time-scale", "0.05", "--fault", "api:id=1:hang",
                  "--shutdown-grace", "0.5")
    child.wait_for("✓ Verified: file_101.pdf")  # file 1 hangs in its upload meanwhile
    child.send(signal.SIGTERM)
    code, report, err, _ = child.finish()
    assert code == 143 and report["stopped_by"] == "SIGTERM"
    groups = check(report, 6)
    assert "shutdown grace expired" in err and err.count(ABORTING) == 1
    hung = [f for f in groups["aborted"] if f["id"] == 1]
    assert hung and hung[0]["last_stage"] == "s3" and hung[0]["dest_key"]


def test_sigint_when_started_ignoring_it_with_the_dispatcher_blocked(variant):
    """Started as a background job (SIGINT inherited as SIG_IGN), a full queue of size 1 holds
    the dispatcher in ``put``: the first SIGINT still drains."""
    child = child_of(variant, "--files", "50", "--queue-size", "1", "--s3-workers", "1", "--api-workers", "1",
                  "--time-scale", "0.2", ignore_sigint=True)
    child.wait_for("dispatching file file_104.pdf")
    child.send(signal.SIGINT)
    code, report, err, _ = child.finish()
    assert code == 130 and report["stopped_by"] == "SIGINT"
    groups = check(report, 50)
    assert DRAINING in err and len(groups["cancelled"]) >= 40 and report["aborted"] == 0


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16))
def test_sigint_at_random_instants(variant, seed):
    """Whenever it lands - before the first copy, mid-run, during the pills, after the end -
    every file ends in exactly one state and the exit code matches the report."""
    rng = random.Random(seed)
    child = child_of(variant, "--files", "12", "--time-scale", "0.02", "--queue-size", str(rng.randint(0, 3)),
                  "--seed", str(seed), "--fail-rate", "0.2")
    child.wait_for("🔖 Dispatcher: dispatching")
    time.sleep(rng.uniform(0, 0.6))
    child.send(signal.SIGINT)
    code, report, _, _ = child.finish()
    groups = check(report, 12)
    assert report["aborted"] == 0  # one signal never aborts
    if report["stopped_by"] == "SIGINT":
        assert code == 130
    else:  # it arrived after the run had finished: noted, ignored
        assert report["stopped_by"] is None
        assert code == (0 if len(groups.get("success", [])) == 12 else 1)


def test_quiet_still_says_when_draining_starts(run, capfd, monkeypatch):
    """--quiet hides the event lines, not the line that says a signal started draining.  In-process:
    the first verified file sends this process SIGINT, so the signal always lands mid-run."""
    from pillpipe.common.ledger import Ledger

    from .conftest import fast

    original = Ledger.verify

    def verify(self, record):
        if self.processed == 0:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, record)

    monkeypatch.setattr(Ledger, "verify", verify)
    report = run(fast(files=30, time_scale=0.05, s3_workers=1, queue_size=1))
    captured = capfd.readouterr()
    assert report.stopped_by == "SIGINT" and report.cancelled > 0
    assert report.expected == report.terminal_total == 30
    assert DRAINING in captured.err and "Dispatcher" not in captured.out + captured.err
