"""The pipeline on anyio (asyncio or trio backend): a task group, memory object streams between stages.

Read it beside ``threaded/pipeline.py`` and ``asyncio_version/pipeline.py``: the same functions in
the same order and the same worker loops; each queue becomes a memory object stream, so its
parameter is a send end or a receive end.  There are no pills: every producer holds its own
clone of the next stream's send end and closes it when it leaves (normally or not); when the
last clone is closed, the consumers' ``_get`` reads the end of the stream as the pill.  A
hand-off that need not wait takes no checkpoint, as with ``asyncio.Queue`` (docs/performance.md).
Everything that does not block comes from ``pillpipe.common``.
"""
from __future__ import annotations

import itertools
import math
from contextlib import AbstractAsyncContextManager, AbstractContextManager, closing, nullcontext, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Coroutine, TypeAlias

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from pillpipe.common.broker import BrokerError
from pillpipe.common.config import Config
from pillpipe.common.context import POLL, Args, Context, worker_name
from pillpipe.common.handoff import Hands
from pillpipe.common.journal import Journal
from pillpipe.common.model import PILL, FileRecord, Message, Stage
from pillpipe.common.report import Report
from pillpipe.common.stages import HANG, Steps, api_upload, s3_copy
from pillpipe.common.timing import WorkerClock

VARIANT = "anyio"
HANDLES_SIGNALS = True  # installs its own SIGINT/SIGTERM handlers for the whole run
CEDE_EVERY = 64  # unbounded sends between two checkpoints when none waits (as asyncio's put: CPython gh-87285)
_SENT = itertools.count(1)
Memory = MemoryObjectSendStream[FileRecord]  # a send end in one process
if TYPE_CHECKING:  # with --broker, a stage's queue on the broker is both ends (redis.asyncio: asyncio backend only)
    from pillpipe.asyncio_version.broker import Broker, Lane
    Send: TypeAlias = "MemoryObjectSendStream[FileRecord] | Lane"
    Receive: TypeAlias = "MemoryObjectReceiveStream[FileRecord] | Lane"


@dataclass(eq=False)
class Worker:
    """A task in the group: its own cancel scope (an abort cancels it) and an event set when it exits."""

    name: str
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)


async def dispatcher(ctx: Context, s3_send: Send) -> None:
    """Producer: admit each file and send it to the S3 stream (an abort cancels what is left)."""
    me = ctx.worker(Stage.DISPATCH)
    with closing(ctx.admitted()) as admitted:
        for record in admitted:
            await _put(ctx, me, s3_send, record)
    await _check_out(ctx, me, None, s3_send)


async def s3_uploader(index: int, ctx: Context, s3_receive: Receive, api_send: Send) -> None:
    """Consumer/producer: copy each file, pass it on; return at the end of the stream."""
    me = ctx.worker(Stage.S3, index)
    while True:
        record = await _get(ctx, me, s3_receive)
        if record is PILL:
            return await _check_out(ctx, me, s3_receive, api_send)
        if ctx.take(me, record):
            await _wait_through(ctx, s3_copy(record, ctx.plan, me.name))
            await _put(ctx, me, api_send, ctx.release(me, record))


async def api_uploader(index: int, ctx: Context, api_receive: Receive, verify_send: Send) -> None:
    """Consumer/producer: upload each file's metadata, pass it on; return at the end of the stream."""
    me = ctx.worker(Stage.API, index)
    while True:
        record = await _get(ctx, me, api_receive)
        if record is PILL:
            return await _check_out(ctx, me, api_receive, verify_send)
        if ctx.take(me, record):
            await _wait_through(ctx, api_upload(record, ctx.plan, me.name))
            await _put(ctx, me, verify_send, ctx.release(me, record))


async def verifier(ctx: Context, verify_receive: Receive) -> None:
    """Consumer: the single aggregator; records every verdict in the ledger."""
    me = ctx.worker(Stage.VERIFY)
    while True:
        record = await _get(ctx, me, verify_receive)
        if record is PILL:
            return await _check_out(ctx, me, verify_receive, None)
        await _wait_through(ctx, ctx.verify(me, record))


async def coordinator(ctx: Context, streams: list[Receive], stages: list[list[Worker]]) -> None:
    """The tutorial's shutdown, stage by stage - except that nobody sends pills: a stream ends when
    the last of its producers has exited.  The coordinator waits, tends, and notes each end."""
    s3_receive, api_receive, verify_receive = streams
    dispatchers, s3_uploaders, api_uploaders, verifiers = stages
    tend = partial(_tend, ctx, streams, stages)  # what every wait also does: signals, deaths, aborts
    await _join(dispatchers, tend)
    await _end_stream(ctx, s3_receive, Stage.S3, s3_uploaders, tend)
    await _join(s3_uploaders, tend)
    await _end_stream(ctx, api_receive, Stage.API, api_uploaders, tend)
    await _join(api_uploaders, tend)
    await _end_stream(ctx, verify_receive, Stage.VERIFY, verifiers, tend)
    await _join(verifiers, tend)


