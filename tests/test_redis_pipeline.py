"""The pipeline across processes on Redis (``--broker``): a real redis-server on a free loopback port
per module, real ``pillpipe worker`` / ``pillpipe dispatch`` processes.

Every run has its own run id on the module's server (or a server of its own when a test kills it).
Without redis-server (or redis-py) these tests skip, saying how to install it - except under CI=true,
where they fail (``tests/test_broker.py``'s rule).
"""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from pillpipe import anyio_version, asyncio_version, threaded
from pillpipe.common.context import WorkerCrashes
from pillpipe.services.process import free_port
from pillpipe.services.redis import RedisServer

from .conftest import ROOT, cli, fast, need_redis, new_run, run_sequential

RUNS = {"threaded": threaded.run, "asyncio": asyncio_version.run, "anyio": anyio_version.run}


def report_of(done) -> dict:
    """The JSON report a command printed, minus what may differ between runs of one workload."""
    report = json.loads(done.stdout)
    report.pop("variant"), report.pop("timing")
    return report


def reference(**flags) -> dict:
    """The in-process report of the same flags (the sequential reference's: every model equals it)."""
    try:
        return run_sequential(fast(**flags)).comparable()
    except WorkerCrashes as crashes:  # a worker died (an injected fault): the report comes with it
        assert crashes.report is not None
        return crashes.report.comparable()


WORKLOAD = dict(files=60, fail_rate=0.2, retries=1, seed=7, details=True)


# One process on the broker's queues -----------------------------------------------------------
@pytest.mark.parametrize("variant", list(RUNS))
@pytest.mark.parametrize("queue_size", [0, 3])
def test_a_run_on_the_broker_s_queues_reports_what_an_in_process_run_does(server, variant, queue_size):
    config = fast(**WORKLOAD, queue_size=queue_size, broker=server.url, run_id=new_run())
    report = RUNS[variant](config)
    assert report.comparable() == reference(**WORKLOAD, queue_size=queue_size)
    assert report.expected == report.terminal_total == 60 and report.processed == 60
    assert 0 < report.failed < 60


@pytest.mark.parametrize("variant", list(RUNS))
def test_a_run_with_real_waits_on_the_broker_interleaves_and_still_agrees(server, variant):
    flags = dict(files=30, time_scale=0.002, fail_rate=0.2, retries=1, seed=11, s3_workers=4, api_workers=3)
    report = RUNS[variant](fast(**flags, broker=server.url))
    assert report.comparable() == reference(**flags)


@pytest.mark.parametrize("variant", ["threaded", "asyncio"])
def test_a_process_holds_more_workers_than_redis_py_s_default_pool(server, variant):
    """Each worker blocked in a take holds a connection: 150 API workers in one process (redis-py 8
    pools 100 connections by default: the 101st failed "Too many connections")."""
    flags = dict(files=300, api_workers=150, time_scale=0.01, seed=2)
    report = RUNS[variant](fast(**flags, broker=server.url, run_id=new_run()))
    assert report.comparable() == reference(**flags) and report.success == 300


# No blocking Redis call on the event loop; every row committed before its record is acked ---------
@pytest.fixture
def committed(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """Every commit of rows to the broker, and every ack: for a commit its rows, its thread and
    the event loop running there (if any); for an ack the file, its stage, and whether its row
    was committed by then (tests/test_durable.py's ``commits``, for the broker)."""
    import sniffio

    from pillpipe.asyncio_version import broker as async_broker
    from pillpipe.common.broker import decode
    from pillpipe.common.model import FileRecord
    from pillpipe.common.redisstore import RedisStore
    from pillpipe.threaded import broker as thread_broker

    seen: list[dict[str, object]] = []
    done: set[int] = set()
    commit = RedisStore.commit

    def spy(self: RedisStore, rows):
        try:
            loop = sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            loop = None
        won = commit(self, rows)
        done.update(row.id for row in rows)
        seen.append({"rows": [row.id for row in rows], "thread": threading.current_thread().name, "loop": loop})
        return won

    def acked(queue_) -> dict[str, object] | None:
        message = decode(queue_.held, queue_.key) if queue_.held is not None else None
        if not isinstance(message, FileRecord):
            return None
        return {"ack": message.id, "stage": queue_.stage.value, "committed": message.id in done}

    sync_ack, async_ack = thread_broker.BrokerQueue.task_done, async_broker.BrokerQueue.task_done

    def sync_spy(self):
        seen.append(acked(self) or {})
        return sync_ack(self)

    async def async_spy(self):
        seen.append(acked(self) or {})
        return await async_ack(self)

    monkeypatch.setattr(RedisStore, "commit", spy)
    monkeypatch.setattr(thread_broker.BrokerQueue, "task_done", sync_spy)
    monkeypatch.setattr(async_broker.BrokerQueue, "task_done", async_spy)
    return seen


@pytest.mark.parametrize("variant", list(RUNS))
def test_no_row_is_committed_on_the_event_loop_and_each_before_its_ack(server, variant, committed):
    """asyncio and anyio hand each commit to a thread (the journal's writer, as for --state);
    threads commit on the writer thread, never in a worker.  And the verifier's ack of a record
    waits for the row of its verdict: a kill -9 at any instant loses no outcome."""
    flags = dict(files=400, fail_rate=0.2, retries=1, seed=5, details=True, queue_size=20)
    report = RUNS[variant](fast(**flags, broker=server.url, run_id=new_run()))
    assert report.comparable() == reference(**flags)
    commits = [c for c in committed if "rows" in c]
    assert sorted(i for c in commits for i in c["rows"]) == list(range(1, 401))  # type: ignore[attr-defined]
    assert all(c["loop"] is None for c in commits), commits
    threads = {str(c["thread"]) for c in commits}
    assert not any(name.startswith(("Dispatcher", "S3-Worker", "API-Worker", "Verifier")) for name in threads)
    if variant == "threaded":
        assert threads <= {"State-Writer", "MainThread"}
    acks = [a for a in committed if a.get("stage") == "verify"]  # the verifier settles every file it acks
    assert len(acks) >= 400 and all(a["committed"] for a in acks), [a for a in acks if not a["committed"]][:5]


# Bad input and a broker that is not there -----------------------------------------------------
@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "redis://", "redis://h:99999", "redis://h:1/x"])
def test_a_bad_broker_url_is_one_line_and_exit_2(url):
    done = cli("pillpipe", "run", "asyncio", "--broker", url, "--files", "1", "--time-scale", "0")
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pillpipe run asyncio: error: --broker "), lines


