"""This process's part in a run across processes (``--broker``): the rules, none of the waiting.

A run on a broker is one pipeline spread over processes: the coordinating process (``pillpipe run
--broker``, or ``pillpipe dispatch``) runs the dispatcher and the coordinator, and each worker process
(``pillpipe worker``) runs the workers of one stage.  Every process runs the same variant code - the
same worker loops, the same coordinator - on the broker's queues; what differs is decided here:

- which workers start in this process (``here``): the role (``config.role``) says;
- the records a worker takes come from another process: it adopts them into its own ledger
  (``adopt``) and lets them go when it hands them on (``ledger.pass_on``), so a process holds only
  what is in its own hands, and settles only what it settles;
- every terminal row goes to the broker at once, before the worker acks the record it settled
  (``journal``: a row is on the broker before its record leaves the processing list, so a kill -9
  at any instant loses no outcome), first write wins per file;
- a stage that holds files with no live consumer for ``--broker-wait`` seconds is dead
  (``observe``): the coordinator cancels what it holds, as a dead stage in one process is drained;
- the broker going away stops the run (``gone``): exit 69, and a report of what this process knows;
- the report: every row on the broker, restored into a fresh ledger as ``--resume`` does (``report``).
"""
from __future__ import annotations

import time
import uuid
from contextlib import AbstractContextManager
from typing import Any, Callable

from .broker import STAGES, Backlog, BrokerError, LeaseLost, run_lost
from .config import Config
from .journal import Journal
from .ledger import Ledger
from .model import Stage
from .redisstore import RedisStore
from .report import Report
from .store import Batcher, StateWriteError, restore_all
from .timing import Timeline

ROLE_STAGES = {"all": tuple(Stage), "dispatch": (Stage.DISPATCH,), "s3": (Stage.S3,), "api": (Stage.API,),
               "verify": (Stage.VERIFY,)}
WATCH_EVERY = 0.25  # seconds between two looks of the coordinating process at every stage's backlog


def new_run_id() -> str:
    return f"run-{uuid.uuid4().hex[:12]}"


class Remote:
    """One process's part in a run across processes, or nothing (``config.broker`` is None: the
    run is in one process, and ``on`` is False)."""

    def __init__(self, config: Config) -> None:
        self.on = config.broker is not None
        self.url = config.broker or ""
        self.role = config.role
        self.run = config.run_id or new_run_id()
        self.wait = config.broker_wait
        self.dead: set[Stage] = set()  # stages declared dead by ``observe``
        self.gone: str | None = None  # why the broker is gone, once it is
        self.aborted: str | None = None  # why, once the coordinator aborted the run (a worker process learns it)
        self.dispatched = 0  # the highest id this process's dispatcher handed on to the broker
        self._orphaned: dict[Stage, float] = {}  # stage -> since when it holds files with no live consumer
        self._sizes = config.workers()
        self.store: RedisStore | None = None
        if self.on:
            self.store = RedisStore.open(self.url, self.run, self.wait)  # a broker that is not there: BrokerError, exit 69
            if self.coordinates:
                self.store.publish(config)

    @property
    def coordinates(self) -> bool:
        """This process ends the streams and writes the report (not a worker process)."""
        return self.on and self.role in ("all", "dispatch")

    @property
    def settles_rest(self) -> bool:
        """At the end, what this process still holds ends aborted or cancelled (a worker process
        gives it back to the broker instead, for a sibling - unless the run was aborted)."""
        return not self.on or self.coordinates or self.aborted is not None

    def here(self, stage: Stage) -> range:
        """The indices of ``stage``'s workers that run in this process."""
        return range(1, self._sizes[stage] + 1) if stage in ROLE_STAGES[self.role] else range(0)

    def journal(self, ledger: Ledger, lock: AbstractContextManager[Any] | None,
                on_failure: Callable[[str], None]) -> Journal:
        """The ledger's rows go to the broker through the variant's writer (a thread; a task that
        hands each commit to a thread in asyncio and anyio: never a blocking call on the event
        loop), due at once - whatever settled while a commit was on its way goes in the next one
        (a group commit).  A worker waits for its file's row to be committed before it acks the
        record (``Context.unwritten``, the Lane's ack): a kill -9 at any instant loses no outcome."""
        assert self.on
        journal = Journal(RedisStore.open(self.url, self.run, self.wait), lock, on_failure, batcher=Batcher(interval=0.0),
                          acks=True)
        ledger.keep(journal.sink)
        return journal

    # While the run goes on -----------------------------------------------------------------
    def observe(self, stage: Stage, backlog: Backlog) -> bool:
        """The coordinator looked at ``stage``: True when it is dead - files, and no live consumer
        for ``--broker-wait`` seconds (the coordinator then cancels what it holds)."""
        if stage in self.dead:
            return True
        if backlog.live or not backlog.files:
            self._orphaned.pop(stage, None)
            return False
        since = self._orphaned.setdefault(stage, time.monotonic())
        if time.monotonic() - since < self.wait:
            return False
        self.dead.add(stage)
        return True

    def broken(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the broker is gone (a lost lease is one worker's, not the broker's)."""
        return isinstance(exc, BrokerError) and not isinstance(exc, LeaseLost)

    def note(self, error: str) -> None:
        """Keep a worker's error on the broker, for the coordinator's report (best effort)."""
        if self.store is not None and self.gone is None and not self.coordinates:
            try:
                self.store.note(error)
            except BrokerError:
                pass

    def ended(self) -> None:
        """The run is over here: every stream counts as ended, so idle workers elsewhere leave."""
        if self.store is not None and self.coordinates and self.gone is None:
            try:
                self.store.end(STAGES)
            except BrokerError:
                pass

    # The end -------------------------------------------------------------------------------
    def report(self, ledger: Ledger, variant: str, timeline: Timeline, stopped_by: str | None, files: int,
               details: bool, reason: str | None) -> Report:
        """The run's report from every row on the broker (a fresh ledger restores them, as a resume
        does), plus this process's errors and every worker's.  A generated file with no row was
        lost if the dispatcher handed it on (at or below ``dispatched``), whatever stopped the run:
        the report says so, and counts it cancelled; above that it was never dispatched (the
        dispatcher stopped early): cancelled, with ``reason``.  With the broker gone: this
        process's own ledger, and why."""
        assert self.store is not None
        final = Ledger(None, details)
        try:
            if not self.store.holds_run():  # the broker came back without the run (no persistence)
                raise BrokerError(run_lost(self.url, self.run))
            settled = restore_all(self.store, final)
            final.errors += self.store.errors()
        except (BrokerError, StateWriteError) as exc:
            self.gone = self.gone or str(exc)
            ledger.errors.append(f"the report holds what this process knew: {self.gone}")
            return ledger.report(variant, timeline, "broker")
        lost = 0
        for first, last in settled.gaps(1, files):
            upto = min(last, self.dispatched)
            if first <= upto:  # handed on, and no outcome
                final.cancel_range(first, upto)
                lost += upto - first + 1
            final.cancel_range(max(first, upto + 1), last, reason)
        final.errors += ledger.errors
        if lost:
            final.errors.append(f"{lost} dispatched files have no outcome on the broker (lost): counted cancelled")
        return final.report(variant, timeline, stopped_by)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
