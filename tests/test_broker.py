"""The queues between stages on Redis: a real redis-server on a free loopback port, both models.

Every test uses its own run id (its own key prefix) on the module's server, or a server of its
own when it kills or restarts one.  Without redis-server (or redis-py) these tests skip, saying how to install it - except under
CI=true, where they fail: CI must never skip them silently.
"""
from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pillpipe.common import broker as core
from pillpipe.common.config import UsageError
from pillpipe.common.model import PILL, FileRecord, Outcome, Stage, Status
from pillpipe.services.process import ServiceError, free_port, listening
from pillpipe.services.redis import RedisServer

from .conftest import ROOT, fast, need_client, need_redis, new_run

def same(a: FileRecord, b: FileRecord) -> bool:
    return dataclasses.astuple(a) == dataclasses.astuple(b)


# Both models, one test body ---------------------------------------------------------------
class OnLoop:
    """The asyncio module's objects, driven from a test body written once for both models: each
    coroutine a method returns runs to completion on one event loop (the client's)."""

    def __init__(self, target: Any, runner: asyncio.Runner) -> None:
        self._target, self._runner = target, runner

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return self._wrap(value)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = value(*args, **kwargs)
            return self._wrap(self._runner.run(result) if inspect.iscoroutine(result) else result)
        return call

    def _wrap(self, value: Any) -> Any:
        from pillpipe.asyncio_version import broker as abroker

        kinds = (abroker.Broker, abroker.BrokerQueue, abroker.RedisLedger)
        return OnLoop(value, self._runner) if isinstance(value, kinds) else value


@dataclasses.dataclass
class Model:
    name: str
    module: Any
    connect: Callable[..., Any]  # (url=None, run=None, ttl=TTL) -> Broker, closed and cleared after the test


@pytest.fixture(params=["threaded", "asyncio"])
def model(request: pytest.FixtureRequest, server: RedisServer):
    opened: list[Any] = []
    if request.param == "threaded":
        from pillpipe.threaded import broker as module

        def connect(url: str | None = None, run: str | None = None, ttl: float = core.TTL) -> Any:
            opened.append(module.connect(url or server.url, run or new_run(), ttl=ttl))
            return opened[-1]
        yield Model("threaded", module, connect)
    else:
        from pillpipe.asyncio_version import broker as module

        runner = asyncio.Runner()

        def connect(url: str | None = None, run: str | None = None, ttl: float = core.TTL) -> Any:
            opened.append(OnLoop(runner.run(module.connect(url or server.url, run or new_run(), ttl=ttl)), runner))
            return opened[-1]
        yield Model("asyncio", module, connect)
    for broker in opened:
        broker.clear()
        broker.close()
    if request.param == "asyncio":
        runner.close()


def records(n: int) -> list[FileRecord]:
    return [FileRecord(i, f"file-{i}.bin", size=i * 10, status=Status.S3_COPIED, dest_key=f"k/{i}", s3_attempts=1,
                       failed_stage=Stage.API if i % 2 else None, error="é ✓" if i % 2 else None,
                       last_stage=Stage.S3) for i in range(1, n + 1)]


# The launcher --------------------------------------------------------------------------
def test_server_runs_on_loopback_without_persistence_and_stops_by_pid(server: RedisServer):
    with RedisServer() as redis_server:
        directory, pid = Path(redis_server.dir), redis_server.pid
        assert listening(redis_server.port) and redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
        import redis

        with redis.Redis(port=redis_server.port) as client:  # what the server itself says it runs with
            config = client.config_get("*")
            assert client.info("server")["process_id"] == pid
        assert (config["bind"], config["save"], config["appendonly"]) == ("127.0.0.1", "", "no")
        assert Path(config["dir"]).resolve() == directory.resolve()
    assert not listening(redis_server.port) and not directory.exists()
    assert redis_server.service.proc.returncode is not None


