"""Signals, as a user sends them: the program runs as a subprocess; every test waits for a line
the program prints before it sends anything (no blind sleeps), and asserts the exit code exactly.

First SIGINT/SIGTERM drains (started files finish, the rest are cancelled); a second SIGINT or
the end of ``--shutdown-grace`` aborts (files in flight are aborted).  Always a full report.
"""
from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import MODULES, ROOT

pytestmark = pytest.mark.timeout(90)

DRAINING = "draining - no new files"
ABORTING = "aborting - files in flight are marked aborted"


class Child:
    """``python -m <variant> --json --details ...``: event lines on stderr, the JSON report on stdout.

    Both pipes are read by threads, so every wait here is bounded: a program that hangs or never
    prints its marker fails the test instead of hanging the session."""

    def __init__(self, variant: str, *args: str, ignore_sigint: bool = False) -> None:
        def ignore() -> None:  # what `sh -c 'cmd &'` does to a background job
            signal.signal(signal.SIGINT, signal.SIG_IGN)

        env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
        self.proc = subprocess.Popen([sys.executable, "-m", MODULES[variant], "--json", "--details", *args],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     preexec_fn=ignore if ignore_sigint else None)
        self.seen: list[str] = []
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.out: list[str] = []
        self.readers = [threading.Thread(target=self._pump, daemon=True),
                        threading.Thread(target=lambda: self.out.append(self.proc.stdout.read()), daemon=True)]
        for reader in self.readers:
            reader.start()

    def _pump(self) -> None:
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, marker: str, timeout: float = 60) -> str:
        """Read event lines until one contains ``marker``; fail if the program ends first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self._abort_child()
                raise AssertionError(f"no {marker!r} within {timeout}s; printed:\n{''.join(self.seen)}") from None
            if line is None:
                raise AssertionError(f"ended without printing {marker!r}; printed:\n{''.join(self.seen)}")
            self.seen.append(line)
            if marker in line:
                return line

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def _abort_child(self) -> None:
        """A hang is a bug: end the child through its own abort path (two SIGINTs)."""
        for _ in range(2):
            self.proc.send_signal(signal.SIGINT)
            time.sleep(0.5)

    def finish(self, timeout: float = 30) -> tuple[int, dict, str]:
        """Wait for the exit (the timeout is only a hang guard) and parse the report."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._abort_child()
            raise AssertionError(f"hung; printed:\n{''.join(self.seen)}") from None
        for reader in self.readers:
            reader.join(timeout=10)
        while (line := self.lines.get(timeout=10)) is not None:
            self.seen.append(line)
        err = "".join(self.seen)
        assert "Traceback" not in err, err
        return code, json.loads(self.out[0]), err


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
    child = Child(variant, "--files", "20", "--time-scale", "0.1")
    child.wait_for("✓ Verified")
    child.send(signal.SIGINT)
    code, report, err = child.finish()
    assert code == 130 and report["stopped_by"] == "SIGINT"
    groups = check(report, 20)
    assert err.count(DRAINING) == 1 and ABORTING not in err
    assert report["aborted"] == 0 and report["cancelled"] > 0 and report["success"] >= 1
    assert all(f["s3_attempts"] == 0 and f["last_stage"] == "dispatch" for f in groups["cancelled"])
    started = [f for f in report["files"] if f["s3_attempts"] > 0]
    assert started and all(f["outcome"] == "success" for f in started)  # files already started finish


def test_a_second_sigint_aborts(variant):
    child = Child(variant, "--files", "20", "--queue-size", "2", "--time-scale", "1")
    child.wait_for("💾 Uploader")  # a file is copied; its upload takes 1-2 s
    child.send(signal.SIGINT)
    child.wait_for(DRAINING)
    child.send(signal.SIGINT)
    code, report, err = child.finish()
    assert code == 130 and report["stopped_by"] == "SIGINT"
    groups = check(report, 20)  # with a bounded queue the dispatcher was blocked: the rest still counts
    assert err.count(ABORTING) == 1 and "second SIGINT" in err
    assert report["aborted"] >= 1
    assert all(f["s3_attempts"] >= 1 for f in groups["aborted"])
    assert all(f["s3_attempts"] == 0 for f in groups["cancelled"])


def test_sigterm_drains_and_exits_143(variant):
    child = Child(variant, "--files", "20", "--time-scale", "0.1")
    child.wait_for("✓ Verified")
    child.send(signal.SIGTERM)
    code, report, err = child.finish()
    assert code == 143 and report["stopped_by"] == "SIGTERM"
    check(report, 20)
    assert report["aborted"] == 0 and report["cancelled"] > 0 and f"SIGTERM: {DRAINING}" in err


def test_sigterm_with_a_hung_call_aborts_when_the_grace_ends(variant):
    child = Child(variant, "--files", "6", "--time-scale", "0.05", "--fault", "api:id=1:hang",
                  "--shutdown-grace", "0.5")
    child.wait_for("✓ Verified: file_101.pdf")  # file 1 hangs in its upload meanwhile
    child.send(signal.SIGTERM)
    code, report, err = child.finish()
    assert code == 143 and report["stopped_by"] == "SIGTERM"
    groups = check(report, 6)
    assert "shutdown grace expired" in err and err.count(ABORTING) == 1
    hung = [f for f in groups["aborted"] if f["id"] == 1]
    assert hung and hung[0]["last_stage"] == "s3" and hung[0]["dest_key"]


def test_sigint_when_started_ignoring_it_with_the_dispatcher_blocked(variant):
    """Started as a background job (SIGINT inherited as SIG_IGN), a full queue of size 1 holds
    the dispatcher in ``put``: the first SIGINT still drains."""
    child = Child(variant, "--files", "50", "--queue-size", "1", "--s3-workers", "1", "--api-workers", "1",
                  "--time-scale", "0.2", ignore_sigint=True)
    child.wait_for("dispatching file file_104.pdf")
    child.send(signal.SIGINT)
    code, report, err = child.finish()
    assert code == 130 and report["stopped_by"] == "SIGINT"
    groups = check(report, 50)
    assert DRAINING in err and len(groups["cancelled"]) >= 40 and report["aborted"] == 0


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16))
def test_sigint_at_random_instants(variant, seed):
    """Whenever it lands - before the first copy, mid-run, during the pills, after the end -
    every file ends in exactly one state and the exit code matches the report."""
    rng = random.Random(seed)
    child = Child(variant, "--files", "12", "--time-scale", "0.02", "--queue-size", str(rng.randint(0, 3)),
                  "--seed", str(seed), "--fail-rate", "0.2")
    child.wait_for("🔖 Dispatcher: dispatching")
    time.sleep(rng.uniform(0, 0.6))
    child.send(signal.SIGINT)
    code, report, _ = child.finish()
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
