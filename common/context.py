"""One run's shared state and the non-blocking steps every variant's workers take.

The variants own the concurrency (queues, workers, waiting, pills).  Everything a worker
does between two blocking calls lives here, once: admitting a file, the fault checks,
verifying, classifying what a dead or stopped stage leaves behind, and the run's state
machine (running -> draining on the first signal -> aborting on the second or when the
grace period ends).
"""
from __future__ import annotations

import sys
import time
from contextlib import AbstractContextManager
from typing import Any, Iterator

from .config import Config, UsageError
from .events import Events
from .faults import InjectedCrash
from .ledger import Ledger
from .model import FileRecord, Outcome, Rejected, Stage
from .report import Report
from .shutdown import Shutdown, unsupported
from .source import InputError, open_input, records
from .timing import Timeline, WorkerClock

POLL = 0.05  # seconds: how often a waiting coordinator looks at signals, deaths and the grace period
PREFIX = {Stage.S3: "S3-Worker", Stage.API: "API-Worker"}
_ORDER = (Stage.DISPATCH, Stage.S3, Stage.API, Stage.VERIFY)


def worker_name(stage: Stage, index: int) -> str:
    """``S3-Worker-1``, ``API-Worker-2``: threads and tasks get the same names."""
    return f"{PREFIX[stage]}-{index}"


def events_for(config: Config) -> Events:
    if config.quiet:
        return Events(None)
    return Events(sys.stderr if config.json else sys.stdout)


class WorkerCrashes(ExceptionGroup):
    """Raised by ``run`` when a worker loop died (a bug, not a per-file error); carries the report."""

    def __new__(cls, message: str, exceptions: Any, report: Report | None = None) -> "WorkerCrashes":
        self = super().__new__(cls, message, exceptions)
        self.report = report
        return self

    def __init__(self, message: str, exceptions: Any, report: Report | None = None) -> None:
        super().__init__(message, exceptions)

    def derive(self, exceptions: Any) -> "WorkerCrashes":
        return WorkerCrashes(self.message, exceptions, self.report)