def test_a_missing_redis_server_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServiceError) as caught:
        RedisServer().start()
    assert "redis-server is not installed" in str(caught.value) and "apt-get install redis-server" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_server_that_cannot_start_says_why(server: RedisServer, tmp_path: Path):
    with pytest.raises(ServiceError, match="already in use"):
        RedisServer(port=server.port).start()  # never mistaken for the server already there
    (tmp_path / "appendonlydir").mkdir()
    (tmp_path / "appendonlydir" / "appendonly.aof.manifest").write_text("not a manifest\n")
    with pytest.raises(ServiceError) as caught:
        RedisServer(persist=True, dir=str(tmp_path)).start()
    message = str(caught.value)
    assert "exited with code" in message and "AOF manifest" in message and "\n" not in message  # its log's last word


@pytest.mark.slow
def test_without_redis_these_tests_skip_saying_why_but_fail_under_ci(tmp_path: Path):
    """The guard itself: on a machine without redis-server, a skip with the reason; in CI, a failure."""
    here = Path(__file__)
    argv = [sys.executable, "-m", "pytest", str(here), "-k", "stops_by_pid", "-p", "no:cacheprovider", "-rs"]
    env = {**os.environ, "PATH": str(tmp_path)}  # no redis-server on it
    for ci, code, said in (("false", 0, "SKIPPED"), ("true", 1, "must not be skipped")):
        done = subprocess.run(argv, cwd=here.parent.parent, env={**env, "CI": ci}, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == code, done.stdout
        assert said in done.stdout and "apt-get install redis-server" in done.stdout



def test_a_restart_with_persistence_keeps_queues_and_what_a_worker_held(tmp_path: Path):
    need_redis()
    from pillpipe.threaded import broker as tbroker

    redis_server = RedisServer(persist=True, dir=str(tmp_path)).start()
    try:
        broker = tbroker.connect(redis_server.url, new_run())
        outbox, inbox = broker.queue(Stage.S3), broker.consumer(Stage.S3, "S3-Worker-1")
        for record in records(3):
            outbox.put(record)
        held = inbox.get()
        redis_server.stop()
        assert not listening(redis_server.port)
        redis_server.start()  # same port, same directory: the append-only file is read back
        assert broker.backlog(Stage.S3) == core.Backlog(live=1, queued=2, pills=0, holding_pill=0, held=1)
        assert same(inbox.get(), held)  # the unacked item comes back to the worker that held it
        inbox.task_done()
        assert [inbox.get().id, inbox.task_done(), inbox.get().id] == [2, None, 3]
        broker.close()
    finally:
        redis_server.stop()


# URLs, keys, bytes -----------------------------------------------------------------------
@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "127.0.0.1:6379", "redis://", "redis://host:99999/0",
                                 "redis://host:6379/zero", "redis://host:0", "unix://", ""])
def test_a_bad_url_is_a_one_line_usage_error(url: str):
    with pytest.raises(UsageError) as caught:
        core.check_url(url)
    assert "\n" not in str(caught.value) and str(caught.value).startswith("--broker")


def test_a_bad_url_is_refused_by_both_models_before_any_connection():
    need_client()
    from pillpipe.asyncio_version import broker as abroker
    from pillpipe.threaded import broker as tbroker

    for url in ("http://127.0.0.1:6379/0", "redis://127.0.0.1:6379/x", "redis://127.0.0.1:6379/0?socket_timeout=x"):
        with pytest.raises(UsageError, match="^--broker") as caught:
            tbroker.connect(url, "r")
        assert "\n" not in str(caught.value)
        with pytest.raises(UsageError, match="^--broker"):
            asyncio.run(abroker.connect(url, "r"))
    with pytest.raises(UsageError, match="--run"):
        tbroker.connect("redis://127.0.0.1:6379/0", "a run with spaces")


def test_a_broker_that_is_down_is_a_clear_error_within_a_bounded_time(model: Model):
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(core.BrokerError) as caught:
        model.connect(url=f"redis://:secret@127.0.0.1:{port}/0")
    message = str(caught.value)
    assert time.monotonic() - started < 15
    assert f"127.0.0.1:{port}" in message and "unreachable" in message and "\n" not in message
    assert "secret" not in message  # a password never reaches a message


