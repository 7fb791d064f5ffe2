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

from common.config import Config
from common.context import POLL, Context, worker_name
from common.model import PILL, FileRecord, Stage
from common.report import Report
from common.stages import HANG, api_upload, s3_copy

VARIANT = "asyncio"
HANDLES_SIGNALS = True  # installs its own SIGINT/SIGTERM handlers for the whole run
Queue = asyncio.Queue
Worker = asyncio.Task


class Aborted(Exception):
    """The run is aborting: stop where you are and leave the file in flight."""


async def dispatcher(ctx: Context, s3_queue: Queue) -> None:
    """Producer: admit each file and put it on the S3 queue (an abort cancels what is left)."""
    with closing(ctx.admitted()) as admitted:
        for record in admitted:
            await _put(ctx, s3_queue, record)


async def s3_uploader(index: int, ctx: Context, s3_queue: Queue, api_queue: Queue) -> None:
    """Consumer/producer: copy each file, pass it on; return on the pill."""
    name = worker_name(Stage.S3, index)
    clock = ctx.timeline.worker(name, Stage.S3)
    while True:
        record = await s3_queue.get()
        if record is PILL:
            clock.pill()
            ctx.events.s3_done(name)
            return
        if ctx.take(Stage.S3, index, clock, record):
            await _wait_through(ctx, s3_copy(record, ctx.plan, ctx.events, name))
            clock.end(record)
            await _put(ctx, api_queue, record)


async def api_uploader(index: int, ctx: Context, api_queue: Queue, verify_queue: Queue) -> None:
    """Consumer/producer: upload each file's metadata, pass it on; return on the pill."""
    name = worker_name(Stage.API, index)
    clock = ctx.timeline.worker(name, Stage.API)
    while True:
        record = await api_queue.get()
        if record is PILL:
            clock.pill()
            ctx.events.api_done(name)
            return
        if ctx.take(Stage.API, index, clock, record):
            await _wait_through(ctx, api_upload(record, ctx.plan, ctx.events, name))
            clock.end(record)
            await _put(ctx, verify_queue, record)


async def verifier(ctx: Context, verify_queue: Queue) -> None:
    """Consumer: the single aggregator; records every verdict in the ledger."""
    clock = ctx.timeline.worker("Verifier", Stage.VERIFY)
    while True:
        record = await verify_queue.get()
        if record is PILL:
            clock.pill()
            return
        ctx.verify(clock, record)


async def coordinator(ctx: Context, queues: list[Queue], stages: list[list[Worker]]) -> None:
    """The tutorial's shutdown: wait for every producer of a queue, then one pill per consumer."""
    for queue_, producers, consumers, stage in zip(queues, stages, stages[1:], (Stage.S3, Stage.API, Stage.VERIFY)):
        await _join(ctx, producers, queues, stages)
        await _send_pills(ctx, queue_, stage, queues, stages)
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
    asyncio.run(pipeline(ctx))
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
    except (Aborted, asyncio.CancelledError):
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


async def _send_pills(ctx: Context, queue_: Queue, stage: Stage, queues: list[Queue], stages: list[list[Worker]]) -> None:
    """One pill per live consumer (a worker that died, even meanwhile, takes none); an abort
    sends its own.  While the queue is full the coordinator keeps tending, as in ``_join``."""
    ctx.timeline.pills_sent(stage)
    sent = 0
    while sent < ctx.alive(stage) and not ctx.aborting:
        try:
            queue_.put_nowait(PILL)
            sent += 1
        except asyncio.QueueFull:
            await asyncio.sleep(POLL)
            _tend(ctx, queues, stages)


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
        except asyncio.QueueEmpty:
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
