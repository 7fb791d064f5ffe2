"""The pipeline on coroutines: asyncio tasks, ``asyncio.Queue`` between stages.

Read it beside ``threaded/pipeline.py``: the functions, their order and their
parameters are the same; only the concurrency primitives differ.  Everything that does not
block (the workload, the stage logic, the ledger, the report) comes from ``common``.
"""
from __future__ import annotations

import asyncio
import signal
import threading
from contextlib import closing, contextmanager
from typing import Any, Callable, Coroutine, Iterator

from pillpipe.common.config import Config, UsageError
from pillpipe.common.context import POLL, Context, worker_name
from pillpipe.common.model import PILL, FileRecord, Stage
from pillpipe.common.report import Report
from pillpipe.common.stages import HANG, api_upload, s3_copy

VARIANT = "asyncio"
HANDLES_SIGNALS = True  # installs its own SIGINT/SIGTERM handlers for the whole run
Queue = asyncio.Queue
Worker = asyncio.Task
STREAM_END = (asyncio.QueueShutDown,) if hasattr(asyncio, "QueueShutDown") else ()  # Queue.shutdown(): Python 3.13+


async def dispatcher(ctx: Context, s3_queue: Queue) -> None:
    """Producer: admit each file and put it on the S3 queue (an abort cancels what is left)."""
    with closing(ctx.admitted()) as admitted:
        for record in admitted:
            await _put(ctx, s3_queue, record)
    await _check_out(ctx, None, s3_queue, Stage.DISPATCH)


async def s3_uploader(index: int, ctx: Context, s3_queue: Queue, api_queue: Queue) -> None:
    """Consumer/producer: copy each file, pass it on; return on the pill."""
    name = worker_name(Stage.S3, index)
    clock = ctx.timeline.worker(name, Stage.S3)
    while True:
        try:
            record = await s3_queue.get()
        except STREAM_END:
            record = PILL
        if record is PILL:
            clock.pill()
            ctx.events.s3_done(name)
            return await _check_out(ctx, s3_queue, api_queue, Stage.S3)
        if ctx.take(Stage.S3, index, clock, record):
            await _wait_through(ctx, s3_copy(record, ctx.plan, ctx.events, name))
            clock.end(record)
            await _put(ctx, api_queue, record)
        _done(ctx, s3_queue)


async def api_uploader(index: int, ctx: Context, api_queue: Queue, verify_queue: Queue) -> None:
    """Consumer/producer: upload each file's metadata, pass it on; return on the pill."""
    name = worker_name(Stage.API, index)
    clock = ctx.timeline.worker(name, Stage.API)
    while True:
        try:
            record = await api_queue.get()
        except STREAM_END:
            record = PILL
        if record is PILL:
            clock.pill()
            ctx.events.api_done(name)
            return await _check_out(ctx, api_queue, verify_queue, Stage.API)
        if ctx.take(Stage.API, index, clock, record):
            await _wait_through(ctx, api_upload(record, ctx.plan, ctx.events, name))
            clock.end(record)
            await _put(ctx, verify_queue, record)
        _done(ctx, api_queue)


async def verifier(ctx: Context, verify_queue: Queue) -> None:
    """Consumer: the single aggregator; records every verdict in the ledger."""
    clock = ctx.timeline.worker("Verifier", Stage.VERIFY)
    while True:
        try:
            record = await verify_queue.get()
        except STREAM_END:
            record = PILL
        if record is PILL:
            clock.pill()
            return
        ctx.verify(clock, record)
        _done(ctx, verify_queue)


async def coordinator(ctx: Context, queues: list[Queue], stages: list[list[Worker]]) -> None:
    """The tutorial's shutdown: wait for every producer of a queue, then end its stream - by
    default one pill per consumer; ``--shutdown`` picks another strategy (common/shutdown.py)."""
    for queue_, producers, consumers, stage in zip(queues, stages, stages[1:], (Stage.S3, Stage.API, Stage.VERIFY)):
        await _join(ctx, producers, queues, stages)
        if ctx.shutdown.coordinator_ends(stage):
            await _end_stream(ctx, queue_, stage, consumers, queues, stages)
    await _join(ctx, stages[-1], queues, stages)


async def pipeline(ctx: Context) -> None:
    """Start every worker (same names as the threads), then coordinate until all exit."""
    size = ctx.config.queue_size
    s3_queue, api_queue, verify_queue = queues = [Queue(size), Queue(size), Queue(size)]
    with _signals(ctx):
        stages = [
            [_start(ctx, Stage.DISPATCH, "Dispatcher", dispatcher, ctx, s3_queue)],
            [_start(ctx, Stage.S3, worker_name(Stage.S3, i), s3_uploader, i, ctx, s3_queue, api_queue)
             for i in range(1, ctx.config.s3_workers + 1)],
            [_start(ctx, Stage.API, worker_name(Stage.API, i), api_uploader, i, ctx, api_queue, verify_queue)
             for i in range(1, ctx.config.api_workers + 1)],
            [_start(ctx, Stage.VERIFY, "Verifier", verifier, ctx, verify_queue)],
        ]
        await coordinator(ctx, queues, stages)