def test_keys_of_a_run_share_one_hash_tag_and_a_run_id_is_checked():
    keys = core.Keys("r-1.a_b")
    assert keys.queue(Stage.S3) == "pillpipe:{r-1.a_b}:queue:s3"
    assert keys.processing(Stage.API, "h/1/API-Worker-2") == "pillpipe:{r-1.a_b}:processing:api:h/1/API-Worker-2"
    assert keys.workers(Stage.VERIFY) == "pillpipe:{r-1.a_b}:workers:verify"
    assert {keys.rows, keys.counts} == {"pillpipe:{r-1.a_b}:ledger:rows", "pillpipe:{r-1.a_b}:ledger:counts"}
    for bad in ("", "a b", "a{b}", "a:b", "x" * 65):
        with pytest.raises(UsageError):
            core.Keys(bad)


texts = st.text(max_size=30)  # any code point, lone surrogates included
file_records = st.builds(
    FileRecord, id=st.integers(0, 2**63), name=texts, size=st.none() | st.integers(0, 2**40),
    source_bucket=st.none() | texts, source_key=st.none() | texts, status=st.sampled_from(Status),
    dest_key=st.none() | texts, s3_attempts=st.integers(0, 10), api_attempts=st.integers(0, 10),
    failed_stage=st.none() | st.sampled_from(Stage), error=st.none() | texts, last_stage=st.sampled_from(Stage))


@given(file_records)
@settings(max_examples=200, deadline=None)
def test_a_record_survives_the_trip_through_bytes(record: FileRecord):
    raw = core.encode(record)
    assert isinstance(raw, bytes) and raw != core.PILL_BYTES
    assert same(core.decode(raw), record)


def test_the_pill_travels_as_the_pill_and_garbage_is_a_clear_error():
    assert core.decode(core.encode(PILL)) is PILL
    for garbage in (b"", b"PILL2", b"[1,2]", b'{"id": 1}', b"\xff\xfe", b'{"id":1,"name":"a","status":"NOPE"}'):
        with pytest.raises(core.BrokerError, match="not a pillpipe message") as caught:
            core.decode(garbage, "pillpipe:{r}:queue:s3")
        assert "pillpipe:{r}:queue:s3" in str(caught.value) and "\n" not in str(caught.value)


# The reliable queue, both models ----------------------------------------------------------
def test_put_get_ack_round_trip(model: Model):
    broker = model.connect()
    outbox, inbox = broker.queue(Stage.API), broker.consumer(Stage.API, "API-Worker-1")
    sent = records(3)
    for record in sent:
        outbox.put(record)
    assert broker.backlog(Stage.API) == core.Backlog(live=1, queued=3, pills=0, holding_pill=0, held=0)
    for record in sent:  # first in, first out
        got = inbox.get()
        assert same(got, record) and got is not record
        backlog = broker.backlog(Stage.API)
        assert backlog.held == 1 and backlog.files == 3 - record.id + 1  # held until the ack, so not lost
        inbox.task_done()
    assert broker.backlog(Stage.API) == core.Backlog(live=1, queued=0, pills=0, holding_pill=0, held=0)
    with pytest.raises(ValueError):
        inbox.task_done()  # nothing held: like queue.Queue's task_done() once too often


def test_the_pill_is_still_a_pill(model: Model):
    broker = model.connect()
    outbox, inbox = broker.queue(Stage.S3), broker.consumer(Stage.S3, "S3-Worker-1")
    outbox.put(records(1)[0])
    outbox.put(PILL)
    assert inbox.get().id == 1
    inbox.task_done()
    assert inbox.get() is PILL
    assert broker.backlog(Stage.S3) == core.Backlog(live=1, queued=0, pills=0, holding_pill=1, held=1)
    assert broker.backlog(Stage.S3).files == 0  # a pill in hand is no file
    assert inbox.leave() == 0  # the pill it held is dropped, not requeued
    assert broker.backlog(Stage.S3) == core.Backlog(live=0, queued=0, pills=0, holding_pill=0, held=0)
    with pytest.raises(core.LeaseLost):
        inbox.get_nowait()  # a worker that left takes nothing more


