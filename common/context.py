"""One run's shared state, and the non-blocking steps every variant's workers take.

The variants own the concurrency: queues, workers, waiting, pills.  Everything a worker does
between two blocking calls is a method here, named for what it means - ``take`` a file,
``release`` it to the next stage, ``verify`` it, ``check_out`` on the pill - so the worker loops
read like the tutorial's and the three models cannot drift apart.  The concerns live in their
own modules: the ledger (every file's state), the timeline (timing only), the crew (who is
alive), the stop (draining and aborting) and the shutdown strategy (how a stream ends).
"""
from __future__ import annotations

import os
import signal
import stat
import sys
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Callable, Generator, Iterator, Sequence, TextIO, TypeVarTuple, cast

from .config import Config
from .crew import Crew
from .events import Events
from .faults import FileDeath, InjectedCrash
from .handoff import Hands, hands_for
from .journal import Journal
from .ledger import Ledger
from .broker import Backlog, BrokerError
from .model import FileRecord, Message, Outcome, Rejected, Stage
from .progress import Progress, Snapshot, wanted
from .realio import RealIO, Using
from .remote import WATCH_EVERY, Remote
from .report import Report
from .shutdown import NEXT, Shutdown
from .source import InputError, open_input, records
from .stages import DONE, Gen, Steps, stepped, verify_checks
from .stop import Stop, Wakeup, take_early
from .timing import Timeline, WorkerClock
from .workload import generate_files

POLL = 0.05  # seconds: how often a waiting coordinator looks at signals, deaths and the grace period
Args = TypeVarTuple("Args")  # a worker's arguments, as its function takes them (each variant's ``_start``)
NAMED = 5  # files a "waiting for" line names (the rest are counted)
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


class InputInterrupted(BaseException):
    """Raised by a signal handler into a read of ``--input`` that must end now (see
    ``Context.interrupt_read``); ``admitted`` catches it.  A BaseException, so no ``except
    Exception`` in the reading code can swallow it."""