async def pipeline(ctx: Context) -> None:
    """Start every worker in one task group (same names as the threads), then coordinate until all exit."""
    if ctx.broker is not None:  # the queues are the broker's (docs/redis.md)
        return await _on_broker(ctx, ctx.broker)
    size = ctx.config.queue_size or math.inf  # 0 means unbounded
    (s3_send, s3_receive), (api_send, api_receive), (verify_send, verify_receive) = (
        anyio.create_memory_object_stream[FileRecord](size) for _ in range(3))
    streams: list[Receive] = [s3_receive, api_receive, verify_receive]  # the coordinator's ends: to drain a dead stage
    with _signals(ctx), s3_receive, api_receive, verify_receive:
        async with _clients(ctx), anyio.create_task_group() as tg:
            with s3_send, api_send, verify_send:  # the originals close: only the producers' clones remain
                stages = [
                    [_start(tg, ctx, Stage.DISPATCH, 1, dispatcher, ctx, s3_send.clone())],
                    [_start(tg, ctx, Stage.S3, i, s3_uploader, i, ctx, s3_receive.clone(), api_send.clone())
                     for i in range(1, ctx.config.s3_workers + 1)],
                    [_start(tg, ctx, Stage.API, i, api_uploader, i, ctx, api_receive.clone(), verify_send.clone())
                     for i in range(1, ctx.config.api_workers + 1)],
                    [_start(tg, ctx, Stage.VERIFY, 1, verifier, ctx, verify_receive.clone())],
                ]
            await coordinator(ctx, streams, stages)


def run(config: Config) -> Report:
    """Run the whole pipeline; every file ends in exactly one terminal state."""
    name = VARIANT if config.backend == "asyncio" else f"{VARIANT}-{config.backend}"
    ctx = Context(config.for_variant(VARIANT), name)  # one thread: no lock; an abort cancels each scope
    anyio.run(_journaled, ctx, pipeline, backend=config.backend)
    return ctx.report()


# The concurrency primitives ----------------------------------------------------------------
def _start(tg: TaskGroup, ctx: Context, stage: Stage, index: int, target: Callable[[*Args], Coroutine[Any, Any, None]],
           *args: *Args) -> Worker:
    worker = Worker(worker_name(stage, index))
    tg.start_soon(_guarded, ctx, stage, worker, target, args, name=worker.name)
    return worker


async def _guarded(ctx: Context, stage: Stage, worker: Worker, target: Callable[[*Args], Coroutine[Any, Any, None]],
                   args: tuple[*Args]) -> None:
    """A worker's whole life: an error in its loop is data for the coordinator, never a crash that
    cancels the task group.  However it ends, its stream ends are closed, so a dead producer
    never keeps a stream open."""
    try:
        with worker.scope:  # an abort cancels this scope only: the group and its other tasks carry on
            await target(*args)
    except Exception as exc:  # noqa: BLE001 - reported through the ledger and WorkerCrashes
        ctx.worker_died(stage, worker.name, exc)
        await _abandon(worker.name, args)
        await _flush(ctx.in_hand(worker.name))  # what it finished goes on, before its clones close
    else:
        ctx.exited(worker.name)
    finally:
        _close(*args)
        worker.done.set()


async def _abandon(name: str, args: tuple[Any, ...]) -> None:
    """A worker died on the broker's queues (``--broker``): what it took is acked - settled, or
    passed on - and it leaves, so its lease ends now, not when it runs out."""
    for arg in args:
        if hasattr(arg, "abandon"):  # a broker's queue (the Lane)
            await arg.abandon(name)


async def _get(ctx: Context, me: WorkerClock, stream: Receive) -> Message:
    """The next record; the end of the stream (its last send clone closed) reads as the pill.  Only a
    receive that waits is a checkpoint (as ``asyncio.Queue.get``); what the worker holds goes first.
    A broker's queue (``--broker``) acks what the worker took before, then takes the next (a pill)."""
    ctx.idle(me)
    if not isinstance(stream, MemoryObjectReceiveStream):
        return await stream.get(me.name)
    try:
        try:
            return stream.receive_nowait()
        except anyio.WouldBlock:
            await _flush(me.hands)
            return await stream.receive()
    except anyio.EndOfStream:
        return PILL


async def _put(ctx: Context, me: WorkerClock, stream: Send, record: FileRecord) -> None:
    """Send; an abort cancels a send blocked on a full buffer (it must never block forever).  Under
    ``--batch N`` into the outbox, handed on when full or when a consumer waits on the empty stream.
    On a broker's queue the record leaves this process's hands."""
    if not isinstance(stream, MemoryObjectSendStream):
        return await stream.put(ctx.handed_on(record))
    if me.hands is None:
        return await _send(stream, record)
    if me.hands.hold(stream, record) or _idle(stream):
        await _flush(me.hands)


