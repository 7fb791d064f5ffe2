"""The queues between stages on Redis, for coroutines: ``redis.asyncio`` (one client per event loop).

Read it beside ``threaded/broker.py``: the same names in the same order; only the waiting
differs.  Key names, message bytes, Lua scripts and lease rules come from ``common/broker.py``.
The anyio variant uses this module on its asyncio backend (an anyio cancel scope cancels these
awaits like any other); redis.asyncio does not run on trio.

    broker = await connect("redis://127.0.0.1:6379/0", run="r1")
    outbox = broker.queue(Stage.S3, maxsize=100)            # put side: put(), put_nowait()
    inbox = await broker.consumer(Stage.S3, "S3-Worker-1")  # registered: get(), task_done(), leave()
    async with Heartbeat(broker):                           # renews the leases, reclaims the dead's
        record = await inbox.get()                          # moved into this worker's processing list
        ...                                                 # work it, pass it on
        await inbox.task_done()                             # the ack: LREM from the processing list
    await inbox.leave()
"""
from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager
from typing import Any, Awaitable, Callable, Container, Iterable, Iterator

import redis.asyncio as redis
from redis.asyncio.retry import Retry

from pillpipe.common.broker import (
    ABORT_LOOK, BLOCK, CONNECTIONS, MARGIN, ORPHAN_LOOKS, PILL_BYTES, RETRIES, SCRIPTS, STAGES, TTL, Backlog,
    BrokerError, Keys, LeaseLost, abort_reach, backoff, block_for, check_url, commit_args, coordinator_aborted,
    coordinator_gone, counts_of, decode, encode, full_backoff, heartbeat_every, lease_lost, retries_for, row_of,
    run_lost, shown, socket_timeout, sorted_rows, worker_id)
from pillpipe.common.config import UsageError
from pillpipe.common.model import PILL, FileRecord, Message, Stage

Full, Empty = asyncio.QueueFull, asyncio.QueueEmpty  # what asyncio.Queue raises: the same surface


async def connect(url: str, run: str, *, ttl: float = TTL, prefix: str = "pillpipe", wait: float = 0.0) -> "Broker":
    """A broker for run ``run`` at ``url``, checked with a PING; a bad URL is a UsageError, a broker
    that cannot be reached (or is older than Redis 6.2) a BrokerError - one line each.  From then
    on a call retries reconnecting for about ``wait`` seconds (a broker restart) before it fails."""
    keys = Keys(run, prefix)
    try:
        client = redis.Redis.from_url(check_url(url), socket_timeout=socket_timeout(), socket_connect_timeout=MARGIN,
                                      retry=Retry(backoff(), RETRIES),
                                      max_connections=CONNECTIONS)
    except ValueError as exc:
        raise UsageError(f"--broker {url!r}: {exc}") from None
    broker = Broker(client, url, keys, ttl)
    try:
        with _errors(url):
            version = (await client.info("server")).get("redis_version", "0")
        broker.check_version(str(version))
        if wait:
            client.set_retry(Retry(backoff(), retries_for(wait)))
    except BaseException:
        await client.aclose()
        raise
    return broker