def _is_stream(stream: Any) -> bool:
    """Whether reading ``stream`` may block for good (a pipe, FIFO, terminal, socket, device)."""
    try:
        return not stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):  # an in-memory stream: never blocks
        return False


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
        self.progress: Progress | None = None  # the live view on stderr (common/progress.py), if shown
        if wanted(config.progress, config.quiet, config.files, config.input, sys.stderr):
            self.progress = Progress(sys.stderr, config.files if config.input is None else None)
        self.events = events_for(config) if self.progress is None else Events(None)  # the view replaces them
        # draining, aborting, a dead worker: said even with --quiet (above the view while it is shown)
        self.notices = Events(cast(TextIO, self.progress) if self.progress is not None else sys.stderr)
        self.io = RealIO(config, lock) if config.io == "real" else None  # real I/O: common/realio.py
        self.plan = config.stage_plan(self.events, self.io)
        self.ledger = Ledger(lock, config.details)
        self.timeline = Timeline(config.trace)
        self.crew = Crew(config.workers(), lock)
        self._wakeup = wakeup
        self.stop = Stop(self.notices, config.shutdown_grace, wakeup)
        self.shutdown = Shutdown(config.shutdown, {stage: self.crew.alive(stage) for stage in Stage}, lock)
        self._reading = False  # the dispatcher is inside a read of --input right now
        self._stream_input = False  # --input may block for good (pipe, FIFO, terminal): a drain stops reading it
        self._read = 0  # input records read so far
        self._unread_said = False
        self._admitting = False  # the dispatcher has started
        self.remote = Remote(config)  # --broker: this process's part in a run across processes
        if self.remote.on:  # the ledger's rows go to the broker
            self.journal = self.remote.journal(self.ledger, lock, self._broker_failed)
        else:
            self.journal = Journal.open(config, self.ledger, lock, self._state_failed, self.events)  # --state

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
        stage has died, cancel the rest instead - generated files as one count (never one by one),
        input records as they are read.  Closing it early (an abort) cancels what is unread."""
        self._admitting = True
        if self.config.input is None:
            return self._generated()
        return self._from_input()

    def _generated(self) -> Generator[FileRecord, None, None]:
        files, last = self.config.files, 0
        items = self.journal.unsettled(generate_files(files))  # a resume skips what it kept
        stop, crew, ledger, events = self.stop, self.crew, self.ledger, self.events
        try:
            for record in items:
                if stop.stopped_by is not None or crew.dead:
                    break
                last = record.id
                ledger.admit(record)
                if events.enabled:
                    events.dispatching(record)
                yield record
        finally:  # stopped, a stage dead, or closed by an abort: ids last+1..files are counted at once
            for first, end in self.journal.unsettled_ranges(last + 1, files):
                ledger.cancel_range(first, end, self._dead_reason(Stage.DISPATCH))

    def _from_input(self) -> Generator[FileRecord, None, None]:
        path = self.config.input
        assert path is not None  # admitted() reads --input only when it is given
        self._stream_input = path == "-" or not os.path.isfile(path)
        try:  # opening a FIFO waits for its writer: a signal that must stop the run may end that wait
            self._reading = True
            stream, fmt = open_input(path, self.config.input_format)
            self._reading = False
        except InputInterrupted:
            self._unread("a signal ended the wait for it to open")
            return
        finally:
            self._reading = False
        self._stream_input = self._stream_input or _is_stream(stream)
        items = self.journal.unsettled(records(self.config.files, stream, fmt))
        try:
            while (item := self._next_input(items)) is not None:
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
            if stream is not sys.stdin:
                stream.close()

    def _next_input(self, items: Iterator[Any]) -> Any:
        """The next input record, or None: at its end, once the stop says to read no further, or
        once a signal handler ended the read.  ``_reading`` is set before the stop is looked at,
        so a signal landing at any instant either is seen here or ends the read it interrupts; it
        is cleared inside the ``try`` (``interrupt_read`` clears it before it raises), so a second
        signal can never land in the handling of the first.  What is said happens after."""
        try:
            self._reading = True
            why = self._why_stop_reading()
            item = None if why else next(items, None)
            self._reading = False
        except InputInterrupted:
            why, item = "a signal ended the read", None
        finally:
            self._reading = False  # an InputError out of the read
        if why:
            self._unread(why)
        elif item is not None:
            self._read += 1
        return item

    def _why_stop_reading(self) -> str | None:
        """Why to read no further, or None: aborting, or stopping (a signal, a dead stage) with a
        stream for input - a pipe may never send another line, so a drain does not wait for one."""
        if self.stop.aborting:
            return "aborted"
        if self._stream_input and (self.stop.draining or self.crew.dead):
            return "a stream is not read on once the run stops"
        return None

    def _unread(self, why: str) -> None:
        """Say (once) that the input was not read to its end."""
        if not self._unread_said:
            self._unread_said = True
            self.ledger.errors.append(f"input not read to its end ({why}): {self._read} records were read, "
                                      "the rest is unknown")

    def interrupt_read(self) -> None:
        """For a signal handler that runs on the thread reading the input (asyncio, anyio, the
        sequential reference): a read that must end now - aborting, or draining a stream that may
        never send another line - is ended by raising ``InputInterrupted`` into it."""
        if self._reading and (self.stop.aborting or (self.stop.draining and self._stream_input)):
            self._reading = False  # one interruption per read: a second signal lands in no handler
            raise InputInterrupted

    def take(self, me: WorkerClock, record: FileRecord) -> bool:
        """``me`` took ``record`` off its queue: False when it must not be worked on (it is settled
        cancelled here: draining and never started, or a later stage is dead), else it is in
        ``me``'s hands.  Raises ``InjectedCrash`` when a die fault fires: the worker loop dies."""
        me.working = True
        self._adopt(record)
        if self.stop.draining and me.stage is Stage.S3 and record.s3_attempts == 0 and self.remote.settles_rest:
            self.ledger.settle(record, Outcome.CANCELLED)
            return False
        if self.crew.dead and (reason := self._dead_reason(me.stage)) is not None:
            self.ledger.settle(record, Outcome.CANCELLED, reason)
            return False
        self._hold(me, record)
        faults = self.plan.faults
        if faults.workers and faults.worker_dies(me.stage, me.index, me.files):
            raise InjectedCrash(f"{me.name} died (injected) after {me.files} files")
        if faults.deaths and faults.dies_on(me.stage, record.id):
            raise FileDeath(f"an {me.stage.value} worker died (injected) taking file {record.id}")
        return True

    def release(self, me: WorkerClock, record: FileRecord) -> FileRecord:
        """``me`` is done with ``record``: it goes on to the next stage."""
        me.end(record)
        self.ledger.release(me.name)
        return record

    def verify(self, me: WorkerClock, record: FileRecord) -> Steps:
        """The verifier's checks (real I/O: the object and the record are there; simulated: none),
        then its verdict, recorded in the ledger.  The variant drives it through ``_wait_through``."""
        me.working = True
        self._adopt(record)
        self._hold(me, record)
        faults = self.plan.faults
        if faults.verifier_after is not None and faults.verifier_crashes(me.files):
            raise InjectedCrash(f"Verifier died (injected) after {me.files} files")
        if self.io is None:  # nothing to check: the verdict now, no step to wait through
            self._verdict(me, record)
            return DONE
        return self._checked(me, record)

    @stepped
    def _checked(self, me: WorkerClock, record: FileRecord) -> Gen:
        yield from verify_checks(record, self.plan)
        self._verdict(me, record)

    def _verdict(self, me: WorkerClock, record: FileRecord) -> None:
        self.ledger.verify(record)
        self.release(me, record)  # the verifier's clock notes when: the report's last_verified_s
        if self.events.enabled:
            self.events.verified(record)

    def handed_on(self, record: FileRecord) -> FileRecord:
        """``record`` goes onto a broker's queue (``--broker``): from now on another process (or
        another worker of this one, which adopts it) holds it, and settles it."""
        self.ledger.pass_on(record)
        if record.last_stage is Stage.DISPATCH:  # the dispatcher's: the highest id it handed on
            self.remote.dispatched = max(self.remote.dispatched, record.id)
        return record

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
        error = str(exc) if isinstance(exc, FileDeath) else f"{name}: {exc}"
        if self.remote.broken(exc):
            return self.broker_gone(exc)
        self.ledger.errors.append(error)
        self.remote.note(error)
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

    def stream_closed(self, stage: Stage) -> None:
        """anyio: ``stage``'s stream ended as its last producer left, closing the last clone of
        its send side - before the coordinator, joining them, learns of it: note that instant
        (now, if a producer has not exited: the coordinator gave it up after an abort)."""
        producers = next(before for before, after in NEXT.items() if after is stage)
        self.timeline.pills_sent(stage, self.timeline.last_exit(producers))

    def pills_for(self, stage: Stage, live: int) -> int:
        """How many pills the coordinator puts to end ``stage``'s stream for ``live`` consumers: one
        each (one in all under relay; none when the last producer out already put them)."""
        return self.shutdown.pills_for(live) if self.shutdown.coordinator_ends(stage) else 0

    def alive(self, stage: Stage) -> int:
        return self.crew.alive(stage)

    # Across processes (--broker; common/remote.py) -------------------------------------------
    def here(self, stage: Stage) -> range:
        """The indices of ``stage``'s workers this process starts: all of them in one process; with
        ``--broker``, those of its role (the dispatcher, or one stage's workers)."""
        return self.remote.here(stage)

    @property
    def broker(self) -> str | None:
        """The broker's URL, or None: the queues are the variant's own, in this process."""
        return self.remote.url if self.remote.on else None

    @property
    def run_id(self) -> str:
        return self.remote.run

    @property
    def leaving(self) -> bool:
        """A worker on a broker's queue takes no more files: aborting - or, in a worker process,
        stopping (a signal): what it holds goes back to the broker for a sibling."""
        return self.stop.aborting or (self.stop.draining and not self.remote.settles_rest)

    @property
    def coordinates(self) -> bool:
        """This process ends the broker's streams (a worker process leaves that to its coordinator)."""
        return self.remote.coordinates

    watch_every = WATCH_EVERY  # how often the coordinating process looks at every stage's backlog

    def observed(self, stage: Stage, backlog: Backlog) -> bool:
        """The coordinating process looked at ``stage`` on the broker: True when what its queue holds
        must be drained - the stage is dead (files and no live consumer for --broker-wait seconds),
        or the run is stopping and these files were never started."""
        if self.stop.draining and stage is Stage.S3 and not self.stop.aborting:
            return True  # stopping: what no S3 worker has started is cancelled (as take() does in one process)
        if not self.remote.observe(stage, backlog):
            return False
        if self.crew.declare_dead(stage):
            self.ledger.errors.append(f"every {stage.value} worker is gone: no live consumer for "
                                      f"{self.config.broker_wait:g} s with {backlog.files} files")
            self.notices.notice(f"💥 no live {stage.value} worker for {self.config.broker_wait:g} s: "
                                "cancelling what it holds, draining the rest")
        return True

    def unwritten(self, file_id: int, wake: Callable[[], None]) -> bool:
        """A worker is about to ack file ``file_id``'s record on the broker: True when this process
        settled a row of it that the writer has not committed yet - ``wake`` is called (by the
        writer, on its thread or loop) once it is.  The variant's ``_written`` waits for that."""
        return self.journal.after(file_id, wake)

    def written(self, file_id: int) -> None:
        """After the wait: a row of ``file_id`` that could not be committed is a BrokerError - the
        record is not acked, so it goes back to a sibling once this worker's lease ends."""
        if self.journal.pending(file_id):
            raise BrokerError(f"file {file_id}'s outcome could not be committed to the broker: "
                              f"{self.journal.failure or self.remote.gone or 'the broker is gone'}")

    def broker_gone(self, exc: BaseException) -> None:
        """The broker went away: said once; the run aborts (the report says ``stopped_by: broker``;
        exit code 69)."""
        if self.remote.gone is not None:
            return
        self.remote.gone = str(exc)
        self.ledger.errors.append(str(exc))
        self.notices.notice(f"💥 {exc}: aborting")
        if self.stop.stopped_by is None:
            self.stop.stopped_by = "broker"
        self.stop.abort("the broker is gone")

    def coordinator_gone(self, why: str) -> None:
        """A worker process found its run's coordinator gone (its lease ran out, the run not ended):
        its workers took no more files and left; the report says ``stopped_by: coordinator`` and
        ``pillpipe worker`` exits 75."""
        if self.stop.stopped_by is None:
            self.stop.stopped_by = "coordinator"
            self.ledger.errors.append(why)

    def coordinator_aborted(self, why: str) -> None:
        """A worker process's heartbeat found its run aborted by the coordinator: it aborts as a
        second Ctrl-C would - its busy workers stop mid-file, and what they hold ends aborted
        (cancelled if never started), each row on the broker before its record is acked
        (``settle_held``).  Said in one line; the report says ``stopped_by: coordinator`` and
        ``pillpipe worker`` exits 75.  Called on the heartbeat's thread or loop, once or more."""
        if self.remote.aborted is not None:
            return
        self.remote.aborted = why
        if self.stop.stopped_by is None:
            self.stop.stopped_by = "coordinator"
        self.stop.abort(why)

    def settle_held(self) -> set[int]:
        """This process leaves the broker's queues: if it settles what is left (the coordinating
        process; a worker process whose run was aborted), what its workers hold settles now -
        aborted if started, else cancelled - so that each row reaches the broker before the record
        is acked (``Lane.close``).  The ids settled; none in a worker process that gives back."""
        return self.ledger.settle_remaining() if self.remote.settles_rest else set()

    def ended(self) -> None:
        """The coordinating process is done: every stream on the broker counts as ended."""
        self.remote.ended()

    def tend(self, depths: Callable[[], Sequence[int]] | None = None) -> bool:
        """What every coordinator wait also does, every POLL: end the grace period when it is over,
        say what a drain waits for (every WAIT_EVERY s).  ``depths`` gives the queues' depths, in
        stage order.  True once an abort has waited ABORT_BOUND for workers that do not exit: the
        coordinator stops waiting for them."""
        stop = self.stop
        self.notices.flush()  # a notice a signal handler could not write at once
        stop.check_grace()
        if stop.word_due():
            self.notices.notice(self.waiting_for(depths))
        if self.progress is not None and self.progress.due():
            self.progress.show(self.snapshot(depths))
        return stop.overdue()

    def snapshot(self, depths: Callable[[], Sequence[int]] | None = None) -> Snapshot:
        """What the progress view shows now: files done, per stage queued / busy / alive, the phase."""
        queued = list(depths()) if depths is not None else [0, 0, 0]
        busy = dict.fromkeys(Stage, 0)
        for worker, _ in self.ledger.held():
            clock = self.timeline.workers.get(worker)
            if clock is not None:
                busy[clock.stage] += 1
        stages = tuple((stage.value, depth, busy[stage], self.crew.alive(stage))
                       for stage, depth in zip(list(Stage)[1:], queued))
        stopping = self.stop.draining or self.stop.aborting
        phase = self.waiting_for(depths).removeprefix("⏳ ") if stopping else "running"
        total = self.config.files if self.config.input is None else None
        return Snapshot(self.ledger.settled(), total, stages, phase)

    def waiting_for(self, depths: Callable[[], Sequence[int]] | None = None) -> str:
        """``⏳ draining for 5 s (SIGTERM; aborting in 25 s): waiting for 2 files - file_100.pdf in
        S3-Worker-1 (5.0 s), ...; 3 queued``: what a stopping run waits for, in one line."""
        held = self.ledger.held()
        parts = []
        for worker, record in held[:NAMED]:
            clock = self.timeline.workers.get(worker)
            since = f" ({clock.holding_for():.1f} s)" if clock is not None else ""
            parts.append(f"{record.name} in {worker}{since}")
        if len(held) > NAMED:
            parts.append(f"{len(held) - NAMED} more")
        what = f"{len(held)} file{'s' * (len(held) != 1)} - {', '.join(parts)}" if held else "no file in a worker"
        queued = sum(depths()) if depths is not None else 0
        extra = f"; {queued} queued" if queued else ""
        if self._reading:
            extra += f"; the Dispatcher reading the input ({self._read} records so far)"
        return f"⏳ {self.stop.phase()}: waiting for {what}{extra}"

    def must_drain(self, stage: Stage) -> bool:
        """Whether the coordinator empties ``stage``'s queue now (aborting, or the stage is dead).
        Never a broker's queue: its coordinating process drains a dead stage as it watches it."""
        return not self.remote.on and (self.stop.aborting or stage in self.crew.dead)

    def drained(self, stage: Stage, message: Message) -> None:
        """The coordinator emptied the queue of a dead or aborted stage; ``message`` was in it.  On
        an abort it stays in flight: ``Ledger.settle_remaining`` settles it at the end (aborted if
        it had started, else cancelled), in one process or taken back from a broker."""
        if not isinstance(message, FileRecord):
            return
        if self.remote.on:
            self.ledger.readmit(message)
        if not self.stop.aborting:
            self.ledger.settle(message, Outcome.CANCELLED, f"{stage.value} stage dead" if stage in self.crew.dead
                               else None)

    @property
    def takes_back(self) -> bool:
        """On an abort the coordinating process takes back what is left on the broker's queues once
        its workers are gone, and settles it as one process settles what its queues hold."""
        return self.remote.coordinates and self.stop.aborting and self.remote.gone is None

    def on_signal(self, name: str) -> None:
        """A SIGINT/SIGTERM arrived (the variant's handler calls this)."""
        self.stop.on_signal(name)

    @contextmanager
    def signals(self, reads_here: bool) -> Iterator[None]:
        """SIGINT/SIGTERM are this run's from now on, even if SIGINT was inherited ignored: install
        the handlers (``signal.signal``, which runs between two bytecodes of the main thread even
        when an event loop cannot turn), replay a signal the command line held before they were in,
        and restore the old handlers after.  ``reads_here``: the handler runs on the thread that
        reads the input (one event loop, or no concurrency), so it may end a read that must stop.
        Outside the main thread signals are not ours to handle: nothing is installed."""
        handled = (signal.SIGINT, signal.SIGTERM)
        try:
            previous = {sig: signal.signal(sig, self._handler(reads_here)) for sig in handled}
        except ValueError:  # not the main thread
            yield
            return
        for name in take_early():
            self.on_signal(name)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _handler(self, reads_here: bool) -> Callable[[int, Any], None]:
        def handle(signum: int, frame: Any) -> None:
            self.on_signal(signal.Signals(signum).name)
            if reads_here:
                self.interrupt_read()

        return handle

    def could_not_start(self, stage: Stage, name: str, exc: BaseException) -> None:
        """A worker could not be started (no thread, no memory left): its stage goes on without it,
        or, if none of its workers started, is dead (the run then stops cleanly: exit 70)."""
        self.ledger.errors.append(f"{name} could not start: {exc}")
        self.notices.notice(f"💥 {name} could not start ({exc}); the run goes on without it")
        if self.crew.died(stage, exc):
            self.notices.notice(f"💥 no {stage.value} worker could start: cancelling what is queued, draining the rest")

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

    # The run's state (--state) ----------------------------------------------------------------
    def writer(self, wake: Callable[[], None]) -> Journal | None:
        """The state's writer starts: the journal it commits batch by batch (the ledger calls
        ``wake`` when a batch may be due), or None when there is nothing for it to do."""
        return self.journal.attach(wake)

    def _broker_failed(self, why: str) -> None:
        """A row could not be committed to the broker: it is gone."""
        self.broker_gone(ConnectionError(why))

    def _state_failed(self, why: str) -> None:
        """A batch could not be committed: stop like a drain (no new files; started ones finish),
        record nothing more, and say so.  The report says ``stopped_by: state``; exit code 70."""
        self.ledger.errors.append(why)
        self.notices.notice(f"⏹  {why}")
        if self.stop.stopped_by is None:  # a drain, as a first signal starts one: a signal now aborts
            self.stop.on_signal("state")

    # The end -------------------------------------------------------------------------------
    def report(self) -> Report:
        if not self._admitting and Stage.DISPATCH in self.crew.dead:  # the dispatcher never ran
            if self.config.input is None:
                for first, last in self.journal.unsettled_ranges(1, self.config.files):
                    self.ledger.cancel_range(first, last, "dispatch stage dead")
            else:
                self._unread("the dispatcher could not start")
        for name, clock in self.timeline.workers.items():  # given up ABORT_BOUND after an abort (threads)
            if clock.exited_at is None:
                held = self.ledger.held_by(name)
                what = f" holding {held.name}" if held is not None else ""
                self.ledger.errors.append(f"{name} did not exit after the abort{what}: given up")
                self.notices.notice(f"⏹  {name} did not exit after the abort{what}: given up")
        if self._reading:  # the dispatcher, given up, is still blocked in a read
            self._unread("the Dispatcher was still reading when it was given up")
        if self.remote.settles_rest:  # a worker process gave back what it held, for a sibling
            self.ledger.settle_remaining()
        self.journal.close()  # commits the last rows: every worker and the event loop are gone
        if self.progress is not None:
            self.progress.close(self.snapshot())
        self.timeline.finish()
        stopped_by = self.stop.stopped_by or ("crash" if self.crew.dead else None)
        if self.remote.coordinates:  # every process's rows, from the broker
            report = self.remote.report(self.ledger, self.variant, self.timeline, stopped_by, self.config.files,
                                        self.config.details, self._dead_reason(Stage.DISPATCH))
        else:
            report = self.ledger.report(self.variant, self.timeline, stopped_by)
        self.remote.close()
        if self.io is not None:
            report.timing["io"] = self.io.timing(report.processed, self.timeline.start)
        if self.crew.crashes:
            raise WorkerCrashes("worker crashed", [e if isinstance(e, Exception) else RuntimeError(repr(e))
                                                   for e in self.crew.crashes], report)
        return report

    # Helpers -------------------------------------------------------------------------------
    def _adopt(self, record: FileRecord) -> None:
        """A record from a broker's queue (``--broker``) is in this process's ledger from now on."""
        if self.remote.on:
            self.ledger.admit(record)

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
        """The dispatcher stopped early: read the rest of the input to cancel it, unless aborting
        (or a stream that may never end) - then the rest is unknown, and said so."""
        try:
            while (item := self._next_input(items)) is not None:
                self.ledger.cancel_unadmitted((item,), self._dead_reason(Stage.DISPATCH))
        except InputError as exc:
            self._input_failed(exc)

    def _input_failed(self, exc: InputError) -> None:
        self.ledger.errors.append(str(exc))
        self.notices.notice(f"✗ {exc}")