@pytest.mark.parametrize("flags", [["--shutdown", "relay"], ["--state", "s.db"], ["--batch", "4"],
                                   ["--processes", "2", "--broker", ""]])
def test_what_a_run_across_processes_does_not_do_is_refused_in_one_line(flags):
    argv = ["--broker", "redis://127.0.0.1:1/0", *flags] if "--broker" not in flags else flags
    done = cli("pillpipe", "run", "threaded", *argv, "--files", "1", "--time-scale", "0")
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "error: --" in done.stderr, done.stderr


def test_the_sequential_reference_and_anyio_on_trio_refuse_a_broker_in_one_line():
    done = cli("pillpipe", "run", "sequential", "--broker", "redis://127.0.0.1:1/0", "--files", "1")
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert "--broker redis://127.0.0.1:1/0 applies to the threaded and asyncio and anyio variants only" in done.stderr
    done = cli("pillpipe", "run", "anyio", "--broker", "redis://127.0.0.1:1/0", "--backend", "trio", "--files", "1")
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert "--broker does not go with --backend trio: redis.asyncio runs on asyncio only" in done.stderr


@pytest.mark.parametrize("variant", list(RUNS))
def test_a_broker_that_is_down_at_the_start_is_one_line_and_exit_69_fast(variant):
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = cli("pillpipe", "run", variant, "--broker", url, "--files", "5", "--time-scale", "0", timeout=30)
    assert done.returncode == 69 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and f"broker {url} unreachable" in lines[0], lines


def test_a_run_id_already_on_the_broker_is_refused(server):
    run = new_run()
    RUNS["threaded"](fast(files=3, broker=server.url, run_id=run))
    done = cli("pillpipe", "run", "threaded", "--broker", server.url, "--run", run, "--files", "3",
               "--time-scale", "0")
    assert done.returncode == 2 and f"--run {run}: a run of that name is already on the broker" in done.stderr


# Across processes ------------------------------------------------------------------------------
FLAGS = ["--files", "60", "--fail-rate", "0.2", "--retries", "1", "--seed", "7", "--details", "--time-scale", "0",
         "--json", "--quiet"]


def popen_worker(server, run: str, stage: str, model: str, workers: int = 1, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "pillpipe", "worker", "--broker", server.url, "--run", run, "--stage", stage,
            "--model", model, "--workers", str(workers), "--quiet", *extra]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(children: list[subprocess.Popen], timeout: float = 60) -> list[int | None]:
    """Each child's exit code, waiting (bounded) for it; one still running is killed by PID."""
    codes = []
    for child in children:
        try:
            codes.append(child.wait(timeout))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            codes.append(None)
    return codes


def look(server, run: str, what):
    """``what(client, keys)`` on the run's keys: the test reads the broker, not the run's code."""
    import redis

    from pillpipe.common.broker import Keys

    client = redis.Redis.from_url(server.url)
    try:
        return what(client, Keys(run))
    finally:
        client.close()


def rows_on(server, run: str) -> int:
    """How many terminal rows the run has on the broker (its progress)."""
    return int(look(server, run, lambda client, keys: client.hlen(keys.rows)))


def queued(server, run: str, stage: str) -> int:
    from pillpipe.common.model import Stage

    return int(look(server, run, lambda client, keys: client.llen(keys.queue(Stage(stage)))))


def registered(server, run: str, stage: str, child: subprocess.Popen) -> bool:
    """Whether a worker of process ``child`` holds a lease on ``stage`` (its workers run: its
    signal handlers are in)."""
    from pillpipe.common.model import Stage

    members = look(server, run, lambda client, keys: client.zrange(keys.workers(Stage(stage)), 0, -1))
    return any(f"/{child.pid}/" in m.decode() for m in members)