async def _send(stream: Memory, record: FileRecord) -> None:
    """Send without a checkpoint when there is room or a waiting receiver (``send`` always takes
    one: a full trip round the event loop); only a send that must wait is a cancellation point -
    and, into an unbounded buffer, every CEDE_EVERY-th one, or its producer would never yield (as
    asyncio's unbounded put).  A bounded buffer needs no more: each trip round the loop releases
    the GIL for a moment, and thousands of them a second starve every other thread of it (the
    state's writer: docs/performance.md)."""
    try:
        stream.send_nowait(record)
    except anyio.WouldBlock:
        await stream.send(record)
    else:
        if next(_SENT) % CEDE_EVERY == 0 and stream.statistics().max_buffer_size == math.inf:
            await anyio.lowlevel.checkpoint()


def _idle(stream: Memory) -> bool:
    """A consumer waits on the empty stream."""
    stats = stream.statistics()
    return stats.tasks_waiting_receive > 0 and stats.current_buffer_used == 0


async def _flush(hands: Hands | None) -> None:
    """Hand on what the worker holds (``--batch N``; nothing with one-at-a-time hand-offs)."""
    if hands is not None:
        for record in hands.handed():
            await _send(hands.target, record)


async def _wait_through(ctx: Context, steps: Steps) -> None:
    """Do each wait a stage asks for, and each real call; every await is a cancellation point (an abort)."""
    for step in steps:
        if not isinstance(step, float):  # a real call: its result (or error) goes back into the stage
            steps.answer(await ctx.clients.outcome(step))
        elif step == HANG:
            await anyio.sleep_forever()
        else:
            await anyio.sleep(step)


def _clients(ctx: Context) -> AbstractAsyncContextManager[Any]:
    """Real I/O: the run's clients (aiobotocore on httpx, and httpx: both run on trio), pools sized to the workers."""
    options = ctx.client_options()
    if options is None:
        return nullcontext()
    from pillpipe.anyio_version.clients import open_clients
    return ctx.calling_with(open_clients(**options))


async def _check_out(ctx: Context, me: WorkerClock, inbox: Receive | None, outbox: Send | None) -> None:
    """A worker leaves: it closes its clones of both streams; the last send clone closed ends the
    next stage's stream (no pills)."""
    await _flush(me.hands)
    ctx.check_out(me)
    if inbox is not None and not isinstance(inbox, MemoryObjectReceiveStream):  # a broker's: it leaves
        await inbox.leave(me.name)
    _close(inbox, outbox)


async def _end_stream(ctx: Context, stream: Receive, stage: Stage, consumers: list[Worker],
                      tend: Callable[[], bool]) -> None:
    """Nothing to send: ``stage``'s stream ended when its last producer closed its clone.  Note when.
    A broker's queue (``--broker``) is ended with pills, as the other models end theirs."""
    if not isinstance(stream, MemoryObjectReceiveStream):
        return await _end_remote(ctx, stream, stage, consumers, tend)
    ctx.stream_closed(stage)


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
            await anyio.sleep(POLL)
    except BrokerError as exc:
        ctx.broker_gone(exc)


def _live(workers: list[Worker]) -> int:
    return sum(not worker.done.is_set() for worker in workers)


def _close(*ends: object) -> None:
    for end in ends:
        if isinstance(end, (MemoryObjectSendStream, MemoryObjectReceiveStream)):
            end.close()


async def _join(workers: list[Worker], tend: Callable[[], bool]) -> None:
    """Wait for ``workers`` to exit, tending to signals, dead stages and aborts meanwhile."""
    for worker in workers:
        while not worker.done.is_set():
            with anyio.move_on_after(POLL):
                await worker.done.wait()
            if tend():  # aborting for ABORT_BOUND: give up a task that ignores its cancellation
                return
    tend()


def _tend(ctx: Context, streams: list[Receive], stages: list[list[Worker]]) -> bool:
    """Look at the grace period; empty a dead stage's stream; on an abort, cancel every worker (True: give up)."""
    overdue = ctx.tend(partial(_depths, streams))
    for stream, stage in zip(streams, list(Stage)[1:]):
        if ctx.must_drain(stage):
            _drain(ctx, stream, stage)
    if ctx.aborting:
        for worker in (w for workers in stages for w in workers):
            worker.scope.cancel()
    return overdue


