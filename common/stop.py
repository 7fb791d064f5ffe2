"""How a run stops: running -> draining (the first signal) -> aborting (a second signal, or the
grace period running out).  The rules only; each variant wakes its own workers."""
from __future__ import annotations

import time
from typing import Protocol

from .events import Events


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
        self._deadline: float | None = None

    @property
    def draining(self) -> bool:
        return self.stopped_by is not None

    def on_signal(self, name: str) -> None:
        """First signal: drain.  Any second signal: abort."""
        if self.stopped_by is None:
            self.stopped_by = name
            grace = self.grace
            self._deadline = None if grace is None else time.monotonic() + grace
            again = "" if grace is None else f", or after {grace:g}s"
            self.notices.notice(f"⏹  {name}: draining - no new files; files already started finish "
                                f"(again to abort{again})")
        elif not self.aborting:
            self.abort(f"second {name}")

    def abort(self, why: str) -> None:
        if not self.aborting:
            self.aborting = True
            self.notices.notice(f"⏹  {why}: aborting - files in flight are marked aborted")
            if self.wakeup is not None:
                self.wakeup.set()

    def check_grace(self) -> None:
        """Abort once the grace period after the first signal is over."""
        if self._deadline is not None and not self.aborting and time.monotonic() >= self._deadline:
            self.abort("shutdown grace expired")
