"""One run's real I/O (``--io real``): where the services are, how each model opens its clients, and
what the calls measured.  Composed into the Context; nothing here does I/O.

The variant opens its own clients with ``options()`` (pools sized to the workers that share them,
every call's timeout finite) and hands them over for the run (``using``); its ``_wait_through``
makes each call with them.  The stage logic (``common/stages.py``) notes each call's latency and
each failed attempt's class here; the report's ``timing["io"]`` carries them, with the process's
CPU time per file and the connections the clients opened.  None of it is compared between
variants: a latency is a measurement, and the class of a failure nobody injected (a connection
refused or lost) depends on the client library.
"""
from __future__ import annotations

import math
import os
import time
from collections import Counter
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from .calls import DEFAULT_REGION, CallError, Endpoints, call_timeout
from .model import Stage
from .stages import ServiceError, StageTimeout

if TYPE_CHECKING:
    from .config import Config

_BUCKETS_PER_E = 100  # latency histogram: 100 buckets per factor e, so a percentile is within 1%
_FLOOR = 1e-6  # seconds: the histogram's smallest bucket


class Latencies:
    """Call latencies of one stage in a log-scale histogram: flat memory for any number of calls,
    percentiles within 1%."""

    __slots__ = ("count", "_buckets")

    def __init__(self) -> None:
        self.count = 0
        self._buckets: Counter[int] = Counter()

    def add(self, seconds: float) -> None:
        self.count += 1
        self._buckets[int(math.log(max(seconds, _FLOOR) / _FLOOR) * _BUCKETS_PER_E)] += 1

    def percentile(self, q: float) -> float | None:
        """The nearest-rank ``q``-th percentile (q in 0..100), or None for no calls."""
        if not self.count:
            return None
        rank, seen = max(1, math.ceil(q / 100 * self.count - 1e-9)), 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                return _FLOOR * math.exp((bucket + 0.5) / _BUCKETS_PER_E)
        return None  # not reached


def endpoints_for(config: "Config") -> Endpoints:
    """The run's endpoints: the ones a launcher started for it (``config.endpoints``: our embedded
    services, hints honoured), else the URLs given (servers that are not ours: hints are played by
    the core; credentials and region from the usual AWS environment, never from the command line)."""
    if config.endpoints is not None:
        return config.endpoints
    if not (config.s3_endpoint and config.api_url):
        from .config import UsageError

        raise UsageError("--io real needs --s3-endpoint and --api-url here (the command line starts the "
                         "embedded services when they are not given)")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    return Endpoints(config.s3_endpoint, config.api_url, region=region, ca_file=config.ca_file, hints=False)


class RealIO:
    """Real I/O for one run: the clients' options, the open clients, and what their calls measured.
    ``lock`` guards the measurements (a real lock for threads)."""

    def __init__(self, config: "Config", lock: AbstractContextManager[Any] | None = None) -> None:
        self.endpoints = endpoints_for(config)
        self.hints = self.endpoints.hints  # our servers play the hints; any other's are played by the core
        self.timeout = call_timeout(config.stage_plan().workload, config.fault_plan, config.stage_timeout)
        self.pools = {"s3": config.pool or config.s3_workers + 1,  # + 1: the verifier shares each client
                      "api": config.pool or config.api_workers + 1}
        self.http_client = config.http_client
        self.clients: Any = None  # the variant's, while open
        self.libraries: dict[str, str] | None = None
        self.connections: dict[str, int | None] | None = None
        self._lock = lock if lock is not None else nullcontext()
        self._latencies = {stage: Latencies() for stage in (Stage.S3, Stage.API, Stage.VERIFY)}
        self._failures: Counter[str] = Counter()
        self._cpu = time.process_time()
        self._ready: float | None = None  # perf_counter() when the clients were open

    def options(self) -> dict[str, Any]:
        """Keyword arguments of every model's ``open_clients``."""
        return {"endpoints": self.endpoints, "s3_pool": self.pools["s3"], "api_pool": self.pools["api"],
                "timeout": self.timeout, "http_client": self.http_client}

    def using(self, opening: Any) -> "Using":
        """``opening`` (a model's ``open_clients(**options())``), entered for the run: its clients make the calls."""
        return Using(self, opening)

    def attach(self, clients: Any) -> None:
        self.clients, self.libraries = clients, dict(clients.libraries)
        self._cpu = time.process_time()  # CPU per file: not the clients' one-off making
        self._ready = time.perf_counter()

    def detach(self) -> None:
        self.connections = self.clients.connections()

    # What the stage logic notes ---------------------------------------------------------------
    def called(self, stage: Stage, seconds: float) -> None:
        with self._lock:
            self._latencies[stage].add(seconds)

    def failed(self, exc: BaseException) -> None:
        """One failed attempt, counted by its class: a failed call's (``unavailable``, ``timeout``,
        ``refused``, ``lost``, ``http``, ``tls``...), or a fault the core played (a server that is
        not ours)."""
        kind = exc.kind if isinstance(exc, CallError) else _PLAYED.get(type(exc), type(exc).__name__)
        with self._lock:
            self._failures[kind] += 1

    # The report -----------------------------------------------------------------------------
    def timing(self, files: int, start: float) -> dict[str, Any]:
        """The ``io`` section of the report's timing; ``files``: the files the verifier saw; ``start``:
        the run's ``perf_counter()`` start (``ready_s``, when the clients were open, counts from it)."""
        cpu = time.process_time() - self._cpu
        with self._lock:
            calls = {stage.value: {"calls": lat.count, "p50_ms": _ms(lat.percentile(50)),
                                   "p99_ms": _ms(lat.percentile(99))} for stage, lat in self._latencies.items()}
            failures = dict(sorted(self._failures.items()))
        ready = None if self._ready is None else self._ready - start
        return {"mode": "real", "libraries": self.libraries, "hints": self.hints, "timeout_s": self.timeout,
                "pools": dict(self.pools), "ready_s": ready, "connections": self.connections, "calls": calls,
                "failed_attempts": failures, "cpu_s": cpu, "cpu_per_file_ms": cpu * 1000 / files if files else None}


class Using(AbstractContextManager[Any], AbstractAsyncContextManager[Any]):
    """A model's clients, open for one run: entered as a context manager (threads) or an async one
    (coroutines), whichever ``opening`` is; on exit, the connections they opened are noted."""

    def __init__(self, io: RealIO, opening: Any) -> None:
        self._io, self._opening = io, opening

    def __enter__(self) -> Any:
        clients = self._opening.__enter__()
        self._io.attach(clients)
        return clients

    def __exit__(self, *exc: Any) -> Any:
        self._io.detach()
        return self._opening.__exit__(*exc)

    async def __aenter__(self) -> Any:
        clients = await self._opening.__aenter__()
        self._io.attach(clients)
        return clients

    async def __aexit__(self, *exc: Any) -> Any:
        self._io.detach()
        return await self._opening.__aexit__(*exc)


_PLAYED: dict[type, str] = {ServiceError: "unavailable", StageTimeout: "timeout"}  # faults the core plays


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
