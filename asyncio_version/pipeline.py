"""The pipeline on coroutines: asyncio tasks, ``asyncio.Queue`` between stages.

Read it beside ``threaded/pipeline.py``: the same functions in the same order, the same
worker loops line for line; only the concurrency primitives (the ``_`` functions at the end)
differ.  Everything that does not block comes from ``pillpipe.common``.
"""
from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager, closing, nullcontext
from functools import partial
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Coroutine, TypeAlias

from pillpipe.common.broker import BrokerError
from pillpipe.common.config import Config, UsageError
from pillpipe.common.context import POLL, Args, Context, worker_name
from pillpipe.common.handoff import Hands
from pillpipe.common.journal import Journal
from pillpipe.common.model import PILL, FileRecord, Message, Stage
from pillpipe.common.report import Report
from pillpipe.common.stages import HANG, Steps, api_upload, s3_copy
from pillpipe.common.timing import WorkerClock

if TYPE_CHECKING:  # the broker's queues (--broker) import redis-py: only a run on a broker does
    from pillpipe.asyncio_version.broker import Broker, Lane

VARIANT = "asyncio"
HANDLES_SIGNALS = True  # installs its own SIGINT/SIGTERM handlers for the whole run
Worker = asyncio.Task[None]
CEDE_EVERY = 64  # an unbounded put never yields (CPython gh-87285): every 64th one lets the others run
STREAM_END = (asyncio.QueueShutDown,) if hasattr(asyncio, "QueueShutDown") else ()  # Queue.shutdown(): Python 3.13+
PILLS_AT_ONCE = 256  # the coordinator yields after putting this many pills


class Queue(asyncio.Queue[Message]):
    """``asyncio.Queue``, plus a count of the consumers waiting on it (``--batch N``: an idle
    consumer gets what a producer holds at once, ``common/handoff.py``)."""

    waiting = 0  # consumers parked in ``get`` under --batch N


if TYPE_CHECKING:
    Channel: TypeAlias = "Queue | Lane"  # what runs between two stages: a queue here, or a broker's (--broker)


async def dispatcher(ctx: Context, s3_queue: Channel) -> None:
    """Producer: admit each file and put it on the S3 queue (an abort cancels what is left)."""
    me = ctx.worker(Stage.DISPATCH)
    with closing(ctx.admitted()) as admitted:
        for record in admitted:
            await _put(ctx, me, s3_queue, record)
    await _check_out(ctx, me, None, s3_queue)


async def s3_uploader(index: int, ctx: Context, s3_queue: Channel, api_queue: Channel) -> None:
    """Consumer/producer: copy each file, pass it on; return on the pill."""
    me = ctx.worker(Stage.S3, index)
    while True:
        record = await _get(ctx, me, s3_queue)
        if record is PILL:
            return await _check_out(ctx, me, s3_queue, api_queue)
        if ctx.take(me, record):
            await _wait_through(ctx, s3_copy(record, ctx.plan, me.name))
            await _put(ctx, me, api_queue, ctx.release(me, record))


async def api_uploader(index: int, ctx: Context, api_queue: Channel, verify_queue: Channel) -> None:
    """Consumer/producer: upload each file's metadata, pass it on; return on the pill."""
    me = ctx.worker(Stage.API, index)
    while True:
        record = await _get(ctx, me, api_queue)
        if record is PILL:
            return await _check_out(ctx, me, api_queue, verify_queue)
        if ctx.take(me, record):
            await _wait_through(ctx, api_upload(record, ctx.plan, me.name))
            await _put(ctx, me, verify_queue, ctx.release(me, record))


async def verifier(ctx: Context, verify_queue: Channel) -> None:
    """Consumer: the single aggregator; records every verdict in the ledger."""
    me = ctx.worker(Stage.VERIFY)
    while True:
        record = await _get(ctx, me, verify_queue)
        if record is PILL:
            return await _check_out(ctx, me, verify_queue, None)
        await _wait_through(ctx, ctx.verify(me, record))


