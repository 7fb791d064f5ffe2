"""The pipeline on threads: ``threading.Thread`` workers, ``queue.Queue`` between stages.

Read it beside ``asyncio_version/pipeline.py``: the same functions in the same order, the same
worker loops line for line; only the concurrency primitives (the ``_`` functions at the end)
differ.  Everything that does not block comes from ``pillpipe.common``.
"""
from __future__ import annotations

import queue
import threading
from contextlib import AbstractContextManager, closing, contextmanager, nullcontext
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TypeAlias

from pillpipe.common.broker import BrokerError
from pillpipe.common.config import Config
from pillpipe.common.context import POLL, Args, Context, worker_name
from pillpipe.common.handoff import Hands, share
from pillpipe.common.journal import Journal
from pillpipe.common.model import PILL, FileRecord, Message, Stage
from pillpipe.common.report import Report
from pillpipe.common.stages import HANG, Steps, api_upload, s3_copy
from pillpipe.common.timing import WorkerClock

if TYPE_CHECKING:  # the broker's queues (--broker) import redis-py: only a run on a broker does
    from pillpipe.threaded.broker import Broker, Lane

VARIANT = "threaded"
HANDLES_SIGNALS = True  # installs its own SIGINT/SIGTERM handlers for the whole run
Worker = threading.Thread
STREAM_END = (queue.ShutDown,) if hasattr(queue, "ShutDown") else ()  # Queue.shutdown(): Python 3.13+


class Aborted(Exception):
    """The run is aborting: stop where you are and leave the file in flight."""


class Queue(queue.Queue[Message]):
    """``queue.Queue``, plus hand-offs in batches under one lock round trip (``--batch N``,
    ``common/handoff.py``) and a count of the consumers waiting on it.  A batch wakes one thread:
    every wake-up is a context switch and a contest for the GIL, so a woken consumer that leaves
    work behind wakes the next one itself (and a producer that leaves room, the next producer)."""

    waiting = 0  # consumers blocked in ``get_many`` (read without the lock: a hint)
    is_shutdown = False  # Python < 3.13 has no Queue.shutdown(); 3.13 sets its own

    def put_many(self, items: Sequence[Message]) -> None:
        """Put ``items`` in order, as many at a time as there is room for."""
        with self.not_full:
            while items:
                while 0 < self.maxsize <= self._qsize():
                    self._check_open()
                    self.not_full.wait()
                self._check_open()
                room = self.maxsize - self._qsize() if self.maxsize > 0 else len(items)
                chunk, items = items[:room], items[room:]
                for item in chunk:
                    self._put(item)
                self.unfinished_tasks += len(chunk)
                self.not_empty.notify()
            if 0 < self.maxsize and self._qsize() < self.maxsize:
                self.not_full.notify()  # room is left: the next producer's turn

    def get_many(self, limit: int, consumers: int, block: bool = True) -> list[Message]:
        """Take up to ``limit`` messages (a fair share of what is queued), stopping after a pill.
        Waits for one unless ``block`` is False (then an empty queue gives ``[]``)."""
        with self.not_empty:
            while not self._qsize():
                self._check_open()
                if not block:
                    return []
                self.waiting += 1
                try:
                    self.not_empty.wait()
                finally:
                    self.waiting -= 1
            batch: list[Message] = []
            for _ in range(share(limit, self._qsize(), consumers)):
                batch.append(self._get())
                if batch[-1] is PILL:
                    break
            if self._qsize():
                self.not_empty.notify()  # work is left: the next consumer's turn
            self.not_full.notify()
            return batch

    def unget(self, items: list[Message]) -> None:
        """Give ``items`` back, first in line (a dead worker's unread batch)."""
        with self.not_empty:
            self.queue.extendleft(reversed(items))
            self.not_empty.notify()

    def _check_open(self) -> None:
        if self.is_shutdown:  # Queue.shutdown(), Python 3.13+: what get() and put() raise
            raise queue.ShutDown  # type: ignore[attr-defined,unused-ignore]  # 3.13+


if TYPE_CHECKING:
    Channel: TypeAlias = "Queue | Lane"  # what runs between two stages: a queue here, or a broker's (--broker)


def dispatcher(ctx: Context, s3_queue: Channel) -> None:
    """Producer: admit each file and put it on the S3 queue (an abort cancels what is left)."""
    me = ctx.worker(Stage.DISPATCH)
    with closing(ctx.admitted()) as admitted:
        for record in admitted:
            _put(ctx, me, s3_queue, record)
    _check_out(ctx, me, None, s3_queue)