def until(condition, timeout: float, what: str) -> None:
    """Wait (bounded) for ``condition()``: a test that waits on the run, not on the machine's speed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("variant", ["asyncio", "threaded", "anyio"])
def test_run_with_worker_processes_prints_the_in_process_report(server, variant):
    done = cli("pillpipe", "run", variant, "--broker", server.url, "--processes", "2", *FLAGS, timeout=120)
    assert done.returncode == 1, done.stderr  # some files failed, by the seed
    assert report_of(done) == reference(**WORKLOAD)
    workers = json.loads(done.stdout)["timing"]["workers"]
    assert list(workers) == ["Dispatcher"]  # every S3, API and verify worker ran in a child process


def test_a_mixed_run_threads_and_coroutines_in_worker_processes_then_dispatch(server):
    run = new_run()
    children = [popen_worker(server, run, "s3", "threaded", 3), popen_worker(server, run, "s3", "asyncio", 2),
                popen_worker(server, run, "api", "asyncio", 2), popen_worker(server, run, "api", "anyio", 2),
                popen_worker(server, run, "verify", "threaded")]
    try:
        done = cli("pillpipe", "dispatch", "--broker", server.url, "--run", run, *FLAGS, timeout=120)
    finally:
        codes = finished(children)
    assert done.returncode == 1, done.stderr
    assert report_of(done) == reference(**WORKLOAD)
    assert codes == [0, 0, 0, 0, 0], [child.stderr.read() for child in children]


def test_a_worker_for_a_run_that_never_comes_says_so_within_its_wait(server):
    done = cli("pillpipe", "worker", "--broker", server.url, "--run", new_run(), "--stage", "s3", "--wait", "0.5",
               timeout=30)
    assert done.returncode == 69 and len(done.stderr.splitlines()) == 1
    assert "no run" in done.stderr and "pillpipe dispatch" in done.stderr


@pytest.mark.parametrize("argv, says", [
    (["--run", "r", "--stage", "s3"], "--broker"),
    (["--broker", "redis://127.0.0.1:1/0", "--run", "r", "--stage", "sss"], "'sss' is not one of s3, api, verify"),
    (["--broker", "http://x", "--run", "r", "--stage", "s3"], "not a Redis URL"),
    (["--broker", "redis://127.0.0.1:1/0", "--run", "r r", "--stage", "s3"], "a run id is"),
    (["--broker", "redis://127.0.0.1:1/0", "--run", "r", "--stage", "verify", "--workers", "2"], "one verifier"),
])
def test_a_worker_with_bad_flags_is_one_line_and_exit_2(argv, says):
    done = cli("pillpipe", "worker", *argv)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and says in done.stderr, done.stderr


def test_dispatch_needs_a_broker_and_a_run_and_its_help_says_what_it_does():
    done = cli("pillpipe", "dispatch", "--files", "1")
    assert done.returncode == 2 and "needs --broker URL and --run ID" in done.stderr
    helped = cli("pillpipe", "dispatch", "--help")
    assert helped.returncode == 0 and "pillpipe worker" in helped.stdout and "--model" in helped.stdout
    helped = cli("pillpipe", "worker", "--help")
    assert helped.returncode == 0 and "--stage" in helped.stdout and "lease" in helped.stdout
    assert "aborts the run" in helped.stdout and "exit 75" in helped.stdout  # an abort reaches the workers too


# Nothing lost: kill -9, late and early workers, a broker that goes away ----------------------------
CHAOS = dict(files=150, fail_rate=0.2, retries=1, seed=5, details=True, time_scale=0.05, s3_workers=2, api_workers=3)


def chaos_flags(**flags) -> list[str]:
    argv = []
    for name, value in flags.items():
        flag = f"--{name.replace('_', '-')}"
        argv += [flag] if value is True else [flag, *map(str, value)] if isinstance(value, tuple) else [flag, str(value)]
    return [*argv, "--json", "--quiet"]


def dispatch(server, run: str, *argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pillpipe", "dispatch", "--broker", server.url, "--run", run,
                             *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outcome(coordinator: subprocess.Popen, timeout: float = 120) -> tuple[int, dict, str]:
    try:
        out, err = coordinator.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        coordinator.kill()
        out, err = coordinator.communicate()
        pytest.fail(f"the coordinator did not finish in {timeout} s: {err[-2000:]}")
    return coordinator.returncode, json.loads(out) if out.strip() else {}, err


def each_file_once(report: dict, files: int) -> None:
    ids = [f["id"] for f in report["files"]]
    assert sorted(ids) == list(range(1, files + 1))  # every file in exactly one terminal state
    assert report["expected"] == files == sum(report[k] for k in ("success", "failed", "cancelled", "aborted"))


@pytest.mark.timeout(300)
def test_kill_9_chaos_workers_killed_at_random_instants_lose_nothing(server):
    """Seeded and bounded: worker processes of every stage are killed (SIGKILL, by PID) at random
    instants while the run goes on and replaced by fresh ones of a random model; the run completes
    with every file in exactly one terminal state and the in-process run's report (same digest)."""
    rng = random.Random(1313)
    run, models = new_run(), ("threaded", "asyncio", "anyio")
    counts = {"s3": CHAOS["s3_workers"], "api": CHAOS["api_workers"], "verify": 1}
    live = {stage: [popen_worker(server, run, stage, models[i % 2], counts[stage]) for i in range(2)]
            for stage in counts}
    every = [child for children in live.values() for child in children]
    coordinator = dispatch(server, run, *chaos_flags(**CHAOS))
    kills, deadline = 0, time.monotonic() + 60
    try:
        while coordinator.poll() is None and kills < 6 and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.2, 0.6))
            stage = rng.choice(list(live))
            victim = rng.choice(live[stage])
            victim.kill()  # SIGKILL: no leave, no ack; its lease runs out and a sibling takes its file
            victim.wait()
            live[stage].remove(victim)
            live[stage].append(popen_worker(server, run, stage, rng.choice(models), counts[stage]))
            every.append(live[stage][-1])
            kills += 1
        code, report, err = outcome(coordinator)
    finally:
        codes = finished(every)
    assert kills >= 3, "the run ended before the chaos did: slow it down"
    expected = reference(**CHAOS)
    assert code == (1 if expected["failed"] else 0), err
    each_file_once(report, CHAOS["files"])
    report.pop("variant"), report.pop("timing")
    assert report == expected
    assert codes.count(-9) == kills and all(c in (0, -9) for c in codes), codes


