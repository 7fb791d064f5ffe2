"""The bare chain: the pipeline's four queues and worker counts passing plain items, nothing else.

No records, no ledger, no stage logic: a dispatcher puts ``files`` integers, S3 and API workers
pass them on, a verifier counts them, and the coordinator shuts the chain down with one pill
per consumer, stage by stage, exactly like the variants.  What it costs per item is what the
concurrency model alone costs; the sequential run of the stage logic is the other half of the
limit (see ``benchmarks.scenarios``).
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Callable

PILL = object()


def run_threads(files: int, s3_workers: int = 3, api_workers: int = 2, queue_size: int = 0) -> float:
    """Seconds to pass ``files`` items through the chain on threads."""
    q0, q1, q2 = queue.Queue[object](queue_size), queue.Queue[object](queue_size), queue.Queue[object](queue_size)
    count = [0]

    def dispatcher() -> None:
        for i in range(files):
            q0.put(i)

    def relay(src: queue.Queue[object], dst: queue.Queue[object]) -> None:
        while True:
            item = src.get()
            if item is PILL:
                return
            dst.put(item)

    def verifier() -> None:
        while True:
            item = q2.get()
            if item is PILL:
                return
            count[0] += 1

    start = time.perf_counter()
    stages = [[threading.Thread(target=dispatcher)],
              [threading.Thread(target=relay, args=(q0, q1)) for _ in range(s3_workers)],
              [threading.Thread(target=relay, args=(q1, q2)) for _ in range(api_workers)],
              [threading.Thread(target=verifier)]]
    for stage in stages:
        for worker in stage:
            worker.start()
    for q, producers, consumers in zip((q0, q1, q2), stages, stages[1:]):
        for worker in producers:
            worker.join()
        for _ in consumers:
            q.put(PILL)
    stages[-1][0].join()
    elapsed = time.perf_counter() - start
    assert count[0] == files
    return elapsed


def run_asyncio(files: int, s3_workers: int = 3, api_workers: int = 2, queue_size: int = 0) -> float:
    """Seconds to pass ``files`` items through the chain on asyncio tasks."""

    async def main() -> float:
        q0, q1, q2 = asyncio.Queue[object](queue_size), asyncio.Queue[object](queue_size), asyncio.Queue[object](queue_size)
        count = 0

        async def dispatcher() -> None:
            for i in range(files):
                await q0.put(i)

        async def relay(src: asyncio.Queue[object], dst: asyncio.Queue[object]) -> None:
            while True:
                item = await src.get()
                if item is PILL:
                    return
                await dst.put(item)

        async def verifier() -> None:
            nonlocal count
            while True:
                item = await q2.get()
                if item is PILL:
                    return
                count += 1

        start = time.perf_counter()
        stages = [[asyncio.create_task(dispatcher())],
                  [asyncio.create_task(relay(q0, q1)) for _ in range(s3_workers)],
                  [asyncio.create_task(relay(q1, q2)) for _ in range(api_workers)],
                  [asyncio.create_task(verifier())]]
        for q, producers, consumers in zip((q0, q1, q2), stages, stages[1:]):
            await asyncio.gather(*producers)
            for _ in consumers:
                await q.put(PILL)
        await stages[-1][0]
        elapsed = time.perf_counter() - start
        assert count == files
        return elapsed

    return asyncio.run(main())


def run_anyio(files: int, s3_workers: int = 3, api_workers: int = 2, queue_size: int = 0,
              backend: str = "asyncio", nowait: bool = False) -> float:
    """Seconds to pass ``files`` items through the chain on anyio memory object streams (on
    ``backend``), ended the anyio way: every producer holds a clone of the next send end and
    closes it when done, so no pills.  ``nowait``: each hand-off tries ``send_nowait`` /
    ``receive_nowait`` first and awaits only when it would block (what the anyio variant does);
    otherwise every ``send`` and ``receive`` is awaited, a checkpoint each time (anyio's idiom)."""
    import math

    import anyio
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    size = queue_size or math.inf
    count = 0

    async def get(src: MemoryObjectReceiveStream[int]) -> int | None:
        if nowait:
            try:
                return src.receive_nowait()
            except anyio.WouldBlock:
                pass
            except anyio.EndOfStream:
                return None
        try:
            return await src.receive()
        except anyio.EndOfStream:
            return None

    async def put(dst: MemoryObjectSendStream[int], item: int) -> None:
        if nowait:
            try:
                return dst.send_nowait(item)
            except anyio.WouldBlock:
                pass
        await dst.send(item)

    async def dispatcher(dst: MemoryObjectSendStream[int]) -> None:
        with dst:
            for i in range(files):
                await put(dst, i)

    async def relay(src: MemoryObjectReceiveStream[int], dst: MemoryObjectSendStream[int]) -> None:
        with src, dst:
            while (item := await get(src)) is not None:
                await put(dst, item)

    async def verifier(src: MemoryObjectReceiveStream[int]) -> None:
        nonlocal count
        with src:
            while await get(src) is not None:
                count += 1

    async def main() -> float:
        (s0, r0), (s1, r1), (s2, r2) = (anyio.create_memory_object_stream[int](size) for _ in range(3))
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            with s0, r0, s1, r1, s2, r2:  # the originals close at once: the clones carry the streams
                tg.start_soon(dispatcher, s0.clone())
                for _ in range(s3_workers):
                    tg.start_soon(relay, r0.clone(), s1.clone())
                for _ in range(api_workers):
                    tg.start_soon(relay, r1.clone(), s2.clone())
                tg.start_soon(verifier, r2.clone())
        elapsed = time.perf_counter() - start
        assert count == files
        return elapsed

    result: float = anyio.run(main, backend=backend)
    return result


def chain(kind: str, backend: str = "asyncio") -> Callable[[int, int, int, int], float]:
    """The bare chain a probe ``kind`` names (``bare-threaded``, ``bare-asyncio``, ``bare-anyio``,
    ``bare-anyio-nowait``); anyio's on ``backend``."""
    if kind == "bare-threaded":
        return run_threads
    if kind == "bare-asyncio":
        return run_asyncio
    import anyio  # noqa: F401 - imported before a probe measures the run

    nowait = kind == "bare-anyio-nowait"
    return lambda files, s3, api, size: run_anyio(files, s3, api, size, backend=backend, nowait=nowait)


CHAINS = ("bare-threaded", "bare-asyncio", "bare-anyio", "bare-anyio-nowait")