def s3_uploader(index: int, ctx: Context, s3_queue: Channel, api_queue: Channel) -> None:
    """Consumer/producer: copy each file, pass it on; return on the pill."""
    me = ctx.worker(Stage.S3, index)
    while True:
        record = _get(ctx, me, s3_queue)
        if record is PILL:
            return _check_out(ctx, me, s3_queue, api_queue)
        if ctx.take(me, record):
            _wait_through(ctx, s3_copy(record, ctx.plan, me.name))
            _put(ctx, me, api_queue, ctx.release(me, record))


def api_uploader(index: int, ctx: Context, api_queue: Channel, verify_queue: Channel) -> None:
    """Consumer/producer: upload each file's metadata, pass it on; return on the pill."""
    me = ctx.worker(Stage.API, index)
    while True:
        record = _get(ctx, me, api_queue)
        if record is PILL:
            return _check_out(ctx, me, api_queue, verify_queue)
        if ctx.take(me, record):
            _wait_through(ctx, api_upload(record, ctx.plan, me.name))
            _put(ctx, me, verify_queue, ctx.release(me, record))


def verifier(ctx: Context, verify_queue: Channel) -> None:
    """Consumer: the single aggregator; records every verdict in the ledger."""
    me = ctx.worker(Stage.VERIFY)
    while True:
        record = _get(ctx, me, verify_queue)
        if record is PILL:
            return _check_out(ctx, me, verify_queue, None)
        _wait_through(ctx, ctx.verify(me, record))


def coordinator(ctx: Context, queues: list[Channel], stages: list[list[Worker]]) -> None:
    """The tutorial's shutdown, stage by stage: wait for every producer of a queue, then end its
    stream - one pill per consumer unless ``--shutdown`` says otherwise (common/shutdown.py)."""
    s3_queue, api_queue, verify_queue = queues
    dispatchers, s3_uploaders, api_uploaders, verifiers = stages
    tend = partial(_tend, ctx, queues, stages)  # what every wait also does: signals, deaths, aborts
    _join(dispatchers, tend)
    _end_stream(ctx, s3_queue, Stage.S3, s3_uploaders, tend)
    _join(s3_uploaders, tend)
    _end_stream(ctx, api_queue, Stage.API, api_uploaders, tend)
    _join(api_uploaders, tend)
    _end_stream(ctx, verify_queue, Stage.VERIFY, verifiers, tend)
    _join(verifiers, tend)


def pipeline(ctx: Context) -> None:
    """Start every worker this process runs (same names as the asyncio tasks), then coordinate until all exit."""
    with _signals(ctx):
        with _clients(ctx), _queues(ctx) as queues:
            s3_queue, api_queue, verify_queue = queues
            stages = [
                [_start(ctx, Stage.DISPATCH, i, dispatcher, ctx, s3_queue) for i in ctx.here(Stage.DISPATCH)],
                [_start(ctx, Stage.S3, i, s3_uploader, i, ctx, s3_queue, api_queue) for i in ctx.here(Stage.S3)],
                [_start(ctx, Stage.API, i, api_uploader, i, ctx, api_queue, verify_queue) for i in ctx.here(Stage.API)],
                [_start(ctx, Stage.VERIFY, i, verifier, ctx, verify_queue) for i in ctx.here(Stage.VERIFY)],
            ]
            coordinator(ctx, queues, stages)


def run(config: Config) -> Report:
    """Run the whole pipeline; every file ends in exactly one terminal state."""
    ctx = Context(config.for_variant(VARIANT), VARIANT, threading.Lock(), threading.Event())
    _journaled(ctx, pipeline)
    return ctx.report()


# The concurrency primitives ----------------------------------------------------------------
def _start(ctx: Context, stage: Stage, index: int, target: Callable[[*Args], None], *args: *Args) -> Worker:
    """Start a worker thread; one that cannot start (no thread left: ``ulimit -u``, ``-v``) is a
    worker that never lived - its stage goes on without it, or is dead - never a traceback."""
    name = worker_name(stage, index)
    worker = Worker(target=_guarded, args=(ctx, stage, name, target, args), name=name, daemon=True)
    try:
        worker.start()
    except (RuntimeError, MemoryError) as exc:  # "can't start new thread"
        ctx.could_not_start(stage, name, exc)
    return worker  # never started: is_alive() is False, so no wait ever waits for it