async def coordinator(ctx: Context, queues: list[Channel], stages: list[list[Worker]]) -> None:
    """The tutorial's shutdown, stage by stage: wait for every producer of a queue, then end its
    stream - one pill per consumer unless ``--shutdown`` says otherwise (common/shutdown.py)."""
    s3_queue, api_queue, verify_queue = queues
    dispatchers, s3_uploaders, api_uploaders, verifiers = stages
    tend = partial(_tend, ctx, queues, stages)  # what every wait also does: signals, deaths, aborts
    await _join(dispatchers, tend)
    await _end_stream(ctx, s3_queue, Stage.S3, s3_uploaders, tend)
    await _join(s3_uploaders, tend)
    await _end_stream(ctx, api_queue, Stage.API, api_uploaders, tend)
    await _join(api_uploaders, tend)
    await _end_stream(ctx, verify_queue, Stage.VERIFY, verifiers, tend)
    await _join(verifiers, tend)


async def pipeline(ctx: Context) -> None:
    """Start every worker this process runs (same names as the threads), then coordinate until all exit."""
    with _signals(ctx):
        async with _clients(ctx), _queues(ctx) as queues:
            s3_queue, api_queue, verify_queue = queues
            stages = [
                [_start(ctx, Stage.DISPATCH, i, dispatcher, ctx, s3_queue) for i in ctx.here(Stage.DISPATCH)],
                [_start(ctx, Stage.S3, i, s3_uploader, i, ctx, s3_queue, api_queue) for i in ctx.here(Stage.S3)],
                [_start(ctx, Stage.API, i, api_uploader, i, ctx, api_queue, verify_queue) for i in ctx.here(Stage.API)],
                [_start(ctx, Stage.VERIFY, i, verifier, ctx, verify_queue) for i in ctx.here(Stage.VERIFY)],
            ]
            await coordinator(ctx, queues, stages)


def run(config: Config) -> Report:
    """Run the whole pipeline; every file ends in exactly one terminal state."""
    ctx = Context(config.for_variant(VARIANT), VARIANT)  # one thread: no lock; an abort cancels the tasks
    try:  # --loop uvloop: the same code on libuv's event loop (the uvloop extra)
        factory = __import__("uvloop").new_event_loop if config.loop == "uvloop" else None
    except ImportError:
        raise UsageError("--loop uvloop needs the uvloop extra: pip install 'pillpipe[uvloop]'") from None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_journaled(ctx, pipeline))
    return ctx.report()


# The concurrency primitives ----------------------------------------------------------------
def _start(ctx: Context, stage: Stage, index: int, target: Callable[[*Args], Coroutine[Any, Any, None]],
           *args: *Args) -> Worker:
    name = worker_name(stage, index)
    return asyncio.create_task(_guarded(ctx, stage, name, target, args), name=name)


async def _guarded(ctx: Context, stage: Stage, name: str, target: Callable[[*Args], Coroutine[Any, Any, None]],
                   args: tuple[*Args]) -> None:
    """A worker's whole life: an error in its loop is data for the coordinator, never a dead
    task that nobody notices."""
    try:
        await target(*args)
    except asyncio.CancelledError:  # an abort (or, under --shutdown cancel, the stream's end)
        pass
    except BaseException as exc:  # noqa: BLE001 - reported through the ledger and WorkerCrashes
        ctx.worker_died(stage, name, exc)
        await _abandon(name, args)
        return await _give_back(ctx.in_hand(name))
    ctx.exited(name)


async def _abandon(name: str, args: tuple[Any, ...]) -> None:
    """A worker died on the broker's queues (``--broker``): what it took is acked - settled, or
    passed on - and it leaves, so its lease ends now, not when it runs out."""
    for arg in args:
        if hasattr(arg, "abandon"):  # a broker's queue (the Lane)
            await arg.abandon(name)


async def _give_back(hands: Hands | None) -> None:
    """A worker died with records in its hands (``--batch N``): its finished ones go on to the
    next stage (a task takes its input one at a time: it has no unread ones)."""
    if hands is not None:
        await _flush(hands)


def _get(ctx: Context, me: WorkerClock, queue_: Channel) -> Awaitable[Message]:
    """The next message, to await: the queue's own ``get()`` itself, so a parked worker holds no
    frame of ours (10,000 idle workers: 2 MiB less); ``_take`` when there is more to do.  A broker's
    queue (``--broker``) acks what the worker took before, then takes the next."""
    if not isinstance(queue_, Queue):
        ctx.idle(me)
        return queue_.get(me.name)
    if ctx.idle(me):
        queue_.task_done()
    if me.hands is None and ctx.config.shutdown != "queue-shutdown":
        return queue_.get()
    return _take(ctx, me, queue_)