@pytest.mark.timeout(180)
def test_a_worker_that_joins_late_and_one_that_dies_early_strand_nothing(server):
    run = new_run()
    # the S3 stage lasts seconds (60 files, 4 workers, 0.1-0.2 s each): early dies holding a file
    flags = dict(files=60, seed=9, details=True, time_scale=1, s3_latency=(0.1, 0.2), api_latency=(0.01, 0.02))
    early = popen_worker(server, run, "s3", "threaded", 2)
    children = [early, popen_worker(server, run, "s3", "asyncio", 2), popen_worker(server, run, "verify", "asyncio")]
    coordinator = dispatch(server, run, *chaos_flags(**flags))
    try:
        until(lambda: registered(server, run, "s3", early) and queued(server, run, "s3") > 0, 60,
              "the early worker at work, S3 files still queued")
        early.kill()  # dies early, holding whatever it held: its sibling suffices
        until(lambda: queued(server, run, "api") > 0, 60, "files waiting for an API worker")  # none yet
        children.append(popen_worker(server, run, "api", "threaded", 3))  # joins late
        code, report, err = outcome(coordinator)
        after = popen_worker(server, run, "api", "asyncio", 2)  # joins after the run: leaves at once
        children.append(after)
    finally:
        codes = finished(children)
    assert code == 0, err
    each_file_once(report, 60)
    report.pop("variant"), report.pop("timing")
    assert report == reference(**flags)
    assert codes == [-9, 0, 0, 0, 0], codes


@pytest.mark.timeout(180)
@pytest.mark.parametrize("queue_size", [0, 2])
def test_a_coordinator_killed_mid_run_never_strands_its_workers(server, queue_size):
    """kill -9 the dispatching process mid-run: its lease runs out (TTL, as a worker's), and every
    worker process - busy or idle, threads or coroutines, a bounded queue or not - leaves: one line
    on stderr, exit 75, within a bounded time; nothing hangs."""
    from pillpipe.common.broker import TTL
    from pillpipe.processes import EXIT_ORPHANED

    run = new_run()
    children = [popen_worker(server, run, "s3", "threaded", 2), popen_worker(server, run, "s3", "asyncio", 2),
                popen_worker(server, run, "api", "asyncio", 2), popen_worker(server, run, "api", "anyio", 2),
                popen_worker(server, run, "verify", "threaded")]
    coordinator = dispatch(server, run, *chaos_flags(files=400, time_scale=0.05, queue_size=queue_size))
    try:
        until(lambda: rows_on(server, run) >= 3 or coordinator.poll() is not None, 60, "three files settled")
        assert coordinator.poll() is None, "the run ended before the kill: slow it down"
        coordinator.kill()  # SIGKILL: no ended flags, no pills; its lease is no longer renewed
        coordinator.wait()
        killed = time.monotonic()
        codes = finished(children, timeout=TTL + 20)
        took = time.monotonic() - killed
    finally:
        finished(children)
    assert codes == [EXIT_ORPHANED] * len(children), codes
    assert took < TTL + 20
    for child in children:
        lines = child.stderr.read().splitlines()
        assert len(lines) == 1 and f"the coordinator of run {run} is gone" in lines[0], lines


