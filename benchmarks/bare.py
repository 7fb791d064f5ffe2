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