async def _take(ctx: Context, me: WorkerClock, queue_: Queue) -> Message:
    """A queue that was shut down (``--shutdown queue-shutdown``) reads as the pill; under
    ``--batch N`` what the worker has finished goes on before it waits."""
    hands = me.hands
    try:
        if hands is None or not queue_.empty():
            return await queue_.get()
        await _flush(hands)
        queue_.waiting += 1
        try:
            return await queue_.get()
        finally:
            queue_.waiting -= 1
    except STREAM_END:
        return PILL


async def _put(ctx: Context, me: WorkerClock, queue_: Channel, record: FileRecord) -> None:
    """Put; a full queue never blocks forever: the coordinator empties the queue of a dead stage,
    and an abort cancels the put.  Under ``--batch N``: into the worker's outbox, handed on when
    full or when a consumer waits on the empty queue.  An unbounded queue's put never yields
    (CPython gh-87285): every CEDE_EVERY-th one does, so no producer runs a whole run ahead.  On a
    broker's queue the record leaves this process's hands."""
    if not isinstance(queue_, Queue):
        return await queue_.put(ctx.handed_on(record))
    hands = me.hands
    if hands is None:
        await queue_.put(record)
        if queue_.maxsize <= 0 and queue_.qsize() % CEDE_EVERY == 0:
            await asyncio.sleep(0)
        return
    if hands.hold(queue_, record) or (queue_.waiting and queue_.empty()):
        await _flush(hands)


async def _flush(hands: Hands) -> None:
    """Hand on every finished record in the outbox (a put that has room never yields: on an
    unbounded queue, a batch yields once)."""
    if hands.outbox:
        for record in hands.handed():
            await hands.target.put(record)
        if hands.target.maxsize <= 0:
            await asyncio.sleep(0)


async def _wait_through(ctx: Context, steps: Steps) -> None:
    """Do what a stage asks for: each wait, each real call with the run's clients; every await is
    cancellable, so an abort ends it at once, mid-call too."""
    for step in steps:
        if not isinstance(step, float):  # a real call: its result (or error) goes back into the stage
            steps.answer(await ctx.clients.outcome(step))
        elif step == HANG:
            await asyncio.get_running_loop().create_future()
        else:
            await asyncio.sleep(step)


def _clients(ctx: Context) -> AbstractAsyncContextManager[Any]:
    """Real I/O: open the run's clients - aiobotocore and aiohttp, or both on httpx - shared by every
    task, pools sized to the workers; simulated I/O opens none (nor imports their libraries)."""
    options = ctx.client_options()
    if options is None:
        return nullcontext()
    from pillpipe.asyncio_version.clients import open_clients
    return ctx.calling_with(open_clients(**options))


async def _check_out(ctx: Context, me: WorkerClock, inbox: Channel | None, outbox: Channel | None) -> None:
    """A worker leaves: put its pill back for a sibling (relay), or - the last one out under
    last-out - put the next stage's pills itself."""
    if me.hands is not None:
        await _flush(me.hands)
    relay, pills = ctx.check_out(me)
    if inbox is not None and not isinstance(inbox, Queue):  # a broker's: it leaves (its pill is dropped)
        return await inbox.leave(me.name)
    if relay and inbox is not None:
        await inbox.put(PILL)
    if outbox is not None:
        for _ in range(pills):
            await outbox.put(PILL)


