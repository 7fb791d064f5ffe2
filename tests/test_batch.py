"""``--batch N``: hand-offs in batches change when records move, never what happens to them.

The rules (``common/handoff.py``), the threaded queue's batch operations, the same report as one
at a time in every model and strategy, the pill rule, a dying worker's leftovers, an abort, and the
flag's validation.  Counts, states and order only: what batching saves is measured by the
benchmarks (``docs/performance.md``).
"""
from __future__ import annotations

import signal
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pillpipe.threaded.pipeline as tpipe
from pillpipe.common.config import UsageError
from pillpipe.common.context import WorkerCrashes
from pillpipe.common.handoff import MAX_BATCH, Hands, hands_for, share
from pillpipe.common.model import PILL
from pillpipe.common.shutdown import STRATEGIES, unsupported

from .conftest import RUNS, cli, fast, in_flight_bound, run_sequential
from .test_signals import ABORTING, check, child_of

pytestmark = pytest.mark.timeout(120)


# The rules -----------------------------------------------------------------------------------
def test_a_consumer_takes_its_fair_share_within_the_batch():
    assert share(16, 12, 3) == 4  # siblings asking next still find work
    assert share(16, 100, 3) == 16  # never more than the batch
    assert share(16, 1, 3) == 1 and share(16, 0, 3) == 1  # at least one
    assert share(4, 7, 2) == 4 and share(16, 7, 0) == 7  # no consumers counted: all there is, up to the batch


def test_the_outbox_is_full_at_n_and_hands_on_in_order():
    hands = Hands(3)
    assert [hands.hold("q", m) for m in ("a", "b", "c")] == [False, False, True]
    assert hands.target == "q" and hands.handed() == ["a", "b", "c"] and hands.outbox == []


def test_a_batch_is_read_first_first_and_a_dead_workers_pill_is_dropped():
    hands = Hands(4)
    assert hands.took("in", ["a", "b", "c", PILL]) == "a"
    assert hands.inbox.pop() == "b"
    hands.hold("out", "done")
    assert hands.leftovers() == (["c"], ["done"])  # its pill was its own: the dead need none
    assert hands.inbox == [] and hands.outbox == []


def test_one_at_a_time_has_no_buffers():
    assert hands_for(1) is None and isinstance(hands_for(2), Hands)


# The threaded queue's batch operations -------------------------------------------------------
def test_get_many_stops_after_a_pill_so_no_worker_takes_a_siblings_pill():
    q = tpipe.Queue()
    q.put_many(["r1", "r2", PILL, PILL, PILL])
    assert q.get_many(16, 1) == ["r1", "r2", PILL]
    assert q.get_many(16, 1) == [PILL] and q.get_many(16, 1) == [PILL]
    assert q.get_many(16, 1, block=False) == []


def test_get_many_takes_a_fair_share_and_unget_puts_first_in_line():
    q = tpipe.Queue()
    q.put_many(list(range(12)))
    assert q.get_many(16, 3) == [0, 1, 2, 3]
    q.unget([2, 3])
    assert q.get_many(2, 1) == [2, 3] and q.qsize() == 8


def test_put_many_never_exceeds_the_capacity_and_keeps_the_order():
    q, got, sizes = tpipe.Queue(3), [], []

    def consume() -> None:
        while len(got) < 50:
            sizes.append(q.qsize())
            got.extend(q.get_many(2, 1))

    consumer = threading.Thread(target=consume)
    consumer.start()
    q.put_many(list(range(50)))
    consumer.join(timeout=30)
    assert got == list(range(50)) and max(sizes) <= 3
    assert q.unfinished_tasks == 50  # every put counted, as Queue.put counts


# The same work in every model, strategy and batch size ---------------------------------------
def _strategies(variant: str) -> list[str]:
    return [s for s in STRATEGIES if unsupported(s, variant) is None]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.integers(0, 150), s3=st.integers(1, 8), api=st.integers(1, 8), queue_size=st.sampled_from([0, 1, 3, 50]),
       batch=st.sampled_from([2, 3, 16]), seed=st.integers(0, 10**6), fail_rate=st.sampled_from([0.0, 0.3]),
       retries=st.integers(0, 2))
def test_every_batch_size_gives_the_sequential_report(files, s3, api, queue_size, batch, seed, fail_rate, retries):
    base = dict(files=files, s3_workers=s3, api_workers=api, queue_size=queue_size, seed=seed, fail_rate=fail_rate,
                retries=retries, details=True)
    reference = run_sequential(fast(**base))
    for variant, run in RUNS.items():
        for strategy in _strategies(variant):
            report = run(fast(batch=batch, shutdown=strategy, **base))
            assert report == reference, (variant, strategy, batch)


