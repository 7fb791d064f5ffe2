"""One run's shared state, and the non-blocking steps every variant's workers take.

The variants own the concurrency: queues, workers, waiting, pills.  Everything a worker does
between two blocking calls is a method here, named for what it means - ``take`` a file,
``release`` it to the next stage, ``verify`` it, ``check_out`` on the pill - so the worker loops
read like the tutorial's and the three models cannot drift apart.  The concerns live in their
own modules: the ledger (every file's state), the timeline (timing only), the crew (who is
alive), the stop (draining and aborting) and the shutdown strategy (how a stream ends).
"""
from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from typing import Any, Generator, Iterator, Sequence, TypeVarTuple

from .config import Config
from .crew import Crew
from .events import Events
from .faults import InjectedCrash
from .handoff import Hands, hands_for
from .ledger import Ledger
from .model import FileRecord, Message, Outcome, Rejected, Stage
from .realio import RealIO, Using
from .report import Report
from .shutdown import NEXT, Shutdown
from .source import InputError, open_input, records
from .stages import Gen, stepped, verify_checks
from .stop import Stop, Wakeup
from .timing import Timeline, WorkerClock

POLL = 0.05  # seconds: how often a waiting coordinator looks at signals, deaths and the grace period
Args = TypeVarTuple("Args")  # a worker's arguments, as its function takes them (each variant's ``_start``)
NAMES = {Stage.DISPATCH: "Dispatcher", Stage.S3: "S3-Worker", Stage.API: "API-Worker", Stage.VERIFY: "Verifier"}


def worker_name(stage: Stage, index: int) -> str:
    """``S3-Worker-1``, ``API-Worker-2``, ``Dispatcher``, ``Verifier``: threads and tasks get the same names."""
    if stage in (Stage.DISPATCH, Stage.VERIFY):
        return NAMES[stage]
    return f"{NAMES[stage]}-{index}"


def events_for(config: Config) -> Events:
    if config.quiet:
        return Events(None)
    return Events(sys.stderr if config.json else sys.stdout)


class WorkerCrashes(ExceptionGroup[Exception]):
    """Raised by ``run`` when a worker loop died (a bug, not a per-file error); carries the report."""

    report: Report | None

    def __new__(cls, message: str, exceptions: Sequence[Exception], report: Report | None = None) -> "WorkerCrashes":
        self = super().__new__(cls, message, exceptions)
        self.report = report
        return self

    def __init__(self, message: str, exceptions: Sequence[Exception], report: Report | None = None) -> None:
        super().__init__(message, exceptions)

    # split() and subgroup() derive from a subset of our own exceptions, all Exception: the
    # generic overloads of BaseExceptionGroup.derive would need a generic WorkerCrashes.
    def derive(self, exceptions: Sequence[Exception]) -> "WorkerCrashes":  # type: ignore[override]
        return WorkerCrashes(self.message, exceptions, self.report)