async def _end_stream(ctx: Context, queue_: Channel, stage: Stage, consumers: list[Worker],
                      tend: Callable[[], bool]) -> None:
    """End ``stage``'s input stream the run's way; tend while a full queue makes it wait, so a
    consumer that dies meanwhile never leaves a pill that nobody takes."""
    if not isinstance(queue_, Queue):
        return await _end_remote(ctx, queue_, stage, consumers, tend)
    how = ctx.end_stream(stage)
    if how == "queue-shutdown":
        return queue_.shutdown()  # type: ignore[attr-defined,no-any-return,unused-ignore]  # 3.13+ (Config checks)
    if how == "cancel":  # the asyncio docs' recipe: once queue.join() says every message is done,
        done = asyncio.create_task(queue_.join())  # cancel the idle consumers; if one died, pills
        while not done.done() and _live(consumers) == len(consumers):
            await asyncio.wait([done], timeout=POLL)
            tend()
        if done.done():
            for worker in consumers:
                worker.cancel()
            return
        done.cancel()
    pills, sent = ctx.pills_for(stage, _live(consumers)), 0
    while sent < pills and not ctx.aborting:
        try:
            queue_.put_nowait(PILL)  # no timer for a pill that fits (an unbounded queue never waits)
            sent += 1
            if sent % PILLS_AT_ONCE == 0:  # let the woken consumers run and exit: their wake-ups
                await asyncio.sleep(0)  # never pile up (10,000 workers: 1.4 MiB at once)
            continue
        except asyncio.QueueFull:
            pass
        try:
            async with asyncio.timeout(POLL):
                await queue_.put(PILL)
            sent += 1
        except TimeoutError:
            tend()


async def _end_remote(ctx: Context, lane: Lane, stage: Stage, consumers: list[Worker],
                      tend: Callable[[], bool]) -> None:
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
            backlog = await lane.backlog()
            if backlog.files == 0 and not await lane.sweep():
                if backlog.live == 0 and _live(consumers) == 0:
                    return await lane.end()
                await lane.end_stream()
            if tend():
                return
            await asyncio.sleep(POLL)
    except BrokerError as exc:
        ctx.broker_gone(exc)


def _live(workers: list[Worker]) -> int:
    return sum(not worker.done() for worker in workers)


async def _join(workers: list[Worker], tend: Callable[[], bool]) -> None:
    """Wait for ``workers`` to exit, tending to signals, dead stages and aborts meanwhile.  One at a
    time, as the threads are joined: waiting on all at once would hang a callback on every pending
    task at every poll (10,000 workers: megabytes at shutdown), while one wait lets them all run."""
    for worker in workers:
        while not worker.done():
            await asyncio.wait((worker,), timeout=POLL)
            if tend():  # aborting for ABORT_BOUND: give up a task that ignores its cancellation
                return
    tend()


def _tend(ctx: Context, queues: list[Channel], stages: list[list[Worker]]) -> bool:
    """Look at the grace period; empty the queue of a dead stage; on an abort, cancel every task.
    True once the abort has waited long enough for workers that do not exit."""
    overdue = ctx.tend(partial(_depths, queues))
    for queue_, stage in zip(queues, list(Stage)[1:]):
        if ctx.must_drain(stage):
            _drain(ctx, queue_, stage)
    if ctx.aborting:
        for worker in (w for workers in stages for w in workers):
            worker.cancel()
    return overdue


def _drain(ctx: Context, queue_: Channel, stage: Stage) -> None:
    if not isinstance(queue_, Queue):  # a broker's: its coordinating process drains it (_watch)
        return
    while True:
        try:
            ctx.drained(stage, queue_.get_nowait())
        except (asyncio.QueueEmpty, *STREAM_END):  # empty, or empty and shut down
            return


def _depths(queues: list[Channel]) -> list[int]:
    """How many messages wait in each queue, in stage order (the drain's line, the progress view)."""
    return [queue_.qsize() for queue_ in queues]


def _queues(ctx: Context) -> AbstractAsyncContextManager[list[Channel]]:
    """The queues between stages: this process's own, or (``--broker``) the broker's."""
    if ctx.broker is None:
        size = ctx.config.queue_size
        return nullcontext([Queue(size), Queue(size), Queue(size)])
    return _on_broker(ctx, ctx.broker)