@pytest.mark.parametrize("queue_size", [0, 2])
def test_real_waits_in_batches_give_the_same_report(run, queue_size):
    config = dict(files=40, time_scale=0.002, queue_size=queue_size, fail_rate=0.2, retries=1, seed=3, details=True)
    assert run(fast(batch=8, **config)) == run_sequential(fast(**config))


def test_every_worker_still_gets_exactly_one_pill(run):
    report = run(fast(files=200, s3_workers=4, api_workers=3, queue_size=5, batch=16))
    workers = report.timing["workers"]
    assert len(report.timing["stages"]["s3"]["pills_s"]) == 4 and len(report.timing["stages"]["api"]["pills_s"]) == 3
    assert all(w["pill_s"] is not None and w["exited_s"] >= w["pill_s"] for n, w in workers.items() if n != "Dispatcher")
    assert sum(w["files"] for n, w in workers.items() if n.startswith("S3")) == 200
    assert sum(w["files"] for n, w in workers.items() if n.startswith("API")) == 200


def test_memory_stays_flat_in_batches(run, in_flight_peak):
    """Bounded queues still bound what is in flight: each worker holds at most two batches more."""
    report = run(fast(files=20_000, queue_size=10, batch=16))
    assert report.success == 20_000
    assert in_flight_peak[0] <= in_flight_bound(10) + 2 * 16 * (1 + 3 + 2 + 1)


# Deaths and aborts -----------------------------------------------------------------------------
DEATHS = ["s3:worker=*:after=2:die", "api:worker=1:after=3:die", "api:worker=*:after=4:die", "verifier:after=5:crash"]


@pytest.mark.parametrize("fault", DEATHS)
def test_a_dying_worker_gives_back_what_it_holds(run, fault):
    """The unread part of its batch goes back to its siblings, what it finished goes on: the
    report is the one-at-a-time report, whatever the batch held."""
    config = dict(files=60, queue_size=4, time_scale=0.001, faults=(fault,), details=True)
    with pytest.raises(WorkerCrashes) as one:
        run(fast(**config))
    with pytest.raises(WorkerCrashes) as batched:
        run(fast(batch=8, **config))
    expected, got = one.value.report, batched.value.report
    assert got.expected == got.terminal_total == 60
    assert (got.success, got.failed, got.cancelled, got.aborted) == \
           (expected.success, expected.failed, expected.cancelled, expected.aborted)


@pytest.mark.parametrize("variant", list(RUNS))
def test_a_second_sigint_aborts_in_batches(variant):
    child = child_of(variant, "--files", "30", "--queue-size", "3", "--time-scale", "0.5", "--batch", "8")
    child.wait_for("💾 Uploader")
    child.send(signal.SIGINT)
    child.wait_for("draining")
    child.send(signal.SIGINT)
    code, report, err, _ = child.finish()
    assert code == 130 and report["stopped_by"] == "SIGINT" and err.count(ABORTING) == 1
    groups = check(report, 30)
    assert all(f["s3_attempts"] == 0 for f in groups.get("cancelled", []))


@pytest.mark.parametrize("variant", ["asyncio", "anyio"])
def test_hand_offs_without_checkpoints_still_abort_at_zero_latency(variant, monkeypatch):
    """A hand-off that need not wait is no checkpoint (asyncio.Queue's, and now anyio's fast path):
    with bounded queues the workers still wait often enough for a drain and then an abort to end
    every one of them, at zero latency.  (Unbounded, a worker can run the whole input without a
    wait: the signal is handled when one first waits - docs/performance.md.)"""
    from pillpipe.common.ledger import Ledger

    verified, original = [0], Ledger.verify

    def verify(self, record):
        original(self, record)
        verified[0] += 1
        if verified[0] in (10, 20):  # the first signal drains, the second aborts
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(Ledger, "verify", verify)
    report = RUNS[variant](fast(files=3000, queue_size=5, details=True))
    assert report.stopped_by == "SIGINT" and report.expected == report.terminal_total == 3000
    assert report.success < 3000 and report.cancelled > 0
    assert all(w["exited_s"] is not None for w in report.timing["workers"].values())


# The flag ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0", "-1", str(MAX_BATCH + 1)])
def test_a_bad_batch_is_one_line_and_exit_2(value):
    done = cli("pillpipe", "run", "threaded", "--batch", value, "--files", "1", "--time-scale", "0")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"pillpipe run threaded: error: --batch must be a whole number from 1 to "
                                        f"{MAX_BATCH:_} (got {value}) (see --help)"]


def test_batch_is_the_same_flag_in_every_model_and_one_at_a_time_by_default():
    from pillpipe.common.config import Config, applicable

    assert Config().batch == 1
    for variant in (*RUNS, "sequential", "anyio-trio"):
        assert applicable(Config(batch=16), variant) is None
    with pytest.raises(UsageError):
        Config(batch=0)