def _drain(ctx: Context, stream: Receive, stage: Stage) -> None:
    if not isinstance(stream, MemoryObjectReceiveStream):  # a broker's: its coordinating process drains it
        return
    while True:
        try:
            ctx.drained(stage, stream.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            return


def _depths(streams: list[Receive]) -> list[int]:
    """How many records wait in each stream, in stage order."""
    return [stream.statistics().current_buffer_used if isinstance(stream, MemoryObjectReceiveStream)
            else stream.qsize() for stream in streams]


async def _on_broker(ctx: Context, url: str) -> None:
    """The pipeline on the broker's queues (anyio's asyncio backend: redis.asyncio): one Lane per
    stage is both its send and its receive end, and pills end its stream, as in the other models;
    a heartbeat task keeps this process's leases, and the coordinating process watches every stage."""
    from pillpipe.asyncio_version.broker import Heartbeat, Lane, connect

    broker = await connect(url, ctx.run_id, wait=ctx.config.broker_wait)
    if ctx.coordinates:  # the run's lease: a worker process whose coordinator is gone leaves
        await broker.coordinate()
    lanes = [Lane(broker, stage, ctx.config.queue_size, lambda: ctx.leaving, partial(_written, ctx))
             for stage in list(Stage)[1:]]
    s3_lane, api_lane, verify_lane = lanes
    try:
        with _signals(ctx):
            async with Heartbeat(broker, ctx.coordinator_aborted):
                try:
                    async with _clients(ctx), anyio.create_task_group() as tg:
                        done = anyio.Event()  # the watch ends by this flag: redis.asyncio may swallow a cancellation
                        if ctx.coordinates:
                            tg.start_soon(_watch, ctx, lanes, done, name="Broker-Watch")
                        try:
                            stages = [
                                [_start(tg, ctx, Stage.DISPATCH, i, dispatcher, ctx, s3_lane)
                                 for i in ctx.here(Stage.DISPATCH)],
                                [_start(tg, ctx, Stage.S3, i, s3_uploader, i, ctx, s3_lane, api_lane)
                                 for i in ctx.here(Stage.S3)],
                                [_start(tg, ctx, Stage.API, i, api_uploader, i, ctx, api_lane, verify_lane)
                                 for i in ctx.here(Stage.API)],
                                [_start(tg, ctx, Stage.VERIFY, i, verifier, ctx, verify_lane)
                                 for i in ctx.here(Stage.VERIFY)],
                            ]
                            streams: list[Receive] = list(lanes)
                            await coordinator(ctx, streams, stages)
                        finally:
                            done.set()
                finally:  # on every exit path, as the other models do; a cancellation does not cut it short
                    with anyio.CancelScope(shield=True):
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
    done = anyio.Event()
    if ctx.unwritten(file_id, done.set):
        await done.wait()
    ctx.written(file_id)


async def _watch(ctx: Context, lanes: list[Lane], done: anyio.Event) -> None:
    """Every stage on the broker, looked at while the run goes on: a stage that holds files with no
    live consumer for --broker-wait seconds is dead, and what it holds is cancelled (as a dead
    stage's stream is drained in one process); the broker gone aborts the run."""
    while True:
        with anyio.move_on_after(ctx.watch_every):
            await done.wait()
            return
        try:
            for lane in lanes:
                if ctx.observed(lane.stage, await lane.backlog()):
                    for message in await lane.drain():
                        ctx.drained(lane.stage, message)
        except BrokerError as exc:
            return ctx.broker_gone(exc)


def _signals(ctx: Context) -> AbstractContextManager[None]:
    """SIGINT/SIGTERM for the run, before any worker starts (not ``open_signal_receiver``: that is in
    only once the loop turns).  The handler runs on the loop's thread, which also reads the input."""
    return ctx.signals(reads_here=True)


async def _journaled(ctx: Context, main: Callable[[Context], Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` while a writer task commits the run's state (``--state``), each commit on a
    worker thread so the loop never waits on the disk; the writer ends by its own flag once
    ``main`` has returned (a commit is never abandoned: ``run_sync`` waits for it)."""
    nudge, wakes = anyio.create_memory_object_stream[None](1)
    journal = ctx.writer(partial(_nudge, nudge))
    if journal is None:
        return await main(ctx)
    with nudge, wakes:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_write, journal, wakes, name="State-Writer")
            try:
                await main(ctx)
            finally:
                journal.stop()


async def _write(journal: Journal, wakes: MemoryObjectReceiveStream[None]) -> None:
    """The writer: commit each batch when it is due (on a thread: the loop runs on), the rest at the end."""
    while (rows := journal.batch()) is not None:
        if rows:
            await anyio.to_thread.run_sync(journal.commit, rows)
            journal.written(rows)  # on the loop: a worker waiting for one of these rows acks now (--broker)
        else:
            with anyio.move_on_after(journal.idle()):
                await wakes.receive()


def _nudge(nudge: MemoryObjectSendStream[None]) -> None:
    """Wake the writer; a nudge already pending is enough."""
    with suppress(anyio.WouldBlock):
        nudge.send_nowait(None)