@pytest.mark.timeout(180)
def test_a_stage_whose_every_worker_died_is_dead_after_broker_wait_not_a_hang(server):
    run = new_run()
    only = popen_worker(server, run, "api", "asyncio", 1)
    children = [only, popen_worker(server, run, "s3", "threaded", 2), popen_worker(server, run, "verify", "threaded")]
    coordinator = dispatch(server, run, *chaos_flags(files=200, details=True, time_scale=0.02, broker_wait=2))
    try:
        until(lambda: registered(server, run, "api", only), 60, "the only API worker at work")
        only.kill()  # the only API worker: nobody takes the API queue any more
        code, report, err = outcome(coordinator, timeout=90)
    finally:
        codes = finished(children)
    assert code == 70, err  # a stage died
    each_file_once(report, 200)
    assert report["stopped_by"] == "crash" and report["cancelled"] > 0
    assert any("every api worker is gone" in e for e in report["errors"]), report["errors"]
    assert codes[0] == -9 and codes[1:] == [0, 0], codes


@pytest.mark.timeout(180)
@pytest.mark.parametrize("variant", ["threaded", "asyncio", "anyio"])
@pytest.mark.parametrize("restart, why", [(False, "unreachable"), (True, "no longer holds run {run}")],
                         ids=["killed", "restarted-empty"])
def test_a_broker_gone_mid_run_is_exit_69_and_a_report_not_a_hang(variant, restart, why):
    """kill -9 the broker mid-run.  Not back within --broker-wait, it is unreachable.  Started
    again at once with no persistence, every client reconnects to an empty broker: the run's
    workload, queues and outcomes are gone, and the coordinator, which looks for its workload as it
    looks at the stages, stops.  Either way: exit 69, one line why, a report of what the
    coordinator knew - never a hang, never a run that ends reporting every file lost."""
    need_redis()
    run = new_run()
    with RedisServer() as broker:
        argv = [sys.executable, "-m", "pillpipe", "run", variant, "--broker", broker.url, "--processes", "1",
                "--run", run, "--files", "400", "--time-scale", "0.05", "--broker-wait", "20" if restart else "2",
                "--json", "--quiet"]
        child = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            until(lambda: child.poll() is not None or rows_on(broker, run) >= 3, 60, "three files settled")
            assert child.poll() is None, "the run ended before the broker went: slow it down"
            broker.kill()  # SIGKILL, and nothing on disk
            if restart:
                time.sleep(0.5)
                broker.start()
            code, report, err = outcome(child, timeout=120)
        finally:
            finished([child])
    assert code == 69, err
    assert report["stopped_by"] == "broker"
    assert any(why.format(run=run) in e for e in report["errors"]), report["errors"]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("variant, down", [("threaded", 1.0), ("asyncio", 7.0)], ids=["threaded-1s", "asyncio-7s"])
def test_a_broker_restarted_with_persistence_lets_the_run_go_on(variant, down):
    """kill -9 the broker mid-run (append-only file, fsync always) and start it again on its port
    within --broker-wait: every client reconnects and the run ends with the in-process report.
    Down for 7 s, longer than a lease: the leases ran out - files are worked again, first write
    wins - and every worker registers again."""
    need_redis()
    run, flags = new_run(), dict(files=300, seed=3, fail_rate=0.1, retries=1, details=True, time_scale=0.03)
    with RedisServer(persist=True) as broker:
        argv = [sys.executable, "-m", "pillpipe", "run", variant, "--broker", broker.url, "--run", run,
                "--processes", "1", "--broker-wait", "20", *chaos_flags(**flags)]
        child = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            until(lambda: child.poll() is not None or rows_on(broker, run) >= 5, 60, "five files settled")
            assert child.poll() is None, "the run ended before the restart: slow it down"
            broker.kill()  # SIGKILL: what it acknowledged is in its append-only file
            time.sleep(down)
            broker.start()
            code, report, err = outcome(child, timeout=150)
        finally:
            finished([child])
    expected = reference(**flags)
    assert code == (1 if expected["failed"] else 0), err
    each_file_once(report, 300)
    report.pop("variant"), report.pop("timing")
    assert report == expected


def test_an_orphaned_processing_list_is_swept_back_to_its_queue(server):
    """The phase-1 hole: a worker whose lease was reclaimed while it was blocked in BLMOVE gets an
    item into a processing list nobody renews; once it dies, the sweep gives the item back."""
    from pillpipe.common.model import FileRecord, Stage
    from pillpipe.threaded.broker import connect

    broker = connect(server.url, new_run())
    try:
        broker.queue(Stage.S3).put(FileRecord(1, "a"))
        inbox = broker.consumer(Stage.S3, "S3-Worker-1")
        assert inbox.get(timeout=1).id == 1
        broker.client.zrem(broker.keys.workers(Stage.S3), inbox.worker)  # its lease was reclaimed meanwhile
        assert broker.backlog(Stage.S3).files == 0  # an orphan: invisible to the stream's end
        assert broker.sweep(Stage.S3) == 1 and broker.sweep(Stage.S3) == 0
        assert broker.backlog(Stage.S3).queued == 1
    finally:
        broker.clear()
        broker.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("variant", ["threaded", "asyncio"])