class Broker:
    """One client's view of a run on the broker: its queues, its consumers' leases, its ledger."""

    def __init__(self, client: redis.Redis, url: str, keys: Keys, ttl: float = TTL) -> None:
        self.client, self.url, self.keys, self.ttl = client, url, keys, ttl
        self.scripts = {name: client.register_script(text) for name, text in SCRIPTS.items()}
        self.ledger = RedisLedger(self)
        self.members: dict[Stage, set[str]] = {}  # this process's registered consumers, by stage
        self.lost: set[str] = set()  # consumers whose lease ran out under them
        self.coordinating = False  # this process coordinates the run: its heartbeat renews the run's lease
        self.orphaned: str | None = None  # why, once the run's coordinator is gone (a worker process's heartbeat)
        self.aborted: str | None = None  # why, once the run's coordinator aborted it (a worker process's heartbeat)
        self._missed = 0  # looks in a row that found no coordinator's lease

    def check_version(self, version: str) -> None:
        if tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < (6, 2):
            raise BrokerError(f"broker {shown(self.url)}: Redis {version} is too old (LMOVE needs 6.2 or later)")

    def queue(self, stage: Stage, maxsize: int = 0) -> "BrokerQueue":
        """``stage``'s input queue, put side only (a producer, or a coordinator putting pills)."""
        return BrokerQueue(self, stage, maxsize)

    async def consumer(self, stage: Stage, name: str, maxsize: int = 0) -> "BrokerQueue":
        """Register worker ``name`` (its lease starts now) and return its own view of the queue."""
        worker = worker_id(name)
        await self.call("register", [self.keys.workers(stage)], [int(self.ttl * 1000), worker])
        self.members.setdefault(stage, set()).add(worker)
        return BrokerQueue(self, stage, maxsize, worker)

    def forget(self, stage: Stage, worker: str) -> None:
        """``worker`` left: its lease is no longer this process's to renew."""
        self.members.get(stage, set()).discard(worker)

    async def coordinate(self) -> None:
        """This process coordinates the run: its lease (``ttl``) starts now, renewed with the workers'."""
        self.coordinating = True
        await self._lead()

    async def abort(self) -> None:
        """This process coordinates the run and aborts it: the run's aborted key, which every worker
        process's heartbeat reads (``led``) and aborts on.  Then it waits until no consumer is left on
        any stage - what they held settled, each row on the broker - but at most ``abort_reach``: one
        that never answers (killed, hung) is not waited for; a killed one's files come back to their
        queues as its lease runs out (``reclaim``), for the coordinator to take back."""
        with _errors(self.url):
            await self.client.set(self.keys.aborted, b"1")
        deadline = time.monotonic() + abort_reach(self.ttl)
        while time.monotonic() < deadline:
            await self.reclaim()
            if not any([await self.live(stage) for stage in STAGES]):
                return
            await asyncio.sleep(ABORT_LOOK)

    async def led(self) -> bool:
        """A worker process's look at its run: False once the coordinator's lease has run out with
        the run not ended (it was killed): ``orphaned`` says why, and the workers leave; or once the
        coordinator aborted the run: ``aborted`` says so, and the workers abort.  One round trip."""
        with _errors(self.url):
            lease, ended, aborted = await self.client.mget(
                [self.keys.coordinator, self.keys.ended(Stage.VERIFY), self.keys.aborted])
        if aborted is not None:
            self.aborted = self.aborted or coordinator_aborted(self.keys.run)
        self._missed = self._missed + 1 if lease is None and ended is None else 0
        if self._missed >= ORPHAN_LOOKS:  # not one look: after a broker restart the coordinator renews it anew
            self.orphaned = self.orphaned or coordinator_gone(self.keys.run, self.ttl)
        return self.orphaned is None and self.aborted is None

    async def live(self, stage: Stage) -> int:
        """How many consumers of ``stage`` hold a lease that has not run out (on any machine)."""
        return int(await self.call("live", [self.keys.workers(stage)], []))

    async def backlog(self, stage: Stage) -> Backlog:
        return Backlog(*await self.call("backlog", self._stage_keys(stage), self._stage_args(stage)))

    async def still_held(self) -> None:
        """The coordinator's look that its run is on the broker: its workload gone means the broker
        restarted without persistence (or the run's keys were deleted): a BrokerError, exit 69."""
        with _errors(self.url):
            held = await self.client.exists(self.keys.config)
        if not held:
            raise BrokerError(run_lost(self.url, self.keys.run))

    async def end_stream(self, stage: Stage) -> int:
        """Put one pill for each live consumer that has none coming; returns how many were put.
        Call it again while consumers remain: a late joiner gets its pill, a dead one none."""
        return int(await self.call("end_stream", self._stage_keys(stage), self._stage_args(stage)))

    async def renew(self) -> list[str]:
        """Extend the lease of every consumer this process registered; returns those already lost."""
        members = {stage: sorted(workers) for stage, workers in self.members.items() if workers}
        lost: list[str] = []
        if self.coordinating:
            await self._lead()
        for stage, workers in members.items():
            gone = await self.call("renew", [self.keys.workers(stage)], [int(self.ttl * 1000), *workers])
            lost += [w.decode() for w in gone]
        self.lost.update(lost)
        return lost

    async def reclaim(self, stages: Iterable[Stage] = STAGES) -> tuple[int, int]:
        """Give back what expired consumers held; returns (consumers reclaimed, records requeued)."""
        dead = requeued = 0
        for stage in stages:
            workers, records = await self.call("reclaim", self._stage_keys(stage), self._stage_args(stage))
            dead, requeued = dead + workers, requeued + records
        return dead, requeued

    async def sweep(self, stage: Stage) -> int:
        """Give back what sits in the processing list of a worker that is not registered (an orphan:
        the known hole of a lease reclaimed during a blocking take); returns how many records."""
        prefix = self.keys.processing(stage)
        with _errors(self.url):
            keys = [key async for key in self.client.scan_iter(match=prefix + '*', count=1000)]
        swept = 0
        for key in keys:
            worker = (key.decode() if isinstance(key, bytes) else key)[len(prefix):]
            swept += int(await self.call("sweep", [self.keys.workers(stage), key, self.keys.queue(stage)],
                                           [worker, PILL_BYTES]))
        return swept

    async def clear(self) -> int:
        """Delete every key of the run; returns how many there were."""
        with _errors(self.url):
            keys = [key async for key in self.client.scan_iter(match=self.keys.pattern, count=1000)]
            return int(await self.client.delete(*keys)) if keys else 0

    async def close(self) -> None:
        await self.client.aclose()

    async def call(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run one of the core's Lua scripts (EVALSHA, loaded again after a broker restart)."""
        with _errors(self.url):
            return await self.scripts[script](keys=keys, args=args)

    async def _lead(self) -> None:
        with _errors(self.url):
            await self.client.set(self.keys.coordinator, b"1", px=int(self.ttl * 1000))

    def _stage_keys(self, stage: Stage) -> list[str]:
        return [self.keys.workers(stage), self.keys.queue(stage)]

    def _stage_args(self, stage: Stage) -> list[Any]:
        return [self.keys.processing(stage), PILL_BYTES]


class BrokerQueue:
    """A stage's queue on the broker with ``asyncio.Queue``'s surface: ``put``/``get`` (plus the
    ``_nowait`` forms, raising ``Full``/``Empty``) and ``task_done``, which is the ack."""

    def __init__(self, broker: Broker, stage: Stage, maxsize: int = 0, worker: str | None = None) -> None:
        self.broker, self.stage, self.maxsize, self.worker = broker, stage, maxsize, worker
        self.key = broker.keys.queue(stage)
        self.processing = broker.keys.processing(stage, worker) if worker is not None else None
        self.held: bytes | None = None  # the item taken and not yet acked

    async def put(self, item: Message, block: bool = True, timeout: float | None = None) -> None:
        """LPUSH ``item``; a bounded queue that is full is retried (1-50 ms apart) until ``timeout``."""
        raw = encode(item)
        if not self.maxsize:
            with _errors(self.broker.url):
                await self.broker.client.lpush(self.key, raw)
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        attempt = 0
        while not await self.broker.call("put", [self.key], [self.maxsize, raw]):
            if self.broker.orphaned or self.broker.aborted:  # its consumers are gone or aborting: over its bound
                with _errors(self.broker.url):
                    await self.broker.client.lpush(self.key, raw)
                return
            remaining = None if deadline is None else deadline - time.monotonic()
            if not block or (remaining is not None and remaining <= 0):
                raise Full
            await asyncio.sleep(full_backoff(attempt) if remaining is None else min(full_backoff(attempt), remaining))
            attempt += 1

    async def put_nowait(self, item: Message) -> None:
        await self.put(item, block=False)

    async def get(self, block: bool = True, timeout: float | None = None) -> Message:
        """The oldest item (or the one this worker already held), moved into its processing list
        until ``task_done()``: ``TAKE``, then ``BLMOVE`` ``BLOCK`` seconds at a time."""
        if self.processing is None:
            raise TypeError("get() needs a registered consumer: await broker.consumer(stage, name)")
        deadline = None if timeout is None else time.monotonic() + timeout
        keys = [self.key, self.processing, self.broker.keys.workers(self.stage)]
        while True:
            raw = await self.broker.call("take", keys, [self.worker])
            if raw is not None:
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if not block or (remaining is not None and remaining <= 0):
                raise Empty
            with _errors(self.broker.url):
                # redis-py types BLMOVE's timeout as int; Redis 6+ takes a float
                raw = await self.broker.client.blmove(self.key, self.processing, block_for(remaining), "RIGHT", "LEFT")  # type: ignore[arg-type]
            if raw is not None:
                break
        self.held = raw
        return decode(raw, self.key)

    async def get_nowait(self) -> Message:
        return await self.get(block=False)

    async def task_done(self) -> None:
        """The ack: the held item has been passed on, so it leaves the processing list (LREM)."""
        if self.held is None or self.processing is None:  # only a consumer (with its list) holds
            raise ValueError("task_done() called with nothing held")
        with _errors(self.broker.url):
            # redis-py types LREM's value as str; bytes are sent as they are
            await self.broker.client.lrem(self.processing, 1, self.held)  # type: ignore[arg-type]
        self.held = None

    async def leave(self) -> int:
        """This consumer exits: a record it still holds goes back to the queue, a pill it holds is
        dropped, its lease ends.  Returns how many records went back."""
        if self.worker is None or self.processing is None:  # a consumer has both
            return 0
        keys = [self.broker.keys.workers(self.stage), self.processing, self.key]
        requeued = await self.broker.call("leave", keys, [self.worker, PILL_BYTES])
        self.broker.forget(self.stage, self.worker)
        self.held = None
        return int(requeued)


class Heartbeat:
    """A task that renews this process's leases every ``ttl / 3`` and reclaims expired workers'
    items; an async context manager.  A broker error is kept in ``error`` (the workers meet it too).
    In a worker process it also looks at the run (``Broker.led``): once the coordinator has aborted
    it, it calls ``abort`` with why, on the loop (``Stop.abort``: the coordinator's tend cancels the
    workers)."""

    def __init__(self, broker: Broker, abort: Callable[[str], None] = lambda why: None) -> None:
        self.broker, self.abort = broker, abort
        self.error: BrokerError | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> "Heartbeat":
        self._task = asyncio.create_task(self._beat(), name="Broker-Heartbeat")
        return self

    async def stop(self) -> None:
        """Ends the task by its own flag, never by cancelling it: redis.asyncio may swallow a
        cancellation that lands mid-call, and the task would beat on for good."""
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _beat(self) -> None:
        every = heartbeat_every(self.broker.ttl)
        while True:
            try:
                async with asyncio.timeout(every):
                    await self._stop.wait()
                return
            except TimeoutError:
                pass
            try:
                await self.broker.renew()
                await self.broker.reclaim()
                if not self.broker.coordinating and not await self.broker.led() and self.broker.aborted:
                    self.abort(self.broker.aborted)
                self.error = None
            except BrokerError as exc:
                self.error = exc

    async def __aenter__(self) -> "Heartbeat":
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class RedisLedger:
    """The run's ledger on the broker, shaped like a durable store: commit batches of rows (a
    ``--details`` entry plus ``verified``), read the settled rows back, count per state."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def commit(self, rows: Iterable[dict[str, Any]]) -> list[bool]:
        """Settle a batch atomically, first write wins per file; True for each row that won."""
        args = commit_args(rows)
        if not args:
            return []
        won = await self.broker.call("commit", [self.broker.keys.rows, self.broker.keys.counts], args)
        return [bool(w) for w in won]

    async def rows(self) -> list[dict[str, Any]]:
        """Every settled row, in the report's order (read in chunks: the broker never blocks long)."""
        with _errors(self.broker.url):
            return sorted_rows([row_of(raw) async for _, raw in self.broker.client.hscan_iter(self.broker.keys.rows,
                                                                                              count=1000)])

    async def counts(self) -> dict[str, int]:
        """Settled files per outcome, and ``processed`` (those that reached the verifier)."""
        with _errors(self.broker.url):
            return counts_of(await self.broker.client.hgetall(self.broker.keys.counts))


async def _nothing_to_write(file_id: int) -> None:
    """A Lane's default: no row of this process waits to be committed (no journal, as in the tests)."""


class Lane:
    """A stage's queue as one process's pipeline sees it (``--broker``): every producer puts
    through one put side; each consumer takes through its own registered view, made on its first
    ``get`` - so the pipeline hands its workers one queue, as in one process."""

    def __init__(self, broker: Broker, stage: Stage, maxsize: int = 0,
                 stopping: Callable[[], bool] = lambda: False,
                 written: Callable[[int], Awaitable[None]] = _nothing_to_write) -> None:
        self.broker, self.stage, self.maxsize, self.stopping = broker, stage, maxsize, stopping
        self.written = written  # returns once a file's row settled in this process is on the broker
        self.outbox = broker.queue(stage, maxsize)
        self.views: dict[str, BrokerQueue] = {}  # worker name -> its own view (each worker touches only its own)
        self.holding: dict[str, int] = {}  # worker name -> the id of the record it took and has not acked
        self.depth = 0  # items queued at the coordinator's last look (the progress view's depth)

    async def put(self, item: Message, block: bool = True, timeout: float | None = None) -> None:
        await self.outbox.put(item, block, timeout)

    async def put_nowait(self, item: Message) -> None:
        """A put that cannot wait, or reach the broker, raises Full (an abort's pills are a courtesy)."""
        try:
            await self.outbox.put(item, block=False)
        except BrokerError:
            raise Full from None

    async def get(self, name: str) -> Message:
        """Worker ``name``'s next message.  What it took before is acked first: by now it has been
        passed on, or settled (its row is on the broker).  Once the run stops here, or once the
        queue is found empty after its stream has ended (a worker that joined late), the pill."""
        view = self.views.get(name)
        if view is None:
            view = self.views[name] = await self.broker.consumer(self.stage, name, self.maxsize)
        if view.held is not None:
            await self._ack(name, view)
        if self.stopping() or self.broker.orphaned:
            return PILL
        while True:
            try:
                message = await view.get(timeout=BLOCK)
            except LeaseLost:  # its lease ran out (a broker restart, a stall): it held nothing; it registers again
                view = self.views[name] = await self.broker.consumer(self.stage, name, self.maxsize)
                continue
            except Empty:
                if self.stopping() or self.broker.orphaned or await self.ended():
                    return PILL
            else:
                if isinstance(message, FileRecord):
                    self.holding[name] = message.id
                return message

    async def _ack(self, name: str, view: BrokerQueue) -> None:
        """The ack of what worker ``name`` holds - once the row of a file it settled is committed
        (the journal's writer commits it; a row that could not be is a BrokerError: no ack).  The
        file is in ``holding`` until the ack is done: an abort that stops the ack leaves it known."""
        file_id = self.holding.get(name)
        if file_id is not None:
            await self.written(file_id)
        await view.task_done()
        self.holding.pop(name, None)

    async def leave(self, name: str, ack: bool = True) -> None:
        """Worker ``name`` leaves: what it holds is acked (``ack``: it was passed on or settled) or
        given back to the queue for a sibling - either way once a row this process settled for it
        is on the broker; a pill in its hands is dropped; its lease ends."""
        view = self.views.pop(name, None)
        if view is None:
            return
        if ack and view.held is not None:
            await self._ack(name, view)
        elif (file_id := self.holding.get(name)) is not None:
            await self.written(file_id)
        self.holding.pop(name, None)
        await view.leave()

    async def abandon(self, name: str) -> None:
        """Worker ``name`` died: it leaves as far as the broker still answers."""
        try:
            await self.leave(name)
        except BrokerError:
            pass

    async def ended(self) -> bool:
        """Whether the coordinator has ended this stage's stream (``end``)."""
        with _errors(self.broker.url):
            return bool(await self.broker.client.exists(self.broker.keys.ended(self.stage)))

    async def end(self) -> None:
        with _errors(self.broker.url):
            await self.broker.client.set(self.broker.keys.ended(self.stage), b"1")

    async def backlog(self) -> Backlog:
        if self.broker.coordinating:
            await self.broker.still_held()
        await self.broker.reclaim([self.stage])  # a dead worker's file counts as queued, not as held
        backlog = await self.broker.backlog(self.stage)
        self.depth = backlog.queued - backlog.pills
        return backlog

    async def end_stream(self) -> int:
        return await self.broker.end_stream(self.stage)

    async def sweep(self) -> int:
        return await self.broker.sweep(self.stage)

    async def drain(self) -> list[Message]:
        """Take every queued message, with no lease (the coordinator empties a dead stage's queue)."""
        with _errors(self.broker.url):
            raws = await self.broker.client.rpop(self.outbox.key, 1000) or []
        return [decode(bytes(raw), self.outbox.key) for raw in raws]  # type: ignore[arg-type]

    def qsize(self) -> int:
        return self.depth

    async def close(self, settled: Container[int] = ()) -> None:
        """This process is done with the stage: what its workers still hold is acked if it settled
        the file (``settled``, an abort's), else goes back; their leases end."""
        for name in list(self.views):
            try:
                await self.leave(name, ack=self.holding.get(name) in settled)
            except BrokerError:
                pass


# The client's errors, as one line ---------------------------------------------------------
@contextmanager
def _errors(url: str) -> Iterator[None]:
    """redis-py's connection errors (after its bounded retries) become a one-line BrokerError; a
    script's LEASE_LOST becomes LeaseLost."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BrokerError(f"broker {shown(url)} unreachable: {reason}") from None
    except redis.ResponseError as exc:
        if lease_lost(exc):
            raise LeaseLost(str(exc)) from None
        raise
