"""A run's ledger and workload on the broker, for every process of a run across processes.

``RedisStore`` is a state backend (``store.Store``, like ``sqlite_store.py``) over redis-py's blocking
client: the journal's writer - a thread in threads, a thread the event loop hands each commit to in
asyncio - commits each batch of terminal rows with the broker core's ``COMMIT`` script, one atomic
batch, first write wins per file.  So a file worked twice (a worker killed after passing it on, its
record reclaimed and worked again by a sibling) keeps exactly one terminal state, and the
coordinator builds the report by restoring every row, as ``--resume`` does.

It also carries what the processes of one run must agree on: the workload (``publish`` once, by the
coordinator; ``workload`` in every worker process, a bounded wait), the end of each stage's stream
(a late joiner reads it as its pill), and the errors of every process (a dead worker), for the report.

redis-py is imported when a store opens: a run without ``--broker`` never imports it.
"""
from __future__ import annotations

import json
import time
from typing import Any, Iterable, Iterator, Sequence

from .broker import (COMMIT, MARGIN, RETRIES, TTL, BrokerError, Keys, backoff, commit_args, counts_of, retries_for,
                     row_of, shown, socket_timeout)
from .config import Config, UsageError
from .model import Stage
from .store import FileRow, RejectedRow, Row, StateWriteError

# The flags every process of a run shares, so each derives the same latencies, failures and keys
# from (seed, file id, stage, attempt): the coordinator publishes them, a worker process runs them.
SHARED = ("files", "seed", "s3_latency", "api_latency", "time_scale", "queue_size", "fail_rate", "retries",
          "retry_backoff", "stage_timeout", "faults", "s3_workers", "api_workers", "broker_wait")
_TUPLES = ("s3_latency", "api_latency", "faults")
POLL = 0.1  # seconds between two looks for a run's workload


def shared(config: Config) -> dict[str, Any]:
    """What a worker process needs of ``config`` to work its files exactly as this process would."""
    return {name: list(getattr(config, name)) if name in _TUPLES else getattr(config, name) for name in SHARED}


def joined(workload: dict[str, Any], **changes: Any) -> Config:
    """The config of a process that joins a run: the published ``workload``, with ``changes``
    (its role, broker, run, workers)."""
    fields = {name: tuple(value) if name in _TUPLES else value for name, value in workload.items() if name in SHARED}
    return Config(**{**fields, **changes})


def _client_errors() -> tuple[type[Exception], ...]:
    import redis

    return (redis.ConnectionError, redis.TimeoutError)


class RedisStore:
    """One process's blocking connection to a run on the broker; every method may block."""

    def __init__(self, client: Any, url: str, keys: Keys) -> None:
        self.client, self.url, self.keys = client, url, keys
        self.path = f"{shown(url)} run {keys.run}"  # where it is, for messages
        self._commit = client.register_script(COMMIT)
        self._errors = _client_errors()

    @classmethod
    def open(cls, url: str, run: str, wait: float = 0.0) -> "RedisStore":
        """Connect to run ``run`` at ``url`` and check the broker answers (a PING): a BrokerError,
        one line, when it does not.  From then on a call retries reconnecting for about ``wait``
        seconds (a broker restart) before it fails."""
        try:
            import redis
            from redis.retry import Retry
        except ImportError:
            raise UsageError("--broker needs the redis extra: pip install 'pillpipe[redis]'") from None
        keys = Keys(run)
        try:
            client = redis.Redis.from_url(url, socket_timeout=socket_timeout(), socket_connect_timeout=MARGIN,
                                          retry=Retry(backoff(), RETRIES))
        except ValueError as exc:
            raise UsageError(f"--broker {url!r}: {exc}") from None
        store = cls(client, url, keys)
        try:
            store._call(client.ping)
            if wait:
                client.set_retry(Retry(backoff(), retries_for(wait)))
        except BaseException:
            client.close()
            raise
        return store

    # The workload ----------------------------------------------------------------------
    def publish(self, config: Config) -> None:
        """Write the run's workload, once: a run id already on the broker is refused (UsageError)."""
        text = json.dumps(shared(config), separators=(",", ":"))
        if not self._call(self.client.set, self.keys.config, text, nx=True):
            raise UsageError(f"--run {self.keys.run}: a run of that name is already on the broker {shown(self.url)} "
                             "(choose another --run)")
        self._call(self.client.set, self.keys.coordinator, b"1", px=int(TTL * 1000))  # the coordinator's lease starts

    def workload(self, wait: float) -> dict[str, Any]:
        """The run's workload as its coordinator published it, waiting up to ``wait`` seconds for it."""
        deadline = time.monotonic() + wait
        while (raw := self._call(self.client.get, self.keys.config)) is None:
            if time.monotonic() >= deadline:
                raise BrokerError(f"no run {self.keys.run!r} on the broker {shown(self.url)} after {wait:g} s: start "
                                  f"pillpipe dispatch (or pillpipe run) with --run {self.keys.run}")
            time.sleep(POLL)
        workload: dict[str, Any] = json.loads(raw)
        return workload

    def holds_run(self) -> bool:
        """Whether the run's workload is on the broker (gone: it restarted without persistence)."""
        return bool(self._call(self.client.exists, self.keys.config))

    # Streams and errors ------------------------------------------------------------------
    def end(self, stages: Iterable[Stage]) -> None:
        """Say that these stages' streams have ended: a consumer that finds its queue empty leaves."""
        for stage in stages:
            self._call(self.client.set, self.keys.ended(stage), b"1")

    def note(self, error: str) -> None:
        """Keep an error of this process (a dead worker) for the coordinator's report."""
        self._call(self.client.rpush, self.keys.errors, error)

    def errors(self) -> list[str]:
        return [e.decode(errors="replace") for e in self._call(self.client.lrange, self.keys.errors, 0, -1)]

    # The store interface ----------------------------------------------------------------
    def commit(self, rows: Sequence[Row]) -> int:
        """Write ``rows`` in one atomic batch, a file's first row winning; how many were new."""
        args = commit_args(row._asdict() for row in rows)
        if not args:
            return 0
        try:
            won = self._call(self._commit, keys=[self.keys.rows, self.keys.counts], args=args)
        except BrokerError as exc:
            raise StateWriteError(str(exc)) from None
        return sum(int(w) for w in won)

    def rows(self) -> Iterator[Row]:
        """Every committed row (in no particular order: a restore sorts what needs sorting)."""
        try:
            for _, raw in self.client.hscan_iter(self.keys.rows, count=1000):
                row = row_of(raw)
                if "line" in row:
                    yield RejectedRow(**{name: row[name] for name in RejectedRow._fields})
                else:
                    yield FileRow(**{name: row[name] for name in FileRow._fields})
        except self._errors as exc:
            raise self._gone(exc) from None

    def summary(self) -> dict[str, Any]:
        counts = counts_of(self._call(self.client.hgetall, self.keys.counts))
        return {"workload": json.loads(self._call(self.client.get, self.keys.config) or "null"), "runs": 1,
                "recorded": sum(v for k, v in counts.items() if k != "processed"), **counts}

    def close(self) -> None:
        self.client.close()

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except self._errors as exc:
            raise self._gone(exc) from None

    def _gone(self, exc: Exception) -> BrokerError:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return BrokerError(f"broker {shown(self.url)} unreachable: {reason}")