def test_a_ctrl_c_drains_a_run_with_worker_processes_and_every_file_ends_once(server, variant):
    """SIGINT reaches the coordinator only (the worker processes have sessions of their own): files
    already started finish, the never-started are cancelled, the children leave on their pills."""
    run = new_run()
    argv = [sys.executable, "-m", "pillpipe", "run", variant, "--broker", server.url, "--processes", "1",
            "--run", run, *chaos_flags(files=300, details=True, time_scale=0.2)]
    child = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    until(lambda: child.poll() is not None or rows_on(server, run) >= 2, 60, "two files settled")
    child.send_signal(signal.SIGINT)
    code, report, err = outcome(child, timeout=120)
    assert code == 130, err
    each_file_once(report, 300)
    assert report["stopped_by"] == "SIGINT" and report["cancelled"] > 0 and report["success"] > 0
    assert report["aborted"] == 0  # a drain, not an abort


def test_file_faults_and_the_errors_they_leave_agree_across_processes(server):
    """A file's fault fires wherever the file is worked: a worker dying on file 5 in a child process
    fails that file and leaves the same error line in the coordinator's report as in one process."""
    faults = ("s3:id=5:die", "api:id=9:raise", "s3:id=12:slow=3")
    argv = [arg for spec in faults for arg in ("--fault", spec)]
    done = cli("pillpipe", "run", "threaded", "--broker", server.url, "--processes", "2", *argv, *FLAGS, timeout=120)
    expected = reference(**WORKLOAD, faults=faults)
    assert report_of(done) == expected and done.returncode == 1, done.stderr
    assert expected["errors"] == ["an s3 worker died (injected) taking file 5"]


@pytest.mark.timeout(180)
def test_a_sigterm_to_one_worker_process_scales_it_down_and_loses_nothing(server):
    """SIGTERM to a worker process: its workers take no more files, finish or give back what they
    hold, and leave (exit 143); its siblings work the rest; the report is the in-process one."""
    run = new_run()
    flags = dict(files=60, seed=4, fail_rate=0.1, details=True, time_scale=0.2, api_latency=(0.1, 0.2))
    leaving = popen_worker(server, run, "s3", "asyncio", 2)
    children = [leaving, popen_worker(server, run, "s3", "threaded", 2), popen_worker(server, run, "api", "asyncio", 4),
                popen_worker(server, run, "verify", "anyio")]
    coordinator = dispatch(server, run, *chaos_flags(**flags))
    try:  # S3 copies of 40-100 ms: the stage has about 1.5 s of work in all; signal it mid-stage
        until(lambda: registered(server, run, "s3", leaving) and queued(server, run, "s3") >= 10, 60,
              "the leaving process's workers at work, 10 files still queued for S3")
        leaving.send_signal(signal.SIGTERM)
        code, report, err = outcome(coordinator)
    finally:
        codes = finished(children)
    expected = reference(**flags)
    assert code == (1 if expected["failed"] else 0), err
    each_file_once(report, 60)
    report.pop("variant"), report.pop("timing")
    assert report == expected
    assert codes == [143, 0, 0, 0], codes


def test_the_report_restores_every_row_and_says_when_a_dispatched_file_has_none(server):
    """The coordinator's report is the broker's rows restored; a file dispatched in a run that did
    not stop early but with no row on the broker is counted (cancelled) and named as lost."""
    from pillpipe.common.ledger import Ledger
    from pillpipe.common.model import FileRecord, Outcome
    from pillpipe.common.remote import Remote
    from pillpipe.common.store import file_row
    from pillpipe.common.timing import Timeline

    remote = Remote(fast(files=5, broker=server.url, run_id=new_run()))
    assert remote.store is not None
    remote.dispatched = 5  # the dispatcher handed on every file
    rows = [file_row(FileRecord(i, f"file_{i + 99}.pdf", dest_key=f"k{i}"), Outcome.SUCCESS, verified=True)
            for i in (1, 2, 4)]
    assert remote.store.commit(rows) == 3 and remote.store.commit(rows[:1]) == 0  # first write wins
    report = remote.report(Ledger(), "asyncio", Timeline(), None, 5, True, None)
    remote.close()
    assert (report.expected, report.success, report.processed, report.cancelled) == (5, 3, 3, 2)
    assert report.errors == ["2 dispatched files have no outcome on the broker (lost): counted cancelled"]
    assert [f["id"] for f in report.files] == [1, 2, 3, 4, 5]


# An abort (A1): what was dispatched and not finished ends as in one process; nothing stays queued --------
def started(row: dict) -> bool:
    """What ``Ledger.settle_remaining`` asks of a file in flight at an abort: aborted if it started."""
    return row["s3_attempts"] > 0 or row["last_stage"] != "dispatch"