@asynccontextmanager
async def _on_broker(ctx: Context, url: str) -> AsyncIterator[list[Channel]]:
    """The broker's queues, a heartbeat task that keeps this process's leases (and reclaims the
    dead's), and in the coordinating process a task that watches every stage (``_watch``)."""
    from pillpipe.asyncio_version.broker import Heartbeat, Lane, connect

    broker = await connect(url, ctx.run_id, wait=ctx.config.broker_wait)
    if ctx.coordinates:  # the run's lease: a worker process whose coordinator is gone leaves
        await broker.coordinate()
    lanes = [Lane(broker, stage, ctx.config.queue_size, lambda: ctx.leaving, partial(_written, ctx))
             for stage in list(Stage)[1:]]
    try:
        async with Heartbeat(broker, ctx.coordinator_aborted):
            done = asyncio.Event()  # the watch ends by this flag: redis.asyncio may swallow a cancellation
            watch = asyncio.create_task(_watch(ctx, lanes, done), name="Broker-Watch") if ctx.coordinates else None
            try:
                channels: list[Channel] = list(lanes)
                yield channels
            finally:
                done.set()
                if watch is not None:
                    await watch
                await _close_lanes(ctx, broker, lanes)
                if broker.orphaned:
                    ctx.coordinator_gone(broker.orphaned)
    finally:
        await broker.close()


async def _close_lanes(ctx: Context, broker: Broker, lanes: list[Lane]) -> None:
    """This process leaves the broker's queues: what its workers still hold is settled here and
    acked (if this process settles what is left: ``ctx.settle_held``) or goes back, their leases
    end.  On an abort the coordinating process then aborts the worker processes and waits for them
    (``Broker.abort``), and takes back every queue's messages, once: its ledger settles the
    records as one process settles what its queues hold (aborted, or cancelled if never started).
    Then every stream counts as ended."""
    settled = ctx.settle_held()
    for lane in lanes:
        await lane.close(settled)
    try:
        if ctx.takes_back:
            await broker.abort()
            for lane in lanes:
                while messages := await lane.drain():
                    for message in messages:
                        ctx.drained(lane.stage, message)
    except BrokerError as exc:
        ctx.broker_gone(exc)
    ctx.ended()


async def _written(ctx: Context, file_id: int) -> None:
    """Before a worker acks file ``file_id`` on the broker: wait until the row this process settled
    for it (if any) is committed by the writer, off the loop (a BrokerError if it could not be)."""
    done = asyncio.Event()
    if ctx.unwritten(file_id, done.set):
        await done.wait()
    ctx.written(file_id)


async def _watch(ctx: Context, lanes: list[Lane], done: asyncio.Event) -> None:
    """Every stage on the broker, looked at while the run goes on: a stage that holds files with no
    live consumer for --broker-wait seconds is dead, and what it holds is cancelled (as a dead
    stage's queue is drained in one process); the broker gone aborts the run."""
    while True:
        try:
            async with asyncio.timeout(ctx.watch_every):
                await done.wait()
            return
        except TimeoutError:
            pass
        try:
            for lane in lanes:
                if ctx.observed(lane.stage, await lane.backlog()):
                    for message in await lane.drain():
                        ctx.drained(lane.stage, message)
        except BrokerError as exc:
            return ctx.broker_gone(exc)


def _signals(ctx: Context) -> AbstractContextManager[None]:
    """SIGINT/SIGTERM for the run, before any worker starts.  The handler runs on the loop's thread,
    which also reads the input: it may end a read that must stop."""
    return ctx.signals(reads_here=True)


async def _journaled(ctx: Context, main: Callable[[Context], Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` while a writer task commits the run's state (``--state``) batch by batch, each
    commit handed to a thread so the event loop never waits on the disk; the writer ends by its
    own flag once ``main`` has returned (never cancelled: a cancelled ``to_thread`` runs on)."""
    wake = asyncio.Event()
    journal = ctx.writer(wake.set)
    if journal is None:
        return await main(ctx)
    writer = asyncio.create_task(_write(journal, wake), name="State-Writer")
    try:
        await main(ctx)
    finally:
        journal.stop()
        await writer


async def _write(journal: Journal, wake: asyncio.Event) -> None:
    """The writer: commit each batch when it is due (on a thread: the loop runs on), the rest at the end."""
    while (rows := journal.batch()) is not None:
        if rows:
            await asyncio.to_thread(journal.commit, rows)
            journal.written(rows)  # on the loop: a worker waiting for one of these rows acks now (--broker)
        else:
            wake.clear()
            try:
                async with asyncio.timeout(journal.idle()):
                    await wake.wait()
            except TimeoutError:
                pass
