"""The peers: the same pipeline on the libraries a user would otherwise pick, for the benchmarks.

pyper (``python-pyper``, threads or asyncio) and pypeln (threads, or asyncio tasks) run the
project's topology - one dispatcher, ``--s3-workers`` copiers, ``--api-workers`` uploaders, one
verifier, queues of ``--queue-size`` between them - and their stage functions do the project's
per-file work: the shared stage logic (``common/stages.py``: the same latencies, retries and
destination keys), the ledger, the verification and its digest, through one ``Context``, exactly as
the sequential reference does.  Each returns a ``Report`` that compares equal (``==``) to the
variants' and the sequential reference's, so a peer's numbers are for the same work, proven.

Each library is used the way its documentation shows: a stage is a plain function (a coroutine for
the async flavours) the library calls from its own workers; the verifier is the loop that reads
the pipeline's output.  Waiting is ``time.sleep`` in threads and ``asyncio.sleep`` in coroutines.
What the project adds on top - signals, faults that kill workers, aborts - is not asked of them.

Install them with the ``peers`` extra (``pip install '.[peers]'``).  pypeln 0.4.9 imports
``stopit``, which imports ``pkg_resources``: setuptools 82 dropped it, hence the extra's
``setuptools<82``.
"""
from __future__ import annotations

import asyncio
import threading
import time
import warnings
from typing import Any, AsyncIterator, Callable, Iterator

from pillpipe.common.config import Config
from pillpipe.common.context import Context
from pillpipe.common.model import FileRecord, Stage
from pillpipe.common.report import Report
from pillpipe.common.stages import api_upload, s3_copy

EXTRA = "pip install 'pillpipe[peers]'"
STEPS = {Stage.S3: s3_copy, Stage.API: api_upload}


class Work:
    """The project's per-file work, for a peer's stage functions to call (one clock per stage)."""

    def __init__(self, config: Config, name: str, threads: bool) -> None:
        self.ctx = Context(config, name, threading.Lock() if threads else None)
        self.clocks = {stage: self.ctx.worker(stage) for stage in Stage}

    def files(self) -> Iterator[FileRecord]:
        """The dispatcher's records, each admitted into the ledger as it is read."""
        return self.ctx.admitted()

    def begin(self, stage: Stage, record: FileRecord) -> Iterator[float]:
        """A copy or upload starts: the waits it asks for."""
        me = self.clocks[stage]
        self.ctx.idle(me)
        if not self.ctx.take(me, record):  # only a stop or a dead stage says no: never asked of a peer
            raise RuntimeError(f"{record.name} was not taken")
        return STEPS[stage](record, self.ctx.plan, me.name).waits()

    def end(self, stage: Stage, record: FileRecord) -> FileRecord:
        return self.ctx.release(self.clocks[stage], record)

    def verify(self, record: FileRecord) -> None:
        self.ctx.idle(self.clocks[Stage.VERIFY])
        for _ in self.ctx.verify(self.clocks[Stage.VERIFY], record).waits():
            pass  # simulated: the verifier's checks take no step

    def report(self) -> Report:
        for me in self.clocks.values():
            self.ctx.check_out(me)
            self.ctx.exited(me.name)
        return self.ctx.report()


def _thread_stage(work: Work, stage: Stage) -> Callable[[FileRecord], FileRecord]:
    def step(record: FileRecord) -> FileRecord:
        for delay in work.begin(stage, record):
            time.sleep(delay)
        return work.end(stage, record)
    return step


def _async_stage(work: Work, stage: Stage) -> Callable[[FileRecord], Any]:
    async def step(record: FileRecord) -> FileRecord:
        for delay in work.begin(stage, record):
            await asyncio.sleep(delay)
        return work.end(stage, record)
    return step


def _async_files(work: Work) -> Callable[[], AsyncIterator[FileRecord]]:
    async def files() -> AsyncIterator[FileRecord]:  # an async generator function: on the loop, not a thread
        for record in work.files():
            yield record
    return files


def pyper_thread(config: Config) -> Report:
    from pyper import task

    work, size = Work(config, "pyper-thread", threads=True), config.queue_size
    pipeline = (task(work.files, branch=True, throttle=size)
                | task(_thread_stage(work, Stage.S3), workers=config.s3_workers, throttle=size)
                | task(_thread_stage(work, Stage.API), workers=config.api_workers, throttle=size))
    for record in pipeline():
        work.verify(record)
    return work.report()


def pyper_async(config: Config) -> Report:
    from pyper import task

    work, size = Work(config, "pyper-async", threads=False), config.queue_size
    pipeline = (task(_async_files(work), branch=True, throttle=size)
                | task(_async_stage(work, Stage.S3), workers=config.s3_workers, throttle=size)
                | task(_async_stage(work, Stage.API), workers=config.api_workers, throttle=size))

    async def main() -> None:
        async for record in pipeline():
            work.verify(record)

    asyncio.run(main())
    return work.report()


def pypeln_thread(config: Config) -> Report:
    import pypeln as pl

    work, size = Work(config, "pypeln-thread", threads=True), config.queue_size
    stage = pl.thread.from_iterable(work.files(), maxsize=size)
    stage = pl.thread.map(_thread_stage(work, Stage.S3), stage, workers=config.s3_workers, maxsize=size)
    stage = pl.thread.map(_thread_stage(work, Stage.API), stage, workers=config.api_workers, maxsize=size)
    for record in stage:
        work.verify(record)
    return work.report()


def pypeln_task(config: Config) -> Report:
    import pypeln as pl

    work, size = Work(config, "pypeln-task", threads=False), config.queue_size

    async def main() -> None:
        stage = pl.task.from_iterable(_async_files(work)(), maxsize=size)
        stage = pl.task.map(_async_stage(work, Stage.S3), stage, workers=config.s3_workers, maxsize=size)
        stage = pl.task.map(_async_stage(work, Stage.API), stage, workers=config.api_workers, maxsize=size)
        async for record in stage:
            work.verify(record)

    asyncio.run(main())
    return work.report()


PEERS: dict[str, Callable[[Config], Report]] = {
    "pyper-thread": pyper_thread,
    "pyper-async": pyper_async,
    "pypeln-thread": pypeln_thread,
    "pypeln-task": pypeln_task,
}
LIBRARY = {"pyper-thread": "pyper", "pyper-async": "pyper", "pypeln-thread": "pypeln", "pypeln-task": "pypeln"}


class MissingPeer(RuntimeError):
    """A peer's library is not installed (one line: what to install)."""


def runner(name: str) -> Callable[[Config], Report]:
    """Peer ``name``'s run function, its library imported (so a probe measures the run, not the import)."""
    try:
        with warnings.catch_warnings():  # stopit (pypeln's) warns that pkg_resources is deprecated
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            __import__(LIBRARY[name])
    except ImportError as exc:
        raise MissingPeer(f"{name} needs {LIBRARY[name]}: {EXTRA} ({exc})") from None
    return PEERS[name]
