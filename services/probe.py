"""Client CPU per call, per model and library: a rough baseline for the real-I/O benchmarks.

    python -m pillpipe.services.probe [--calls 300] [--concurrency 8] [--rounds 3]

Starts our services once (no latency), then for each client (threaded urllib3/httpx, asyncio
aiohttp/httpx, anyio httpx on asyncio and trio) and each call (S3 CopyObject, API POST) runs a
fresh process that warms up, makes ``--calls`` calls ``--concurrency`` at a time on one shared
client, and reports its own CPU time (every thread) per call and the calls per second.  The
servers run in their own processes, so the CPU measured is the client's alone.  Rounds are
interleaved and the median is printed; on a shared, loaded machine compare ratios, not times.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any, Sequence

CELLS = [("threaded", "urllib3", None), ("threaded", "httpx", None), ("asyncio", "aiohttp", None),
         ("asyncio", "httpx", None), ("anyio", "httpx", "asyncio"), ("anyio", "httpx", "trio")]
OPS = ("copy", "post")


def _calls(op: str, count: int, start: int) -> list[Any]:
    from pillpipe.common.calls import ApiPost, S3Copy, object_metadata
    from pillpipe.common.model import FileRecord
    from pillpipe.common.workload import DEST_BUCKET, SOURCE_BUCKET, file_name

    if op == "copy":
        return [S3Copy(SOURCE_BUCKET, file_name(1 + i % 100), DEST_BUCKET, f"probe/{start + i}",
                       object_metadata(FileRecord(i, file_name(1 + i % 100)))) for i in range(count)]
    return [ApiPost({"id": start + i, "name": file_name(1 + i % 100), "key": f"probe/{start + i}"})
            for i in range(count)]


def cell(model: str, http_client: str, backend: str | None, op: str, endpoints: dict[str, Any], count: int,
         concurrency: int) -> dict[str, float]:
    """One measurement, in this process: CPU seconds per call and calls per second."""
    from pillpipe.common.calls import Endpoints

    e = Endpoints(**endpoints)
    warm, work = _calls(op, 20, 0), _calls(op, count, 100)
    if model == "threaded":
        from concurrent.futures import ThreadPoolExecutor

        from pillpipe.threaded.clients import open_clients

        with open_clients(e, s3_pool=concurrency, api_pool=concurrency, timeout=30, http_client=http_client) as c:
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(c.perform, warm))
                cpu, wall = time.process_time(), time.perf_counter()
                list(pool.map(c.perform, work))
                return _per_call(cpu, wall, count)
    import anyio

    module = "pillpipe.asyncio_version.clients" if model == "asyncio" else "pillpipe.anyio_version.clients"
    open_async_clients = __import__(module, fromlist=["open_clients"]).open_clients

    async def run() -> dict[str, float]:
        async with open_async_clients(e, s3_pool=concurrency, api_pool=concurrency, timeout=30,
                                http_client=http_client) as c:
            async def worker(calls_: list[Any]) -> None:
                for call in calls_:
                    await c.perform(call)

            for batch in (warm, work):
                if batch is work:
                    cpu, wall = time.process_time(), time.perf_counter()
                async with anyio.create_task_group() as tasks:
                    for w in range(concurrency):
                        tasks.start_soon(worker, batch[w::concurrency])
            return _per_call(cpu, wall, count)

    return anyio.run(run, backend=backend or "asyncio")


def _per_call(cpu: float, wall: float, count: int) -> dict[str, float]:
    return {"cpu_ms": (time.process_time() - cpu) / count * 1000, "per_s": count / (time.perf_counter() - wall)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pillpipe.services.probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cell", help=argparse.SUPPRESS)  # the child's side: one JSON cell
    args = p.parse_args(argv)
    if args.cell:
        spec = json.loads(args.cell)
        print(json.dumps(cell(**spec)))
        return 0
    from .embedded import EmbeddedServices

    results: dict[tuple[str, ...], list[dict[str, float]]] = {}
    with EmbeddedServices(objects=100) as services:
        e = services.endpoints
        assert e is not None  # started
        endpoints = {"s3_url": e.s3_url, "api_url": e.api_url, "access_key": e.access_key,
                     "secret_key": e.secret_key}
        for _ in range(args.rounds):
            for model, http_client, backend in CELLS:
                for op in OPS:
                    spec = {"model": model, "http_client": http_client, "backend": backend, "op": op,
                            "endpoints": endpoints, "count": args.calls, "concurrency": args.concurrency}
                    out = subprocess.run([sys.executable, "-m", "pillpipe.services.probe", "--cell", json.dumps(spec)],
                                         capture_output=True, text=True, timeout=300, check=True)
                    results.setdefault((model, http_client, backend or "", op), []).append(json.loads(out.stdout))
    print(f"{'model':9} {'library':20} {'backend':8} {'call':5} {'client CPU ms/call':>19} {'calls/s':>8}")
    for (model, http_client, backend, op), runs in results.items():
        library = ("boto3" if model == "threaded" else f"aiobotocore+{http_client}") if op == "copy" else http_client
        print(f"{model:9} {library:20} {backend:8} {op:5} {statistics.median(r['cpu_ms'] for r in runs):19.2f} "
              f"{statistics.median(r['per_s'] for r in runs):8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
