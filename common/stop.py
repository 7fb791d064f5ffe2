"""How a run stops: running -> draining (the first signal) -> aborting (a second signal, or the
grace period running out).  The rules only; each variant wakes its own workers.

The bounds, each stated once here (and in docs/reliability.md):

- ``DEFAULT_GRACE``: a SIGTERM drains for at most 30 s (Kubernetes' default grace), then aborts,
  so a service manager's stop ends in bounded time even when a call hangs.  A SIGINT drains until
  the second press.  ``--shutdown-grace S`` sets the grace of both.
- ``WAIT_EVERY``: while a drain (or an abort) waits, every 3 s one line on stderr says what for:
  which files, in which worker, for how long.
- ``ABORT_BOUND``: once aborting, the coordinator waits at most 5 s for a worker to exit; a worker
  still stuck then (a thread in a blocking call nothing can wake) is given up, its file ends
  aborted, and the report is written.  So a second signal ends any run within ABORT_BOUND plus
  one poll (``context.POLL``) plus the time to write the report.

Signals that arrive before a run's own handlers are in (the command line holds them from its
start) are kept in ``EARLY`` and replayed by the run as soon as its handlers are installed: a
signal at any instant after start-up is honoured.
"""
from __future__ import annotations

import time
from typing import Protocol

from .events import Events

DEFAULT_GRACE = 30.0  # seconds a SIGTERM drains before aborting, unless --shutdown-grace says otherwise
WAIT_EVERY = 3.0  # seconds between two lines saying what a drain (or an abort) waits for
ABORT_BOUND = 5.0  # seconds an abort waits for a worker to exit before giving it up

EARLY: list[str] = []  # signals held by the command line before the run's handlers were in


def hold_early(name: str) -> None:
    """A signal arrived before the run could handle it: keep it for the run to replay."""
    EARLY.append(name)


def take_early() -> list[str]:
    """The signals held so far (each replayed once)."""
    names = EARLY[:]
    del EARLY[:len(names)]
    return names


class Wakeup(Protocol):
    """What a variant may hand in to wake cooperative waits on an abort (a ``threading.Event``)."""

    def set(self) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Stop:
    """One run's stopping state.  ``draining``: no new files, started ones finish.  ``aborting``:
    files in flight are left where they are and end aborted."""

    def __init__(self, notices: Events, grace: float | None, wakeup: Wakeup | None = None) -> None:
        self.notices, self.grace, self.wakeup = notices, grace, wakeup
        self.stopped_by: str | None = None  # the signal that started draining
        self.aborting = False
        self.drain_started: float | None = None  # time.monotonic() of the first signal
        self.abort_started: float | None = None
        self._deadline: float | None = None
        self._next_word = 0.0  # when the next "waiting for" line is due

    @property
    def draining(self) -> bool:
        return self.stopped_by is not None

    def grace_for(self, name: str) -> float | None:
        """The drain's grace for a first ``name``: --shutdown-grace, else 30 s for SIGTERM, none for SIGINT."""
        if self.grace is not None:
            return self.grace
        return DEFAULT_GRACE if name == "SIGTERM" else None

    def on_signal(self, name: str) -> None:
        """First signal: drain.  Any second signal: abort."""
        if self.stopped_by is None:
            self.stopped_by = name
            grace = self.grace_for(name)
            self.drain_started = now = time.monotonic()
            self._deadline = None if grace is None else now + grace
            self._next_word = now + WAIT_EVERY
            again = "" if grace is None else f", or after {grace:g}s"
            self.notices.notice(f"⏹  {name}: draining - no new files; files already started finish "
                                f"(again to abort{again})")
        elif not self.aborting:
            self.abort(f"second {name}")

    def abort(self, why: str) -> None:
        if not self.aborting:
            self.aborting = True
            self.abort_started = now = time.monotonic()
            self._next_word = now + WAIT_EVERY
            self.notices.notice(f"⏹  {why}: aborting - files in flight are marked aborted")
            if self.wakeup is not None:
                self.wakeup.set()

    def check_grace(self) -> None:
        """Abort once the grace period after the first signal is over."""
        if self._deadline is not None and not self.aborting and time.monotonic() >= self._deadline:
            self.abort("shutdown grace expired")

    def word_due(self) -> bool:
        """Whether a "waiting for" line is due now (every WAIT_EVERY seconds while stopping)."""
        if self.stopped_by is None and not self.aborting:
            return False
        now = time.monotonic()
        if now < self._next_word:
            return False
        self._next_word = now + WAIT_EVERY
        return True

    def phase(self) -> str:
        """``draining for 12 s (SIGTERM; aborting in 18 s)``, ``aborting for 3 s``, or ``running``."""
        now = time.monotonic()
        if self.aborting and self.abort_started is not None:
            return f"aborting for {now - self.abort_started:.0f} s (giving up stuck workers in " \
                   f"{max(0.0, ABORT_BOUND - (now - self.abort_started)):.0f} s)"
        if self.drain_started is not None:
            left = "" if self._deadline is None else f"; aborting in {max(0.0, self._deadline - now):.0f} s"
            return f"draining for {now - self.drain_started:.0f} s ({self.stopped_by}{left})"
        return "running"

    def overdue(self) -> bool:
        """Aborting for longer than ABORT_BOUND: stop waiting for workers that do not exit."""
        return self.abort_started is not None and time.monotonic() - self.abort_started >= ABORT_BOUND