def _guarded(ctx: Context, stage: Stage, name: str, target: Callable[[*Args], None], args: tuple[*Args]) -> None:
    """A worker's whole life: an error in its loop is data for the coordinator, never a dead
    thread that nobody notices."""
    try:
        target(*args)
    except Aborted:
        pass
    except BaseException as exc:  # noqa: BLE001 - reported through the ledger and WorkerCrashes
        ctx.worker_died(stage, name, exc)
        _abandon(name, args)
        return _give_back(ctx.in_hand(name))
    ctx.exited(name)


def _abandon(name: str, args: tuple[Any, ...]) -> None:
    """A worker died on the broker's queues (``--broker``): what it took is acked - settled, or
    passed on - and it leaves, so its lease ends now, not when it runs out."""
    for arg in args:
        if hasattr(arg, "abandon"):  # a broker's queue (the Lane)
            arg.abandon(name)


def _give_back(hands: Hands | None) -> None:
    """A worker died with records in its hands (``--batch N``): its unread ones go back to the
    front of its queue, its finished ones on to the next stage."""
    if hands is None:
        return
    unread, unsent = hands.leftovers()
    if unread:
        hands.source.unget(unread)
    if unsent:
        hands.target.put_many(unsent)


def _get(ctx: Context, me: WorkerClock, queue_: Channel) -> Message:
    """The next message; a queue that was shut down (``--shutdown queue-shutdown``) reads as the pill.
    A broker's queue (``--broker``) acks what the worker took before, then takes the next."""
    if not isinstance(queue_, Queue):
        ctx.idle(me)
        return queue_.get(me.name)
    if ctx.idle(me):
        queue_.task_done()
    try:
        return queue_.get() if me.hands is None else _take(ctx, me, queue_)
    except STREAM_END:
        return PILL


def _take(ctx: Context, me: WorkerClock, queue_: Queue) -> Message:
    """Under ``--batch N``: the next message from the worker's inbox, else a batch in one lock
    round trip - handing on what it has finished first if it would have to wait."""
    hands = me.hands
    assert hands is not None
    if hands.inbox:
        return hands.inbox.pop()
    batch = queue_.get_many(hands.size, ctx.alive(me.stage), block=not hands.outbox)
    if not batch:  # it would wait: what it finished goes on first
        _flush(hands)
        batch = queue_.get_many(hands.size, ctx.alive(me.stage))
    return hands.took(queue_, batch)


def _put(ctx: Context, me: WorkerClock, queue_: Channel, record: FileRecord) -> None:
    """Put; a full queue never blocks forever: the coordinator empties the queue of a dead stage,
    and every queue on an abort.  Under ``--batch N``: into the worker's outbox, handed on when
    full or when a consumer waits on the empty queue.  On a broker's queue the record leaves this
    process's hands."""
    if not isinstance(queue_, Queue):
        return queue_.put(ctx.handed_on(record))
    hands = me.hands
    if hands is None:
        return queue_.put(record)
    if hands.hold(queue_, record) or (queue_.waiting and not queue_.qsize()):
        _flush(hands)


def _flush(hands: Hands) -> None:
    """Hand on every finished record in the outbox, in one lock round trip."""
    if hands.outbox:
        hands.target.put_many(hands.handed())


def _wait_through(ctx: Context, steps: Steps) -> None:
    """Do what a stage asks for: each wait on the run's wake-up event, so an abort ends it at once;
    each real call with the run's clients (nothing wakes a thread in a socket read: an abort waits
    for the call to end, its timeout finite)."""
    for step in steps:
        if isinstance(step, float):
            aborted = ctx.wakeup.wait(None if step == HANG else step)
        else:  # a real call: its result (or error) goes back into the stage
            steps.answer(ctx.clients.outcome(step))
            aborted = ctx.wakeup.wait(0)
        if aborted:
            raise Aborted


def _clients(ctx: Context) -> AbstractContextManager[Any]:
    """Real I/O: open the run's clients - boto3, and urllib3 or httpx - shared by every thread, pools
    sized to the workers; simulated I/O opens none (nor imports their libraries)."""
    options = ctx.client_options()
    if options is None:
        return nullcontext()
    from pillpipe.threaded.clients import open_clients
    return ctx.calling_with(open_clients(**options))