def test_the_report_counts_a_gap_the_dispatcher_handed_on_as_lost_even_in_a_stopped_run(server):
    """Gaps at or below the highest id the dispatcher handed on are lost (said, whatever stopped the
    run); above it they were never dispatched: cancelled, with no line."""
    from pillpipe.common.ledger import Ledger
    from pillpipe.common.model import FileRecord, Outcome
    from pillpipe.common.remote import Remote
    from pillpipe.common.store import file_row
    from pillpipe.common.timing import Timeline

    remote = Remote(fast(files=6, broker=server.url, run_id=new_run()))
    assert remote.store is not None
    remote.store.commit([file_row(FileRecord(i, f"file_{i + 99}.pdf"), Outcome.SUCCESS, verified=True)
                         for i in (1, 3)])
    remote.dispatched = 4
    report = remote.report(Ledger(), "threaded", Timeline(), "SIGINT", 6, True, None)
    remote.close()
    assert (report.expected, report.success, report.cancelled) == (6, 2, 4)
    assert report.errors == ["2 dispatched files have no outcome on the broker (lost): counted cancelled"]


def left_on_the_broker(server, run: str) -> tuple[dict[str, list], list[int]]:
    """Every queue and processing list of ``run`` that still holds something (PILLs or records),
    and the ids of the files with a row on the broker."""
    from pillpipe.common.model import Stage
    from pillpipe.threaded.broker import connect

    broker = connect(server.url, run)
    try:
        keys = broker.keys
        lists = [keys.queue(stage) for stage in list(Stage)[1:]]
        for stage in list(Stage)[1:]:
            lists += [k.decode() for k in broker.client.scan_iter(match=keys.processing(stage) + "*")]
        queued = {key: items for key in lists if (items := broker.client.lrange(key, 0, -1))}
        return queued, sorted(row["id"] for row in broker.ledger.rows())
    finally:
        broker.close()


def wait_for_api_work(server, run: str, child: subprocess.Popen, bound: float = 60) -> None:
    """Until some file has been copied and waits for (or is in) the API stage: the abort then finds
    files that started - the broker's state, not a guess at the machine's speed."""
    from pillpipe.common.broker import BrokerError
    from pillpipe.common.model import Stage
    from pillpipe.threaded.broker import connect

    deadline = time.monotonic() + bound  # a hang guard only
    while time.monotonic() < deadline and child.poll() is None:
        try:
            broker = connect(server.url, run)
        except BrokerError:
            continue
        try:
            if broker.backlog(Stage.API).files > 0:
                return
        finally:
            broker.close()
        time.sleep(0.05)
    pytest.fail(f"no file reached the API stage in {bound} s (exit code {child.poll()})")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("variant", ["threaded", "asyncio", "anyio"])
def test_an_aborted_run_on_the_broker_settles_what_it_dispatched_as_one_process_does(server, variant):
    """SIGINT, then the drain's grace runs out: the run aborts.  Exit 130 as in one process; every
    file ends once; a file that had started is aborted, never cancelled (the class and digest term
    of one process's ``settle_remaining``); nothing is lost; no PILL nor record stays on the broker."""
    run, files = new_run(), 200
    argv = [sys.executable, "-m", "pillpipe", "run", variant, "--broker", server.url, "--run", run,
            *chaos_flags(files=files, details=True, s3_latency=(0.3, 0.6), api_latency=(0.5, 1.0),
                         shutdown_grace=0.3)]
    child = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_api_work(server, run, child)
    child.send_signal(signal.SIGINT)
    code, report, err = outcome(child, timeout=120)
    assert code == 130, err
    each_file_once(report, files)
    assert report["stopped_by"] == "SIGINT"
    settled_early = [f for f in report["files"] if f["outcome"] in ("aborted", "cancelled")]
    assert all(f["outcome"] == ("aborted" if started(f) else "cancelled") for f in settled_early), settled_early
    assert report["aborted"] == sum(map(started, settled_early)) > 0
    assert report["cancelled"] == len(settled_early) - report["aborted"] > 0
    assert not [e for e in report["errors"] if "lost" in e], report["errors"]
    queued, rows = left_on_the_broker(server, run)
    assert queued == {}
    assert rows == list(range(1, len(rows) + 1))  # every file handed on has its row; only never-dispatched have none


def test_a_stage_declared_dead_on_the_broker_is_said_once():
    """The coordinator's watch declares a stage dead under the crew's lock, once (C5)."""
    import threading

    from pillpipe.common.crew import Crew
    from pillpipe.common.model import Stage

    crew = Crew({stage: 1 for stage in Stage}, threading.Lock())
    assert crew.declare_dead(Stage.API) and not crew.declare_dead(Stage.API)
    assert crew.dead == {Stage.API} and crew.dead_after(Stage.S3) is Stage.API


# An abort across processes: it reaches the worker processes, which abort as one process does -----------
ABORT = dict(files=200, details=True, s3_latency=(0.3, 0.6), api_latency=(5.0, 6.0), shutdown_grace=0.3)


def aborted_as_one_process(report: dict, files: int) -> None:
    """What an aborted run with worker processes reports: every file once; a file that had started is
    aborted, a never-started one cancelled; nothing lost; an API upload a worker process held at the
    abort (5-6 s each: it still held it when its heartbeat told it) ended aborted there, as it stood -
    its API attempt counted (a copy taken back from a queue has none)."""
    each_file_once(report, files)
    assert report["stopped_by"] == "SIGINT"
    settled_early = [f for f in report["files"] if f["outcome"] in ("aborted", "cancelled")]
    assert all(f["outcome"] == ("aborted" if started(f) else "cancelled") for f in settled_early), settled_early
    assert not [e for e in report["errors"] if "lost" in e], report["errors"]
    assert [f for f in report["files"] if f["outcome"] == "aborted" and f["api_attempts"] > 0], settled_early


