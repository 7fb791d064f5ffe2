"""The pipeline on anyio (asyncio or trio backend): a task group, memory object streams between stages.

Read it beside ``threaded/pipeline.py`` and ``asyncio_version/pipeline.py``: the same functions
in the same order; each queue becomes a memory object stream, so its parameter splits into a
send end and a receive end.  There are no pills: every producer holds its own clone of the send
end and closes it when it exits (normally or not); when the last clone is closed, the
consumers' ``async for`` ends once the buffer is empty.  Everything that does not block comes
from ``common``.
"""
from __future__ import annotations

import math
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Coroutine, Iterator

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from pillpipe.common.config import Config
from pillpipe.common.context import POLL, Context, worker_name
from pillpipe.common.model import FileRecord, Stage
from pillpipe.common.report import Report
from pillpipe.common.stages import HANG, api_upload, s3_copy

VARIANT = "anyio"
HANDLES_SIGNALS = True  # receives SIGINT/SIGTERM itself for the whole run, then restores the handlers
Send = MemoryObjectSendStream[FileRecord]
Receive = MemoryObjectReceiveStream[FileRecord]


@dataclass(eq=False)
class Worker:
    """A task in the group: its own cancel scope (an abort cancels it) and an event set when it exits."""

    name: str
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)


async def dispatcher(ctx: Context, s3_send: Send) -> None:
    """Producer: admit each file and send it to the S3 stream; closing its clone ends that stream."""
    with s3_send:
        for record in ctx.admitted():
            await _put(ctx, s3_send, record)


async def s3_uploader(index: int, ctx: Context, s3_receive: Receive, api_send: Send) -> None:
    """Consumer/producer: copy each file, pass it on; done when the S3 stream ends."""
    name = worker_name(Stage.S3, index)
    clock = ctx.timeline.worker(name, Stage.S3)
    with s3_receive, api_send:
        async for record in s3_receive:
            if ctx.take(Stage.S3, index, clock, record):
                await _wait_through(ctx, s3_copy(record, ctx.plan, ctx.events, name))
                clock.end(record)
                await _put(ctx, api_send, record)
        clock.pill()
        ctx.events.s3_done(name)


async def api_uploader(index: int, ctx: Context, api_receive: Receive, verify_send: Send) -> None:
    """Consumer/producer: upload each file's metadata, pass it on; done when the API stream ends."""
    name = worker_name(Stage.API, index)
    clock = ctx.timeline.worker(name, Stage.API)
    with api_receive, verify_send:
        async for record in api_receive:
            if ctx.take(Stage.API, index, clock, record):
                await _wait_through(ctx, api_upload(record, ctx.plan, ctx.events, name))
                clock.end(record)
                await _put(ctx, verify_send, record)
        clock.pill()
        ctx.events.api_done(name)


async def verifier(ctx: Context, verify_receive: Receive) -> None:
    """Consumer: the single aggregator; records every verdict in the ledger."""
    clock = ctx.timeline.worker("Verifier", Stage.VERIFY)
    with verify_receive:
        async for record in verify_receive:
            ctx.verify(clock, record)
        clock.pill()


async def coordinator(ctx: Context, streams: list[Receive], stages: list[list[Worker]]) -> None:
    """No pills to send: a stream ends when its last producer exits.  Watch stage by stage, tending
    to signals, dead stages and aborts, and note when each stream closed."""
    for producers, stage in zip(stages, (Stage.S3, Stage.API, Stage.VERIFY)):
        await _join(ctx, producers, streams, stages)
        _closed(ctx, stage)
    await _join(ctx, stages[-1], streams, stages)


async def pipeline(ctx: Context) -> None:
    """Start every worker in one task group (same names as the threads), then coordinate until all exit."""
    size = ctx.config.queue_size or math.inf  # 0 means unbounded
    (s3_send, s3_receive), (api_send, api_receive), (verify_send, verify_receive) = (
        anyio.create_memory_object_stream[FileRecord](size) for _ in range(3))
    streams = [s3_receive, api_receive, verify_receive]  # the coordinator's ends: to drain a dead stage
    with _signals(ctx) as received, s3_receive, api_receive, verify_receive:
        async with anyio.create_task_group() as tg:
            if received is not None:
                tg.start_soon(_listen, ctx, received, name="signals")
            with s3_send, api_send, verify_send:  # the originals close: only the producers' clones remain
                stages = [
                    [_start(tg, ctx, Stage.DISPATCH, "Dispatcher", dispatcher, ctx, s3_send.clone())],
                    [_start(tg, ctx, Stage.S3, worker_name(Stage.S3, i), s3_uploader, i, ctx, s3_receive.clone(),
                            api_send.clone()) for i in range(1, ctx.config.s3_workers + 1)],
                    [_start(tg, ctx, Stage.API, worker_name(Stage.API, i), api_uploader, i, ctx, api_receive.clone(),
                            verify_send.clone()) for i in range(1, ctx.config.api_workers + 1)],
                    [_start(tg, ctx, Stage.VERIFY, "Verifier", verifier, ctx, verify_receive.clone())],
                ]
            await coordinator(ctx, streams, stages)
            tg.cancel_scope.cancel()  # every worker has exited; this stops the signal listener