def _check_out(ctx: Context, me: WorkerClock, inbox: Channel | None, outbox: Channel | None) -> None:
    """A worker leaves: put its pill back for a sibling (relay), or - the last one out under
    last-out - put the next stage's pills itself."""
    if me.hands is not None:
        _flush(me.hands)
    relay, pills = ctx.check_out(me)
    if inbox is not None and not isinstance(inbox, Queue):  # a broker's: it leaves (its pill is dropped)
        return inbox.leave(me.name)
    if relay and inbox is not None:
        inbox.put(PILL)
    if outbox is not None:
        for _ in range(pills):
            outbox.put(PILL)


def _end_stream(ctx: Context, queue_: Channel, stage: Stage, consumers: list[Worker], tend: Callable[[], bool]) -> None:
    """End ``stage``'s input stream the run's way; tend while a full queue makes it wait, so a
    consumer that dies meanwhile never leaves a pill that nobody takes."""
    if not isinstance(queue_, Queue):
        return _end_remote(ctx, queue_, stage, consumers, tend)
    if ctx.end_stream(stage) == "queue-shutdown":
        return queue_.shutdown()  # type: ignore[attr-defined,no-any-return,unused-ignore]  # 3.13+ (Config checks)
    pills, sent = ctx.pills_for(stage, _live(consumers)), 0
    while sent < pills and not ctx.aborting:
        try:
            queue_.put(PILL, timeout=POLL)
            sent += 1
        except queue.Full:
            tend()


def _end_remote(ctx: Context, lane: Lane, stage: Stage, consumers: list[Worker], tend: Callable[[], bool]) -> None:
    """End ``stage``'s stream on the broker - the coordinating process only: once no file is queued
    or held (a killed worker's is reclaimed first, an orphaned processing list swept back), one
    pill per live consumer wherever it runs, again while consumers remain (a late joiner gets its
    pill, a dead one none), until none is left; then the stream is marked ended (a worker that
    joins later leaves at once)."""
    if not ctx.coordinates:
        return
    ctx.end_stream(stage)
    try:
        while not ctx.aborting:
            backlog = lane.backlog()
            if backlog.files == 0 and not lane.sweep():
                if backlog.live == 0 and _live(consumers) == 0:
                    return lane.end()
                lane.end_stream()
            if tend() or ctx.wakeup.wait(POLL):
                return
    except BrokerError as exc:
        ctx.broker_gone(exc)


def _live(workers: list[Worker]) -> int:
    return sum(worker.is_alive() for worker in workers)


def _join(workers: list[Worker], tend: Callable[[], bool]) -> None:
    """Wait for ``workers`` to exit, tending to signals, dead stages and aborts meanwhile."""
    for worker in workers:
        while worker.is_alive():
            worker.join(POLL)
            if tend():  # an abort has waited ABORT_BOUND: a thread stuck in a call nothing wakes is given up
                return
    tend()


def _tend(ctx: Context, queues: list[Channel], stages: list[list[Worker]]) -> bool:
    """Look at the grace period; empty the queue of a dead stage; on an abort, pill the idle.
    True once the abort has waited long enough for workers that do not exit."""
    overdue = ctx.tend(partial(_depths, queues))
    for queue_, stage, consumers in zip(queues, list(Stage)[1:], stages[1:]):
        if ctx.must_drain(stage):
            _drain(ctx, queue_, stage)
        if ctx.aborting and isinstance(queue_, Queue):  # a broker's: its workers here leave (ctx.leaving)
            for _ in range(_live(consumers)):
                try:
                    queue_.put_nowait(PILL)
                except queue.Full:
                    break
    return overdue


def _drain(ctx: Context, queue_: Channel, stage: Stage) -> None:
    if not isinstance(queue_, Queue):  # a broker's: its coordinating process drains it (_watch)
        return
    while True:
        try:
            ctx.drained(stage, queue_.get_nowait())
        except (queue.Empty, *STREAM_END):  # empty, or empty and shut down
            return


def _depths(queues: list[Channel]) -> list[int]:
    """How many messages wait in each queue, in stage order (the drain's line, the progress view)."""
    return [queue_.qsize() for queue_ in queues]


def _queues(ctx: Context) -> AbstractContextManager[list[Channel]]:
    """The queues between stages: this process's own, or (``--broker``) the broker's."""
    if ctx.broker is None:
        size = ctx.config.queue_size
        return nullcontext([Queue(size), Queue(size), Queue(size)])
    return _on_broker(ctx, ctx.broker)