class Context:
    """Everything one run shares.  ``lock`` guards the ledger and the live counts (a real lock for
    threads); ``wakeup`` is set on an abort to wake the variant's cooperative waits (threads pass
    a ``threading.Event``; coroutines need none: an abort cancels them)."""

    def __init__(self, config: Config, variant: str, lock: AbstractContextManager[Any] | None = None,
                 wakeup: Wakeup | None = None) -> None:
        self.config, self.variant = config, variant
        self.events = events_for(config)
        self.notices = Events(sys.stderr)  # draining, aborting, a dead worker: said even with --quiet
        self.io = RealIO(config, lock) if config.io == "real" else None  # real I/O: common/realio.py
        self.plan = config.stage_plan(self.events, self.io)
        self.ledger = Ledger(lock, config.details)
        self.timeline = Timeline(config.trace)
        self.crew = Crew({Stage.DISPATCH: 1, Stage.S3: config.s3_workers, Stage.API: config.api_workers,
                          Stage.VERIFY: 1}, lock)
        self._wakeup = wakeup
        self.stop = Stop(self.notices, config.shutdown_grace, wakeup)
        self.shutdown = Shutdown(config.shutdown, {stage: self.crew.alive(stage) for stage in Stage}, lock)

    @property
    def aborting(self) -> bool:
        return self.stop.aborting

    @property
    def wakeup(self) -> Wakeup:
        """The wake-up the variant handed in: only a variant that hands one in waits on it."""
        if self._wakeup is None:
            raise RuntimeError(f"the {self.variant} variant handed in no wakeup")
        return self._wakeup

    # A worker's life --------------------------------------------------------------------
    def worker(self, stage: Stage, index: int = 1) -> WorkerClock:
        """A worker starts: its identity and clock, which its loop calls ``me`` (with its hand-off
        buffers under ``--batch N``)."""
        me = self.timeline.worker(worker_name(stage, index), stage, index)
        me.hands = hands_for(self.config.batch)
        return me

    def admitted(self) -> Generator[FileRecord, None, None]:
        """The dispatcher's stream: admit each file in order and yield it; once stopping, or once a
        stage has died, cancel the rest instead.  Closing it early (an abort) cancels what is unread."""
        stream, fmt = None, "jsonl"
        if self.config.input is not None:
            stream, fmt = open_input(self.config.input, self.config.input_format)
        items = records(self.config.files, stream, fmt)
        try:
            for item in items:
                if isinstance(item, Rejected):
                    self._reject(item)
                elif self.stop.draining or self.crew.dead:
                    self.ledger.cancel_unadmitted((item,), self._dead_reason(Stage.DISPATCH))
                else:
                    self.ledger.admit(item)
                    if self.events.enabled:
                        self.events.dispatching(item)
                    yield item
        except GeneratorExit:
            self._cancel_rest(items)
            raise
        except InputError as exc:
            self._input_failed(exc)
        finally:
            if stream is not None and stream is not sys.stdin:
                stream.close()

    def take(self, me: WorkerClock, record: FileRecord) -> bool:
        """``me`` took ``record`` off its queue: False when it must not be worked on (it is settled
        cancelled here: draining and never started, or a later stage is dead), else it is in
        ``me``'s hands.  Raises ``InjectedCrash`` when a die fault fires: the worker loop dies."""
        me.working = True
        if self.stop.draining and me.stage is Stage.S3 and record.s3_attempts == 0:
            self.ledger.settle(record, Outcome.CANCELLED)
            return False
        reason = self._dead_reason(me.stage)
        if reason is not None:
            self.ledger.settle(record, Outcome.CANCELLED, reason)
            return False
        self._hold(me, record)
        if self.plan.faults.workers and self.plan.faults.worker_dies(me.stage, me.index, me.files):
            raise InjectedCrash(f"{me.name} died (injected) after {me.files} files")
        return True

    def release(self, me: WorkerClock, record: FileRecord) -> FileRecord:
        """``me`` is done with ``record``: it goes on to the next stage."""
        me.end(record)
        self.ledger.release(me.name)
        return record

    @stepped
    def verify(self, me: WorkerClock, record: FileRecord) -> Gen:
        """The verifier's checks (real I/O: the object and the record are there; simulated: none),
        then its verdict, recorded in the ledger.  The variant drives it through ``_wait_through``."""
        me.working = True
        self._hold(me, record)
        faults = self.plan.faults
        if faults.verifier_after is not None and faults.verifier_crashes(me.files):
            raise InjectedCrash(f"Verifier died (injected) after {me.files} files")
        yield from verify_checks(record, self.plan)
        self.ledger.verify(record)
        self.release(me, record)
        self.timeline.last_verified = self.timeline.now()
        if self.events.enabled:
            self.events.verified(record)

    def idle(self, me: WorkerClock) -> bool:
        """``me`` asks for its next message.  True when it just finished one that ``queue.join()``
        must count (``--shutdown cancel`` marks every message done)."""
        finished, me.working = me.working, False
        return finished and self.shutdown.marks_done

    def check_out(self, me: WorkerClock) -> tuple[bool, int]:
        """``me`` leaves on its pill (or at the end of its stream): say so, and return
        (put the pill back for a sibling?, how many pills to put for the next stage)."""
        if me.stage is not Stage.DISPATCH:  # the dispatcher ends its stream; it gets no pill
            me.pill()
        if me.stage is Stage.S3:
            self.events.s3_done(me.name)
        elif me.stage is Stage.API:
            self.events.api_done(me.name)
        relay = self.shutdown.relay and me.stage in (Stage.S3, Stage.API)
        next_stage = self.shutdown.check_out(me.stage) if me.stage in NEXT else None
        if next_stage is None:
            return relay, 0
        self.timeline.pills_sent(next_stage)
        return relay, self.crew.alive(next_stage)

    def in_hand(self, name: str) -> Hands | None:
        """What worker ``name`` still holds in its hand-off buffers (``--batch N``), for a worker
        that died to give back: None with one-at-a-time hand-offs."""
        clock = self.timeline.workers.get(name)
        return None if clock is None else clock.hands

    def exited(self, name: str) -> None:
        clock = self.timeline.workers.get(name)
        if clock is not None:
            clock.exited()

    def worker_died(self, stage: Stage, name: str, exc: BaseException) -> None:
        """A worker loop raised: the file it held fails; its stage may now be dead."""
        self.exited(name)
        self.ledger.errors.append(f"{name}: {exc}")
        held = self.ledger.held_by(name)
        if held is not None:
            self.ledger.settle(held, Outcome.FAILED, f"worker crashed: {exc}")
            self.ledger.release(name)
        self.notices.notice(f"💥 {name} died: {exc!r}")
        if self.crew.died(stage, exc):
            self.notices.notice(f"💥 every {stage.value} worker is dead: cancelling what is queued, draining the rest")

    # The coordinator ----------------------------------------------------------------------
    def end_stream(self, stage: Stage) -> str:
        """The coordinator ends ``stage``'s input stream now: note when, and return how - the
        strategy's name (common/shutdown.py), or ``"ended"`` when its last producer already did."""
        if not self.shutdown.coordinator_ends(stage):
            return "ended"
        self.timeline.pills_sent(stage)
        return self.shutdown.strategy

    def pills_for(self, stage: Stage, live: int) -> int:
        """How many pills the coordinator puts to end ``stage``'s stream for ``live`` consumers: one
        each (one in all under relay; none when the last producer out already put them)."""
        return self.shutdown.pills_for(live) if self.shutdown.coordinator_ends(stage) else 0

    def alive(self, stage: Stage) -> int:
        return self.crew.alive(stage)

    def tend(self) -> None:
        """What every coordinator wait also does: end the grace period when it is over."""
        self.stop.check_grace()

    def must_drain(self, stage: Stage) -> bool:
        """Whether the coordinator empties ``stage``'s queue now (aborting, or the stage is dead)."""
        return self.stop.aborting or stage in self.crew.dead

    def drained(self, stage: Stage, message: Message) -> None:
        """The coordinator emptied the queue of a dead or aborted stage; ``message`` was in it."""
        if isinstance(message, FileRecord) and not self.stop.aborting:
            self.ledger.settle(message, Outcome.CANCELLED, f"{stage.value} stage dead")

    def on_signal(self, name: str) -> None:
        self.stop.on_signal(name)

    # Real I/O (--io real) ---------------------------------------------------------------
    def client_options(self) -> dict[str, Any] | None:
        """How the variant opens this run's clients (``open_clients`` keywords: the endpoints, pools
        sized to the workers, a finite timeout, the HTTP library), or None: simulated I/O opens none."""
        return None if self.io is None else self.io.options()

    def calling_with(self, opening: Any) -> Using:
        """The variant's clients as they open (``open_clients(**client_options())``, a context
        manager, or an async one): entered, they make this run's calls until it ends."""
        assert self.io is not None, "real I/O only"
        return self.io.using(opening)

    @property
    def clients(self) -> Any:
        """The run's open clients: what ``_wait_through`` makes each call with."""
        return self.io.clients if self.io is not None else None

    # The end -------------------------------------------------------------------------------
    def report(self) -> Report:
        self.ledger.settle_remaining()
        self.timeline.finish()
        stopped_by = self.stop.stopped_by or ("crash" if self.crew.dead else None)
        report = self.ledger.report(self.variant, self.timeline, stopped_by)
        if self.io is not None:
            report.timing["io"] = self.io.timing(report.processed, self.timeline.start)
        if self.crew.crashes:
            raise WorkerCrashes("worker crashed", [e if isinstance(e, Exception) else RuntimeError(repr(e))
                                                   for e in self.crew.crashes], report)
        return report

    # Helpers -------------------------------------------------------------------------------
    def _hold(self, me: WorkerClock, record: FileRecord) -> None:
        me.begin(record)
        self.ledger.hold(me.name, record)

    def _reject(self, item: Rejected) -> None:
        self.ledger.reject(item)
        if self.events.enabled:
            self.events.notice(f"✗ Rejected: {item.error}")

    def _dead_reason(self, stage: Stage) -> str | None:
        later = self.crew.dead_after(stage)
        return None if later is None else f"{later.value} stage dead"

    def _cancel_rest(self, items: Iterator[FileRecord | Rejected]) -> None:
        try:
            self.ledger.cancel_unadmitted(items, self._dead_reason(Stage.DISPATCH))
        except InputError as exc:
            self._input_failed(exc)

    def _input_failed(self, exc: InputError) -> None:
        self.ledger.errors.append(str(exc))
        self.notices.notice(f"✗ {exc}")