def run(config: Config) -> Report:
    """Run the whole pipeline; every file ends in exactly one terminal state."""
    ctx = Context(config, VARIANT if config.backend == "asyncio" else f"{VARIANT}-{config.backend}", None)
    ctx.waker = None  # an abort cancels each worker's own scope: every await is a cancellation point
    anyio.run(pipeline, ctx, backend=config.backend)
    return ctx.report()


# The concurrency primitives ----------------------------------------------------------
def _start(tg: TaskGroup, ctx: Context, stage: Stage, name: str, target: Callable[..., Coroutine[Any, Any, None]],
           *args: Any) -> Worker:
    worker = Worker(name)
    tg.start_soon(_guarded, ctx, stage, worker, target, args, name=name)
    return worker


async def _guarded(ctx: Context, stage: Stage, worker: Worker, target: Callable[..., Coroutine[Any, Any, None]],
                   args: tuple) -> None:
    """A worker's whole life: an error in its loop is data for the coordinator, never a crash that
    cancels the task group.  Its stream ends are closed already (``with``), so a dead producer
    never keeps a stream open."""
    try:
        with worker.scope:  # an abort cancels this scope only: the group and its other tasks carry on
            await target(*args)
    except Exception as exc:  # noqa: BLE001 - reported through the ledger and WorkerCrashes
        ctx.worker_died(stage, worker.name, exc)
    else:
        ctx.exited(worker.name)
    finally:
        worker.done.set()


async def _wait_through(ctx: Context, steps: Iterator[float]) -> None:
    """Do the waiting a stage asks for; every await is a cancellation point, so an abort ends it."""
    for delay in steps:
        if delay == HANG:
            await anyio.sleep_forever()
        await anyio.sleep(delay)


async def _put(ctx: Context, stream: Send, record: FileRecord) -> None:
    """Send; an abort cancels a send blocked on a full buffer (it must never block forever)."""
    await stream.send(record)


def _closed(ctx: Context, stage: Stage) -> None:
    """Every producer of ``stage``'s stream has exited, so its last clone is closed: the stream ends
    (the timeline's counterpart of the pills being put)."""
    if not ctx.aborting:
        ctx.timeline.pills_sent(stage)


async def _join(ctx: Context, workers: list[Worker], streams: list[Receive], stages: list[list[Worker]]) -> None:
    """Wait for ``workers`` to exit, tending to signals, dead stages and aborts meanwhile."""
    for worker in workers:
        while not worker.done.is_set():
            with anyio.move_on_after(POLL):
                await worker.done.wait()
            _tend(ctx, streams, stages)
    _tend(ctx, streams, stages)


def _tend(ctx: Context, streams: list[Receive], stages: list[list[Worker]]) -> None:
    ctx.grace_expired()
    if ctx.aborting:
        for worker in (w for workers in stages for w in workers):
            worker.scope.cancel()
    for stream, stage in zip(streams, (Stage.S3, Stage.API, Stage.VERIFY)):
        if ctx.aborting or stage in ctx.dead_stages:
            _drain(ctx, stream, stage)


def _drain(ctx: Context, stream: Receive, stage: Stage) -> None:
    while True:
        try:
            ctx.drained(stage, stream.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            return


@contextmanager
def _signals(ctx: Context) -> Iterator[AsyncIterator[signal.Signals] | None]:
    """Receive SIGINT/SIGTERM from before any worker starts (even if SIGINT was ignored); afterwards
    restore the handlers that were there."""
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in handled}
    try:
        with anyio.open_signal_receiver(*handled) as received:
            yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _listen(ctx: Context, received: AsyncIterator[signal.Signals]) -> None:
    """First signal: drain; a second: abort (``ctx.on_signal`` keeps that state)."""
    async for signum in received:
        ctx.on_signal(signal.Signals(signum).name)