def run(config: Config) -> Report:
    """Run the whole pipeline; every file ends in exactly one terminal state."""
    ctx = Context(config, VARIANT, None)
    ctx.waker = None  # an abort cancels the tasks instead: every await is a cancellation point
    try:  # --loop uvloop: the same code on libuv's event loop (the uvloop extra)
        factory = __import__("uvloop").new_event_loop if config.loop == "uvloop" else None
    except ImportError:
        raise UsageError("--loop uvloop needs the uvloop extra: pip install 'pillpipe[uvloop]'") from None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(pipeline(ctx))
    return ctx.report()


# The concurrency primitives ----------------------------------------------------------
def _start(ctx: Context, stage: Stage, name: str, target: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> Worker:
    worker = asyncio.create_task(_guarded(ctx, stage, name, target, args), name=name)
    return worker


async def _guarded(ctx: Context, stage: Stage, name: str, target: Callable[..., Coroutine[Any, Any, None]], args: tuple) -> None:
    """A worker's whole life: an error in its loop is data for the coordinator, never a dead task
    that nobody notices."""
    try:
        await target(*args)
    except asyncio.CancelledError:  # an abort (or, under --shutdown cancel, the stream's end)
        pass
    except BaseException as exc:  # noqa: BLE001 - reported through the ledger and WorkerCrashes
        ctx.worker_died(stage, name, exc)
        return
    ctx.exited(name)


async def _wait_through(ctx: Context, steps: Iterator[float]) -> None:
    """Do the waiting a stage asks for; every await is cancellable, so an abort ends it at once."""
    for delay in steps:
        if delay == HANG:
            await asyncio.get_running_loop().create_future()
        await asyncio.sleep(delay)


async def _put(ctx: Context, queue_: Queue, item: FileRecord | object) -> None:
    """Put; an abort cancels a put blocked on a full queue (it must never block forever)."""
    await queue_.put(item)


async def _end_stream(ctx: Context, queue_: Queue, stage: Stage, consumers: list[Worker], queues: list[Queue],
                      stages: list[list[Worker]]) -> None:
    """End ``stage``'s input stream by the run's strategy (common/shutdown.py), tending meanwhile
    as ``_join`` does; ``cancel`` falls back to pills if a consumer died holding an item."""
    ctx.timeline.pills_sent(stage)
    if ctx.shutdown.strategy == "queue-shutdown":
        return queue_.shutdown()
    if ctx.shutdown.strategy == "cancel":
        drained = asyncio.create_task(queue_.join())
        while not drained.done() and not ctx.aborting and ctx.alive(stage) == len(consumers):
            await asyncio.wait([drained], timeout=POLL)
            _tend(ctx, queues, stages)
        if drained.done():  # every item handled: the idle consumers can go
            for worker in consumers:
                worker.cancel()
            return
        drained.cancel()
    sent = 0
    while sent < ctx.shutdown.pills_for(ctx.alive(stage)) and not ctx.aborting:
        try:
            async with asyncio.timeout(POLL):
                await queue_.put(PILL)
            sent += 1
        except TimeoutError:
            _tend(ctx, queues, stages)


async def _check_out(ctx: Context, inbox: Queue | None, outbox: Queue, stage: Stage) -> None:
    """A producer leaves: relay its pill to a sibling, or - the last one out under last-out - put
    the next stage's pills itself."""
    if ctx.shutdown.relay and inbox is not None:
        await _put(ctx, inbox, PILL)
    next_stage = ctx.shutdown.check_out(stage)
    if next_stage is not None:
        ctx.timeline.pills_sent(next_stage)
        for _ in range(ctx.alive(next_stage)):
            await _put(ctx, outbox, PILL)


def _done(ctx: Context, queue_: Queue) -> None:
    """Under ``cancel`` every item is marked done, for ``queue.join()``."""
    if ctx.shutdown.marks_done:
        queue_.task_done()


async def _join(ctx: Context, workers: list[Worker], queues: list[Queue], stages: list[list[Worker]]) -> None:
    """Wait for ``workers`` to exit, tending to signals, dead stages and aborts meanwhile."""
    pending = set(workers)
    while pending:
        _, pending = await asyncio.wait(pending, timeout=POLL)
        _tend(ctx, queues, stages)
    _tend(ctx, queues, stages)


def _tend(ctx: Context, queues: list[Queue], stages: list[list[Worker]]) -> None:
    ctx.grace_expired()
    if ctx.aborting:
        for worker in (w for workers in stages for w in workers):
            worker.cancel()
    for queue_, stage, consumers in zip(queues, (Stage.S3, Stage.API, Stage.VERIFY), stages[1:]):
        if ctx.aborting or stage in ctx.dead_stages:
            _drain(ctx, queue_, stage)


def _drain(ctx: Context, queue_: Queue, stage: Stage) -> None:
    while True:
        try:
            ctx.drained(stage, queue_.get_nowait())
        except (asyncio.QueueEmpty, *STREAM_END):  # empty, or empty and shut down
            return


@contextmanager
def _signals(ctx: Context) -> Iterator[None]:
    """Install SIGINT/SIGTERM handlers before any worker starts (even if SIGINT was ignored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = (signal.SIGINT, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in handled}
    for sig in handled:
        loop.add_signal_handler(sig, ctx.on_signal, sig.name)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)