@pytest.mark.timeout(180)
@pytest.mark.parametrize("variant", ["threaded", "asyncio", "anyio"])
def test_an_abort_reaches_the_worker_processes_and_what_they_hold_ends_aborted(server, variant):
    """SIGINT, then the drain's grace runs out, every worker in a worker process (--processes 1): the
    abort reaches them through their heartbeats (the run's aborted key) and they abort as one process
    does - a file they hold ends aborted, its row on the broker before the ack - and the coordinator
    waits for them before its report: exit 130, each file once, no line about lost files, nothing
    left on the broker's queues."""
    run = new_run()
    argv = [sys.executable, "-m", "pillpipe", "run", variant, "--broker", server.url, "--run", run,
            "--processes", "1", *chaos_flags(**ABORT)]
    child = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_api_work(server, run, child)
    child.send_signal(signal.SIGINT)
    code, report, err = outcome(child, timeout=120)
    assert code == 130, err
    aborted_as_one_process(report, ABORT["files"])
    assert f"the coordinator of run {run} aborted it" in err  # a worker process said so (stderr is shared)
    queued, rows = left_on_the_broker(server, run)
    assert queued == {}
    assert rows == list(range(1, len(rows) + 1))  # every file handed on has its row; only never-dispatched have none


@pytest.mark.timeout(180)
def test_worker_processes_of_every_model_abort_with_their_coordinator_and_exit_75(server):
    """The same abort, the workers started by hand (``pillpipe worker``, a model per stage): each
    process leaves on its own once its heartbeat read the abort - one line on stderr, exit 75 - and
    the coordinator's report is whole."""
    from pillpipe.processes import EXIT_ORPHANED

    run = new_run()
    children = [popen_worker(server, run, "s3", "threaded", 3), popen_worker(server, run, "api", "asyncio", 2),
                popen_worker(server, run, "verify", "anyio")]
    coordinator = dispatch(server, run, *chaos_flags(**ABORT))
    try:
        wait_for_api_work(server, run, coordinator)
        coordinator.send_signal(signal.SIGINT)
        code, report, err = outcome(coordinator)
    finally:
        codes = finished(children)
    assert code == 130, err
    aborted_as_one_process(report, ABORT["files"])
    said = [child.stderr.read().splitlines() for child in children]
    # the S3 process may have left on its pills, its stage ended during the drain (0.3 s): rare, and fine
    assert codes[1:] == [EXIT_ORPHANED] * 2 and codes[0] in (0, EXIT_ORPHANED), (codes, said)
    for lines, exit_code in zip(said, codes):
        aborted_here = [line for line in lines if f"the coordinator of run {run} aborted it" in line]
        assert len(aborted_here) == (exit_code == EXIT_ORPHANED), lines
    assert left_on_the_broker(server, run)[0] == {}


@pytest.mark.timeout(180)
def test_an_abort_does_not_wait_for_a_worker_process_that_never_answers(server):
    """The API worker process is hung (SIGSTOP: its heartbeat too) holding files when the run aborts:
    the coordinator does not wait for it past ``abort_reach`` - its lease runs out (5 s), what it held
    comes back to its queue, and the coordinator takes it back and settles it - so the report is
    whole all the same: each file once, started ones aborted, nothing lost."""
    from pillpipe.common.model import Stage
    from pillpipe.threaded.broker import connect

    def api_held() -> bool:
        broker = connect(server.url, run)
        try:
            return broker.backlog(Stage.API).held > 0
        finally:
            broker.close()

    run = new_run()
    hung = popen_worker(server, run, "api", "asyncio", 2)
    children = [popen_worker(server, run, "s3", "threaded", 3), hung, popen_worker(server, run, "verify", "threaded")]
    coordinator = dispatch(server, run, *chaos_flags(**ABORT))
    try:
        wait_for_api_work(server, run, coordinator)
        until(api_held, 60, "the API worker process holding a file")
        hung.send_signal(signal.SIGSTOP)
        coordinator.send_signal(signal.SIGINT)
        code, report, err = outcome(coordinator)
    finally:
        hung.kill()  # SIGKILL ends a stopped process too
        codes = finished(children)
    assert code == 130, err
    each_file_once(report, ABORT["files"])
    settled_early = [f for f in report["files"] if f["outcome"] in ("aborted", "cancelled")]
    assert all(f["outcome"] == ("aborted" if started(f) else "cancelled") for f in settled_early), settled_early
    assert report["aborted"] > 0 and not [e for e in report["errors"] if "lost" in e], report["errors"]
    assert left_on_the_broker(server, run)[0] == {}
    assert codes[1] == -9 and codes[0] in (0, 75) and codes[2] == 75, codes