@contextmanager
def _on_broker(ctx: Context, url: str) -> Iterator[list[Channel]]:
    """The broker's queues, a heartbeat thread that keeps this process's leases (and reclaims the
    dead's), and in the coordinating process a thread that watches every stage (``_watch``)."""
    from pillpipe.threaded.broker import Heartbeat, Lane, connect

    broker = connect(url, ctx.run_id, wait=ctx.config.broker_wait)
    if ctx.coordinates:  # the run's lease: a worker process whose coordinator is gone leaves
        broker.coordinate()
    lanes = [Lane(broker, stage, ctx.config.queue_size, lambda: ctx.leaving, partial(_written, ctx))
             for stage in list(Stage)[1:]]
    done = threading.Event()
    watch = Worker(target=_watch, args=(ctx, lanes, done), name="Broker-Watch", daemon=True)
    try:
        with Heartbeat(broker, ctx.coordinator_aborted):
            if ctx.coordinates:
                watch.start()
            try:
                channels: list[Channel] = list(lanes)
                yield channels
            finally:
                done.set()
                if watch.ident is not None:
                    watch.join()
                _close_lanes(ctx, broker, lanes)
                if broker.orphaned:
                    ctx.coordinator_gone(broker.orphaned)
    finally:
        broker.close()


def _close_lanes(ctx: Context, broker: Broker, lanes: list[Lane]) -> None:
    """This process leaves the broker's queues: what its workers still hold is settled here and
    acked (if this process settles what is left: ``ctx.settle_held``) or goes back, their leases
    end.  On an abort the coordinating process then aborts the worker processes and waits for them
    (``Broker.abort``), and takes back every queue's messages, once: its ledger settles the
    records as one process settles what its queues hold (aborted, or cancelled if never started).
    Then every stream counts as ended."""
    settled = ctx.settle_held()
    for lane in lanes:
        lane.close(settled)
    try:
        if ctx.takes_back:
            broker.abort()
            for lane in lanes:
                while messages := lane.drain():
                    for message in messages:
                        ctx.drained(lane.stage, message)
    except BrokerError as exc:
        ctx.broker_gone(exc)
    ctx.ended()


def _written(ctx: Context, file_id: int) -> None:
    """Before a worker acks file ``file_id`` on the broker: wait until the row this process settled
    for it (if any) is committed by the writer thread (a BrokerError if it could not be)."""
    done = threading.Event()
    if ctx.unwritten(file_id, done.set):
        done.wait()
    ctx.written(file_id)


def _watch(ctx: Context, lanes: list[Lane], done: threading.Event) -> None:
    """Every stage on the broker, looked at while the run goes on: a stage that holds files with no
    live consumer for --broker-wait seconds is dead, and what it holds is cancelled (as a dead
    stage's queue is drained in one process); the broker gone aborts the run."""
    while not done.wait(ctx.watch_every):
        try:
            for lane in lanes:
                if ctx.observed(lane.stage, lane.backlog()):
                    for message in lane.drain():
                        ctx.drained(lane.stage, message)
        except BrokerError as exc:
            return ctx.broker_gone(exc)


def _signals(ctx: Context) -> AbstractContextManager[None]:
    """SIGINT/SIGTERM for the run, before any worker starts.  The handler runs on the main thread,
    the coordinator's: the dispatcher reads the input on its own thread (an abort gives it up)."""
    return ctx.signals(reads_here=False)


def _journaled(ctx: Context, main: Callable[[Context], None]) -> None:
    """Run ``main`` while a writer thread commits the run's state (``--state``) batch by batch, so
    no worker waits on the disk; the writer ends by its own flag once ``main`` has returned."""
    wake = threading.Event()
    journal = ctx.writer(wake.set)
    if journal is None:
        return main(ctx)
    writer = Worker(target=_write, args=(journal, wake), name="State-Writer", daemon=True)
    writer.start()
    try:
        main(ctx)
    finally:
        journal.stop()
        writer.join()


def _write(journal: Journal, wake: threading.Event) -> None:
    """The writer: commit each batch when it is due (blocking this thread only), the rest at the end."""
    while (rows := journal.batch()) is not None:
        if rows:
            journal.commit(rows)
            journal.written(rows)  # a worker waiting for one of these rows acks now (--broker)
        else:
            wake.clear()
            wake.wait(journal.idle())