class Context:
    """Everything one run shares.  ``lock`` guards the ledger: a real lock for threads."""

    def __init__(self, config: Config, variant: str, lock: AbstractContextManager[Any] | None) -> None:
        self.config, self.variant = config, variant
        self.plan = config.stage_plan()
        self.faults = config.fault_plan
        self.events = events_for(config)
        self.notices = Events(sys.stderr)  # draining, aborting, a dead worker: said even with --quiet
        self.ledger = Ledger(lock, config.details)
        self.timeline = Timeline(config.trace)
        self.stopped_by: str | None = None  # the signal that started draining
        self.aborting = False
        self.dead_stages: set[Stage] = set()
        self.crashes: list[BaseException] = []
        self.waker: Any = None  # the variant's wake-up primitive for aborts, if it needs one
        self._alive = {Stage.DISPATCH: 1, Stage.S3: config.s3_workers, Stage.API: config.api_workers, Stage.VERIFY: 1}
        problem = unsupported(config.shutdown, variant, config.loop)
        if problem is not None:
            raise UsageError(problem)
        self.shutdown = Shutdown(config.shutdown, self._alive, lock)
        self._deadline: float | None = None

    # The dispatcher's stream ---------------------------------------------------------
    def admitted(self) -> Iterator[FileRecord]:
        """Admit each file in order and yield it for dispatch; once stopping, cancel the rest."""
        stream, fmt = None, "jsonl"
        if self.config.input is not None:
            stream, fmt = open_input(self.config.input, self.config.input_format)
        ledger, events = self.ledger, self.events
        self.timeline.worker("Dispatcher", Stage.DISPATCH)
        items = records(self.config.files, stream, fmt)
        try:
            for item in items:
                if isinstance(item, Rejected):
                    ledger.reject(item)
                    if events.enabled:
                        events.notice(f"✗ Rejected: {item.error}")
                elif self.stopped_by is not None or self.dead_stages:
                    ledger.cancel_unadmitted((item,), self._dead_reason(Stage.DISPATCH))
                else:
                    ledger.admit(item)
                    if events.enabled:
                        events.dispatching(item)
                    yield item
        except GeneratorExit:  # the dispatcher stopped early (an abort): what it never read ends cancelled
            self._cancel_rest(items)
            raise
        except InputError as exc:
            self._input_failed(exc)
        finally:
            if stream is not None and stream is not sys.stdin:
                stream.close()

    def _cancel_rest(self, items: Iterator[Any]) -> None:
        try:
            self.ledger.cancel_unadmitted(items, self._dead_reason(Stage.DISPATCH))
        except InputError as exc:
            self._input_failed(exc)

    def _input_failed(self, exc: InputError) -> None:
        self.ledger.errors.append(str(exc))
        self.notices.notice(f"✗ {exc}")

    def _dead_reason(self, stage: Stage) -> str | None:
        """Why a file that ``stage`` holds cannot go on: the first dead stage after it, if any."""
        for later in _ORDER[_ORDER.index(stage) + 1:]:
            if later in self.dead_stages:
                return f"{later.value} stage dead"
        return None

    # What workers do between blocking calls --------------------------------------------
    def take(self, stage: Stage, index: int, clock: WorkerClock, record: FileRecord) -> bool:
        """A worker took ``record``: False if it must not be worked on (shutdown), else start it.

        Raises ``InjectedCrash`` when a die fault fires: that is the worker loop dying."""
        if self.stopped_by is not None and stage is Stage.S3 and record.s3_attempts == 0:
            self.ledger.settle(record, Outcome.CANCELLED)  # draining: never started, never will be
            return False
        if self.dead_stages:
            reason = self._dead_reason(stage)
            if reason is not None:  # a later stage is dead: this file could never finish
                self.ledger.settle(record, Outcome.CANCELLED, reason)
                return False
        clock.begin(record)
        if self.faults.workers and self.faults.worker_dies(stage, index, clock.files):
            raise InjectedCrash(f"{clock.name} died (injected) after {clock.files} files")
        return True

    def verify(self, clock: WorkerClock, record: FileRecord) -> None:
        clock.begin(record)
        if self.faults.verifier_after is not None and self.faults.verifier_crashes(clock.files):
            raise InjectedCrash(f"Verifier died (injected) after {clock.files} files")
        self.ledger.verify(record)
        clock.end(record)
        self.timeline.last_verified = self.timeline.now()
        if self.events.enabled:
            self.events.verified(record)

    def exited(self, name: str) -> None:
        clock = self.timeline.workers.get(name)
        if clock is not None:
            clock.exited()

    def worker_died(self, stage: Stage, name: str, exc: BaseException) -> None:
        """A worker loop raised: the file it held fails; its stage may now be dead."""
        self.exited(name)
        self.crashes.append(exc)
        self.ledger.errors.append(f"{name}: {exc}")
        clock = self.timeline.workers.get(name)
        if clock is not None and clock.holding is not None:
            self.ledger.settle(clock.holding, Outcome.FAILED, f"worker crashed: {exc}")
        self._alive[stage] -= 1
        self.notices.notice(f"💥 {name} died: {exc!r}")
        if self._alive[stage] == 0:
            self.dead_stages.add(stage)
            self.notices.notice(f"💥 every {stage.value} worker is dead: cancelling what is queued, draining the rest")

    def alive(self, stage: Stage) -> int:
        return self._alive[stage]

    def drained(self, stage: Stage, record: Any) -> None:
        """The coordinator emptied the queue of a dead or aborted stage; this was in it."""
        if isinstance(record, FileRecord) and not self.aborting:
            self.ledger.settle(record, Outcome.CANCELLED, f"{stage.value} stage dead")

    # Signals and the grace period ------------------------------------------------------
    def on_signal(self, name: str) -> None:
        """First signal: drain.  Second SIGINT (or any second signal): abort."""
        if self.stopped_by is None:
            self.stopped_by = name
            grace = self.config.shutdown_grace
            self._deadline = None if grace is None else time.monotonic() + grace
            self.notices.notice(f"⏹  {name}: draining - no new files; files already started finish "
                                f"(again to abort{'' if grace is None else f', or after {grace:g}s'})")
        elif not self.aborting:
            self.abort(f"second {name}")

    def abort(self, why: str) -> None:
        if not self.aborting:
            self.aborting = True
            self.notices.notice(f"⏹  {why}: aborting - files in flight are marked aborted")

    def grace_expired(self) -> bool:
        if self._deadline is not None and not self.aborting and time.monotonic() >= self._deadline:
            self.abort("shutdown grace expired")
            return True
        return False

    # The end -------------------------------------------------------------------------
    def report(self) -> Report:
        self.ledger.settle_remaining()
        self.timeline.finish()
        stopped_by = self.stopped_by or ("crash" if self.dead_stages else None)
        report = self.ledger.report(self.variant, self.timeline, stopped_by)
        if self.crashes:
            raise WorkerCrashes("worker crashed", [e if isinstance(e, Exception) else RuntimeError(repr(e))
                                                   for e in self.crashes], report)
        return report