def test_a_bounded_queue_is_full_and_an_empty_one_times_out(model: Model):
    broker = model.connect()
    outbox, inbox = broker.queue(Stage.S3, maxsize=2), broker.consumer(Stage.S3, "S3-Worker-1")
    outbox.put(records(1)[0])
    outbox.put_nowait(PILL)
    with pytest.raises(model.module.Full):
        outbox.put_nowait(records(1)[0])
    started = time.monotonic()
    with pytest.raises(model.module.Full):
        outbox.put(records(1)[0], timeout=0.2)
    assert time.monotonic() - started >= 0.2
    inbox.get()
    inbox.task_done()
    outbox.put(records(2)[1], timeout=5)  # room again
    assert [inbox.get() is PILL, inbox.leave()] == [True, 0]
    other = broker.consumer(Stage.S3, "S3-Worker-2")
    assert other.get().id == 2
    other.task_done()
    with pytest.raises(model.module.Empty):
        other.get_nowait()
    started = time.monotonic()
    with pytest.raises(model.module.Empty):
        other.get(timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 10
    with pytest.raises(TypeError, match="registered consumer"):
        outbox.get_nowait()  # the put side takes nothing: only a registered consumer has a processing list


def test_an_item_taken_is_nobody_elses_until_acked_and_comes_back_to_its_worker(model: Model):
    broker = model.connect()
    run = broker.keys.run
    outbox, first = broker.queue(Stage.S3), broker.consumer(Stage.S3, "S3-Worker-1")
    outbox.put(records(2)[0])
    held = first.get()
    with pytest.raises(model.module.Empty):
        broker.consumer(Stage.S3, "S3-Worker-2").get_nowait()  # the only item is in S3-Worker-1's hands
    outbox.put(records(2)[1])
    again = model.connect(run=run).consumer(Stage.S3, "S3-Worker-1")  # the same worker, a new connection
    assert same(again.get(), held)  # a lost reply or a reconnect never strands what the worker held
    again.task_done()
    assert again.get().id == 2


def test_runs_do_not_see_each_others_keys(model: Model):
    mine, theirs = model.connect(), model.connect()
    mine.queue(Stage.S3).put(records(1)[0])
    with pytest.raises(model.module.Empty):
        theirs.consumer(Stage.S3, "S3-Worker-1").get_nowait()
    assert mine.clear() == 1  # its queue, and nothing of the other run
    assert theirs.live(Stage.S3) == 1


# Leases: live consumers, pills, reclaim ----------------------------------------------------
def test_pills_follow_the_live_consumers(model: Model):
    broker = model.connect(ttl=30)
    consumers = [broker.consumer(Stage.API, f"API-Worker-{i}") for i in (1, 2, 3)]
    outbox = broker.queue(Stage.API)
    outbox.put(records(1)[0])
    assert broker.live(Stage.API) == 3
    assert broker.end_stream(Stage.API) == 3  # one pill per live consumer, behind the file
    assert broker.end_stream(Stage.API) == 0  # called again: every consumer has a pill coming
    assert consumers[0].get().id == 1
    consumers[0].task_done()
    assert consumers[0].get() is PILL
    assert broker.end_stream(Stage.API) == 0  # a pill in hand counts as a pill
    assert consumers[0].leave() == 0 and broker.live(Stage.API) == 2
    late = broker.consumer(Stage.API, "API-Worker-4")  # joins after the stream ended
    assert broker.end_stream(Stage.API) == 1  # ... and gets a pill of its own
    assert [c.get() is PILL for c in (*consumers[1:], late)] == [True] * 3
    for consumer in (*consumers[1:], late):
        consumer.leave()
    assert broker.backlog(Stage.API) == core.Backlog(live=0, queued=0, pills=0, holding_pill=0, held=0)


def test_an_expired_lease_is_reclaimed_and_its_worker_must_stop(model: Model):
    ttl = 0.5
    broker = model.connect(ttl=ttl)
    outbox, stalled = broker.queue(Stage.S3), broker.consumer(Stage.S3, "S3-Worker-1")
    for record in records(2):
        outbox.put(record)
    held = stalled.get()
    assert broker.reclaim() == (0, 0)  # its lease has not run out
    deadline = time.monotonic() + 10
    while broker.live(Stage.S3) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert broker.live(Stage.S3) == 0
    assert broker.backlog(Stage.S3) == core.Backlog(live=0, queued=1, pills=0, holding_pill=0, held=0)
    assert broker.reclaim() == (1, 1)  # one worker reclaimed, one record requeued
    assert broker.reclaim() == (0, 0)
    assert broker.renew() == [stalled.worker] and broker.lost == {stalled.worker}
    with pytest.raises(core.LeaseLost, match="not registered"):
        stalled.get_nowait()
    sibling = broker.consumer(Stage.S3, "S3-Worker-2")
    assert same(sibling.get(), held)  # the reclaimed record is taken first, ahead of newer ones
    sibling.task_done()
    assert sibling.get().id == 2


def test_a_heartbeat_keeps_a_lease_and_reclaims_a_dead_one(server: RedisServer):
    need_redis()
    from pillpipe.asyncio_version import broker as abroker

    async def main() -> tuple[int, core.Backlog, list[int]]:
        ttl = 0.6
        alive, dead = await abroker.connect(server.url, new_run(), ttl=ttl), None
        try:
            dead = await abroker.connect(server.url, alive.keys.run, ttl=ttl)  # a process with no heartbeat
            for record in records(2):
                await alive.queue(Stage.S3).put(record)
            gone = await dead.consumer(Stage.S3, "S3-Worker-9")
            await gone.get()
            worker = await alive.consumer(Stage.S3, "S3-Worker-1")
            async with abroker.Heartbeat(alive) as heartbeat:
                await asyncio.sleep(ttl * 3)  # five beats: its lease renewed, the other's reclaimed
                assert heartbeat.error is None
                live, backlog = await alive.live(Stage.S3), await alive.backlog(Stage.S3)
                ids = []
                for _ in range(2):
                    ids.append((await worker.get(timeout=5)).id)
                    await worker.task_done()
            return live, backlog, ids
        finally:
            await alive.clear()
            for broker in (alive, dead):
                if broker is not None:
                    await broker.close()

    live, backlog, ids = asyncio.run(main())
    assert live == 1 and backlog == core.Backlog(live=1, queued=2, pills=0, holding_pill=0, held=0)
    assert ids == [1, 2]


def test_an_abort_reaches_a_worker_process_s_look_at_its_run(model: Model):
    """The coordinator's abort is a key of the run; a worker process's heartbeat reads it with the
    coordinator's lease, in one MGET (``led``): from then on ``aborted`` says why, and it is not led."""
    coordinator = model.connect()
    worker = model.connect(run=coordinator.keys.run)
    coordinator.coordinate()
    assert worker.led() and worker.aborted is None
    coordinator.abort()
    assert coordinator.keys.aborted == f"pillpipe:{{{coordinator.keys.run}}}:aborted"
    assert not worker.led() and worker.aborted == core.coordinator_aborted(coordinator.keys.run)
    assert worker.orphaned is None  # its coordinator is alive: it aborted the run, it is not gone


@pytest.mark.parametrize("kind", ["threaded", "asyncio"])
def test_a_worker_process_s_heartbeat_calls_abort_once_its_coordinator_aborted(server: RedisServer, kind: str):
    """The heartbeat is what tells a worker process: ``abort(why)``, on the heartbeat's own thread (threads) or
    on the loop (coroutines) - never before the coordinator aborted."""
    need_redis()
    from pillpipe.asyncio_version import broker as abroker
    from pillpipe.threaded import broker as tbroker

    ttl, run, seen = 0.3, new_run(), []

    def abort(why: str) -> None:
        seen.append((why, threading.current_thread().name))

    def told(before: list[Any]) -> bool:
        return bool(seen) or time.monotonic() > before[0]

    if kind == "threaded":
        coordinator, worker = tbroker.connect(server.url, run, ttl=ttl), tbroker.connect(server.url, run, ttl=ttl)
        try:
            coordinator.coordinate()
            with tbroker.Heartbeat(worker, abort):
                time.sleep(ttl)  # three beats, each a look at the run: nothing to tell
                quiet = list(seen)
                coordinator.abort()
                deadline = [time.monotonic() + 10]
                while not told(deadline):
                    time.sleep(0.02)
        finally:
            coordinator.clear()
            coordinator.close()
            worker.close()
    else:
        async def main() -> list[Any]:
            coordinator = await abroker.connect(server.url, run, ttl=ttl)
            worker = await abroker.connect(server.url, run, ttl=ttl)
            try:
                await coordinator.coordinate()
                async with abroker.Heartbeat(worker, abort):
                    await asyncio.sleep(ttl)
                    quiet = list(seen)
                    await coordinator.abort()
                    deadline = [time.monotonic() + 10]
                    while not told(deadline):
                        await asyncio.sleep(0.02)
                return quiet
            finally:
                await coordinator.clear()
                await coordinator.close()
                await worker.close()

        quiet = asyncio.run(main())
    assert quiet == []
    assert seen and {why for why, _ in seen} == {core.coordinator_aborted(run)}
    assert {thread for _, thread in seen} == {"Broker-Heartbeat" if kind == "threaded" else "MainThread"}


def test_a_lane_that_closes_acks_what_its_process_settled_and_gives_back_the_rest(model: Model):
    """At an abort a process settles what its workers hold, then closes its lanes: a record whose file
    it settled is acked, any other goes back to the queue (the coordinator takes it back) - each once a
    row this process settled for it is on the broker (``written``); every lease ends."""
    import redis

    broker = model.connect()
    for record in records(3):
        broker.queue(Stage.API).put(record)
    waited: list[int] = []
    if model.name == "threaded":
        lane = model.module.Lane(broker, Stage.API, written=waited.append)
    else:
        async def written(file_id: int) -> None:
            waited.append(file_id)

        lane = OnLoop(model.module.Lane(broker._target, Stage.API, written=written), broker._runner)
    first, second = lane.get("API-Worker-1"), lane.get("API-Worker-2")
    lane.close({first.id})  # this process settled the first file, not the second (say, it passed it on)
    assert waited == [first.id, second.id]
    assert broker.backlog(Stage.API) == core.Backlog(live=0, queued=2, pills=0, holding_pill=0, held=0)
    probe = redis.Redis.from_url(broker.url)
    try:
        assert [core.decode(raw).id for raw in probe.lrange(broker.keys.queue(Stage.API), 0, -1)] == [3, second.id]
    finally:
        probe.close()


WORKER = """
import sys, time
from pillpipe.common.model import Stage
from pillpipe.threaded.broker import Heartbeat, connect

broker = connect(sys.argv[1], sys.argv[2], ttl=float(sys.argv[3]))
inbox = broker.consumer(Stage.S3, "S3-Worker-1")
with Heartbeat(broker):
    record = inbox.get(timeout=30)
    print(record.id, flush=True)
    time.sleep(60)  # holding it, until killed
"""


@pytest.mark.slow
def test_a_killed_worker_s_item_is_reclaimed_after_its_lease_and_worked_once_more(model: Model):
    import redis

    ttl = 2.0
    broker = model.connect(ttl=ttl)
    probe = redis.Redis.from_url(broker.url)  # looks at the broker's own clock and leases
    outbox = broker.queue(Stage.S3)
    outbox.put(records(1)[0])
    child = subprocess.Popen([sys.executable, "-c", WORKER, broker.url, broker.keys.run, str(ttl)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "1"  # it holds file 1
        time.sleep(ttl * 1.5)  # longer than a lease: its heartbeat keeps it
        assert broker.reclaim() == (0, 0)
        assert broker.backlog(Stage.S3) == core.Backlog(live=1, queued=0, pills=0, holding_pill=0, held=1)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        [(worker, deadline)] = probe.zrange(broker.keys.workers(Stage.S3), 0, -1, withscores=True)
        killed = time.monotonic()
        while (reclaimed := broker.reclaim()) == (0, 0) and time.monotonic() - killed < ttl + 20:
            time.sleep(0.05)
        seconds, micros = probe.time()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        child.stdout.close()
    assert reclaimed == (1, 1)
    assert seconds * 1000 + micros // 1000 >= deadline  # not before its last lease ran out (broker clock)
    assert worker.decode().endswith(f"/{child.pid}/S3-Worker-1")
    sibling = broker.consumer(Stage.S3, "S3-Worker-2")
    record = sibling.get(timeout=5)
    assert record.id == 1
    record.status, record.last_stage = Status.API_UPLOADED, Stage.API
    assert broker.ledger.commit([row(record, Outcome.SUCCESS)]) == [True]
    sibling.task_done()
    with pytest.raises(model.module.Empty):
        sibling.get(timeout=0.2)  # worked exactly once more: nothing else comes
    assert broker.backlog(Stage.S3) == core.Backlog(live=1, queued=0, pills=0, holding_pill=0, held=0)
    assert broker.ledger.counts()["success"] == 1 and [r["id"] for r in broker.ledger.rows()] == [1]
    probe.close()


# A broker that goes away ---------------------------------------------------------------
def test_a_broker_killed_mid_get_is_a_clear_error_not_a_hang_threads():
    need_redis()
    from pillpipe.threaded import broker as tbroker

    with RedisServer() as redis_server:
        inbox = tbroker.connect(redis_server.url, new_run()).consumer(Stage.S3, "S3-Worker-1")
        caught: list[BaseException] = []
        worker = threading.Thread(target=lambda: _catch(caught, inbox.get), daemon=True)
        worker.start()
        time.sleep(0.3)  # blocked in BLMOVE on an empty queue
        killed = time.monotonic()
        redis_server.kill()
        worker.join(30)
        assert not worker.is_alive()
    assert time.monotonic() - killed < 15
    assert len(caught) == 1 and isinstance(caught[0], core.BrokerError)
    assert redis_server.url in str(caught[0]) and "\n" not in str(caught[0])


def test_a_broker_killed_mid_get_is_a_clear_error_not_a_hang_coroutines():
    need_redis()
    from pillpipe.asyncio_version import broker as abroker

    async def main(redis_server: RedisServer) -> float:
        broker = await abroker.connect(redis_server.url, new_run())
        inbox = await broker.consumer(Stage.S3, "S3-Worker-1")
        getting = asyncio.create_task(inbox.get())
        await asyncio.sleep(0.3)  # blocked in BLMOVE on an empty queue
        killed = time.monotonic()
        redis_server.kill()
        try:
            async with asyncio.timeout(30):
                with pytest.raises(core.BrokerError) as caught:
                    await getting
        finally:
            await broker.close()
        assert redis_server.url in str(caught.value) and "\n" not in str(caught.value)
        return time.monotonic() - killed

    with RedisServer() as redis_server:
        assert asyncio.run(main(redis_server)) < 15


def test_anyio_on_asyncio_uses_the_asyncio_broker_and_its_cancel_scopes(server: RedisServer):
    need_redis()
    import anyio

    from pillpipe.asyncio_version import broker as abroker

    async def main() -> list[Any]:
        broker = await abroker.connect(server.url, new_run())
        try:
            inbox = await broker.consumer(Stage.VERIFY, "Verifier")
            with anyio.move_on_after(0.3) as scope:
                await inbox.get()  # blocked on an empty queue: the scope cancels it
            await broker.queue(Stage.VERIFY).put(records(1)[0])
            got = await inbox.get()
            await inbox.task_done()
            return [scope.cancelled_caught, got.id, await broker.backlog(Stage.VERIFY)]
        finally:
            await broker.clear()
            await broker.close()

    assert anyio.run(main, backend="asyncio") == [True, 1, core.Backlog(1, 0, 0, 0, 0)]


# The ledger on Redis ---------------------------------------------------------------------
def row(record: FileRecord, outcome: Outcome, verified: bool = True) -> dict[str, Any]:
    return {"id": record.id, "name": record.name, "outcome": outcome.value, "dest_key": record.dest_key,
            "failed_stage": record.failed_stage.value if record.failed_stage else None, "error": record.error,
            "s3_attempts": record.s3_attempts, "api_attempts": record.api_attempts,
            "last_stage": record.last_stage.value, "verified": verified}


def test_the_first_write_wins_per_file(model: Model):
    ledger = model.connect().ledger
    first, again = records(2)
    assert ledger.commit([row(first, Outcome.SUCCESS), row(again, Outcome.ABORTED, verified=False)]) == [True, True]
    assert ledger.commit([row(first, Outcome.FAILED), row(again, Outcome.SUCCESS)]) == [False, False]  # worked twice
    rejected = {"line": 7, "id": 1, "name": "dup", "outcome": "duplicate", "error": "id 1 seen before"}
    assert ledger.commit([rejected, rejected]) == [True, False]  # keyed by its line, not the id it repeats
    assert ledger.commit([]) == []
    settled = [(r.get("id"), r["outcome"]) for r in ledger.rows()]
    assert settled == [(1, "success"), (1, "duplicate"), (2, "aborted")]  # in the report's order
    assert ledger.counts() == {"success": 1, "failed": 0, "cancelled": 0, "aborted": 1, "invalid": 0,
                               "duplicate": 1, "processed": 1}
    with pytest.raises(ValueError, match="needs"):
        ledger.commit([{"id": 3, "outcome": "success"}])


def test_exactly_one_terminal_state_per_file_under_concurrent_writers(server: RedisServer):
    need_redis()
    from pillpipe.threaded import broker as tbroker

    broker = tbroker.connect(server.url, new_run())
    files = records(50)
    outcomes = list(Outcome)[:4]
    won: dict[int, list[bool]] = {}
    barrier = threading.Barrier(4)

    def writer(index: int) -> None:
        barrier.wait()
        rows = [row(f, outcomes[(f.id + index) % 4]) for f in files]
        won[index] = [w for i in range(0, 50, 10) for w in broker.ledger.commit(rows[i:i + 10])]

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert [sum(won[i][f] for i in range(4)) for f in range(50)] == [1] * 50  # one winner per file
        settled = broker.ledger.rows()
        assert [r["id"] for r in settled] == list(range(1, 51))
        counts = broker.ledger.counts()
        assert sum(counts[o.value] for o in Outcome) == 50 and counts["processed"] == 50
        for r in settled:  # the row kept is the winner's
            winner = next(i for i in range(4) if won[i][r["id"] - 1])
            assert r["outcome"] == outcomes[(r["id"] + winner) % 4].value
    finally:
        broker.clear()
        broker.close()


def test_rows_read_back_give_an_in_process_run_s_report(model: Model):
    from pillpipe import threaded

    report = threaded.run(fast(files=60, seed=11, fail_rate=0.3, retries=1, details=True))
    assert report.failed and report.success  # both kinds of row
    ledger = model.connect().ledger
    rows = [{**d, "verified": d["outcome"] in ("success", "failed")} for d in report.files]
    for i in range(0, len(rows), 16):  # in batches, as a worker commits them
        assert all(ledger.commit(rows[i:i + 16]))
    assert not any(ledger.commit(rows))  # a second delivery of every file changes nothing
    settled = ledger.rows()
    assert [{k: v for k, v in r.items() if k != "verified"} for r in settled] == report.files
    counts = ledger.counts()
    assert counts["processed"] == report.processed
    assert {o.value: counts[o.value] for o in Outcome} == {o.value: getattr(report, o.value) for o in Outcome}
    assert core.digest(settled) == report.digest


def test_the_digest_of_rows_is_the_ledger_s_for_every_kind_of_outcome():
    """No broker needed: a never-started generated file adds its closed form (common/ledger.py), not
    its line's SHA-256, and the digest of its row must add the same."""
    from pillpipe.common.ledger import Ledger
    from pillpipe.common.model import Rejected
    from pillpipe.common.timing import Timeline
    from pillpipe.common.workload import file_name

    ledger = Ledger(details=True)
    done = FileRecord(1, file_name(1), status=Status.API_UPLOADED, dest_key="k", s3_attempts=1, api_attempts=1,
                      last_stage=Stage.API)
    failed = FileRecord(2, file_name(2), status=Status.FAILED, failed_stage=Stage.S3, error="boom", s3_attempts=2)
    never, stopped = FileRecord(3, file_name(3)), FileRecord(4, file_name(4))  # cancelled before any stage
    started, named = FileRecord(5, file_name(5), s3_attempts=1), FileRecord(6, "other.pdf")
    for record in (done, failed, never, stopped, started, named):
        ledger.admit(record)
    ledger.verify(done)
    ledger.verify(failed)
    ledger.settle(never, Outcome.CANCELLED)
    ledger.settle(stopped, Outcome.CANCELLED, "s3 stage dead")
    ledger.settle(started, Outcome.ABORTED)
    ledger.settle(named, Outcome.CANCELLED)
    ledger.reject(Rejected(7, Outcome.INVALID, "line 7: no id"))
    report = ledger.report("x", Timeline())
    assert (report.success, report.failed, report.cancelled, report.aborted, report.invalid) == (1, 1, 3, 1, 1)
    assert core.digest(report.files) == report.digest
    assert core.digest(report.files[1:]) != report.digest


def _catch(caught: list[BaseException], call: Callable[[], Any]) -> None:
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        caught.append(exc)
