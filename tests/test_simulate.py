"""The ideal-run simulator, on cases small enough to compute by hand."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pillpipe.common.config import Config
from pillpipe.common.model import FileRecord, Stage, Status
from pillpipe.common.simulate import TimerModel, run_pipeline, simulate, stage_waits
from pillpipe.common.workload import file_name


def fixed(waits: dict[int, tuple[float, float]]):
    """Items whose S3 and API waits are given per file id."""
    for fid, (s3, api) in waits.items():
        yield FileRecord(fid, file_name(fid)), (lambda stage, s3=s3, api=api: s3 if stage is Stage.S3 else api)


def test_constant_latencies_three_s3_two_api_workers():
    # S3 (1 s): files 1-3 at 0->1, file 4 at 1->2.  API (2 s): files 1,2 at 1->3, files 3,4 at 3->5.
    sim = simulate(Config(files=4, s3_latency=(1, 1), api_latency=(2, 2), quiet=True))
    assert sim.makespan == pytest.approx(5)
    assert sim.completed == pytest.approx({1: 3, 2: 3, 3: 5, 4: 5})
    assert sim.s3[4] == pytest.approx((1, 2))
    assert sim.api[3] == pytest.approx((3, 5))
    assert sorted(sim.latencies()) == pytest.approx([3, 3, 4, 5])  # S3 start -> verified


def test_unbounded_queue_lets_the_s3_worker_run_ahead():
    sim = run_pipeline(fixed({i: (1, 3) for i in range(1, 5)}), (1, 1), capacity=0)
    assert sim.s3 == {1: (0, 1), 2: (1, 2), 3: (2, 3), 4: (3, 4)}  # whole numbers: exact
    assert sim.completed == pytest.approx({1: 4, 2: 7, 3: 10, 4: 13})


def test_bounded_queue_blocks_the_producer_until_there_is_room():
    # capacity 1: at t=3 file 3 is copied but the API queue still holds file 2, so the S3 worker
    # blocks until the API worker takes file 2 at t=4; only then does it start file 4.
    sim = run_pipeline(fixed({i: (1, 3) for i in range(1, 5)}), (1, 1), capacity=1)
    assert sim.s3 == {1: (0, 1), 2: (1, 2), 3: (2, 3), 4: (4, 5)}
    assert sim.completed == pytest.approx({1: 4, 2: 7, 3: 10, 4: 13})
    assert sim.makespan == pytest.approx(13)


def test_bounded_queue_can_cost_makespan():
    # One slow API file holds the only API worker; with capacity 1 the S3 worker stalls behind it
    # and the fast tail cannot be copied ahead of time.
    waits = {1: (1, 10), 2: (1, 0), 3: (1, 0), 4: (5, 0)}
    assert run_pipeline(fixed(waits), (1, 1), capacity=0).makespan == pytest.approx(11)
    # bounded: file 3 is copied at 3 but q1 holds 2 -> S3 blocked until 11; file 4 copies 11->16
    assert run_pipeline(fixed(waits), (1, 1), capacity=1).makespan == pytest.approx(16)


def test_fifo_among_workers_and_zero_waits():
    sim = simulate(Config(files=3, time_scale=0, quiet=True))
    assert sim.makespan == 0 and set(sim.completed) == {1, 2, 3}
    assert simulate(Config(files=0, quiet=True)).makespan == 0


def test_retries_and_backoff_come_from_the_shared_stage_logic():
    # every attempt fails: S3 waits 1 + backoff 0.5 + 1 = 2.5, then the file is failed and the
    # API stage passes it through without waiting.
    config = Config(files=1, s3_latency=(1, 1), api_latency=(2, 2), fail_rate=1, retries=1, retry_backoff=0.5,
                    quiet=True)
    record = FileRecord(1, file_name(1))
    assert stage_waits(Stage.S3, record, config.stage_plan()) == pytest.approx(2.5)
    assert record.status is Status.FAILED
    assert stage_waits(Stage.API, record, config.stage_plan()) == 0
    assert simulate(config).makespan == pytest.approx(2.5)


def test_stage_timeout_caps_a_slow_fault():
    config = Config(files=1, s3_latency=(1, 1), api_latency=(2, 2), stage_timeout=1.5, faults=("api:id=1:slow=10",),
                    quiet=True)
    assert simulate(config).makespan == pytest.approx(1 + 1.5)


def test_timer_model_rounds_up_each_wait():
    rounding = TimerModel(quantum=0.001, offset=0.0001)
    assert rounding.actual(0.0013) == pytest.approx(0.0021)
    assert rounding.actual(0.002) == pytest.approx(0.0021)  # already whole: not rounded further
    assert rounding.actual(0) == 0
    assert TimerModel(0, 0.0001).actual(0.0013) == pytest.approx(0.0014)
    # applied per wait: 4 files of 1.3 ms S3 and 2.2 ms API, 1 worker each
    config = Config(files=4, s3_workers=1, api_workers=1, s3_latency=(1.3, 1.3), api_latency=(2.2, 2.2),
                    time_scale=0.001, quiet=True)
    assert simulate(config).makespan == pytest.approx(0.0013 + 4 * 0.0022)
    assert simulate(config, timer=TimerModel(0.001, 0)).makespan == pytest.approx(0.002 + 4 * 0.003)


def test_timer_model_fit_recovers_rounding_or_plain_overshoot():
    delays = [0.0001 * k + 0.00003 for k in range(1, 60)]
    asyncio_like = [(d, TimerModel(0.001, 0.00008).actual(d)) for d in delays]
    fitted = TimerModel.fit(asyncio_like)
    assert fitted.quantum == 0.001 and fitted.offset == pytest.approx(0.00008)
    thread_like = [(d, d + 0.0001) for d in delays]
    fitted = TimerModel.fit(thread_like)
    assert fitted.quantum == 0 and fitted.offset == pytest.approx(0.0001)
    assert TimerModel.fit([]) == TimerModel()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=30),
       st.integers(1, 4), st.integers(1, 4), st.integers(0, 3))
def test_makespan_bounds(waits, s3_workers, api_workers, capacity):
    items = {i + 1: (float(a), float(b)) for i, (a, b) in enumerate(waits)}
    sim = run_pipeline(fixed(items), (s3_workers, api_workers), capacity)
    assert set(sim.completed) == set(items)
    total_s3, total_api = sum(a for a, _ in items.values()), sum(b for _, b in items.values())
    assert sim.makespan >= max(total_api / api_workers, max(a + b for a, b in items.values())) - 1e-9
    assert sim.makespan <= total_s3 + total_api + 1e-9  # never worse than sequential
    for fid, done in sim.completed.items():
        assert sim.api[fid][1] == done and sim.s3[fid][1] <= sim.api[fid][0]


def test_the_simulator_stays_out_of_threading_and_asyncio():
    tree = ast.parse((Path(__file__).parent.parent / "common" / "simulate.py").read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
             for a in getattr(n, "names", [])} | {(n.module or "").split(".")[0] for n in ast.walk(tree)
                                                   if isinstance(n, ast.ImportFrom)}
    assert not names & {"threading", "asyncio", "queue"}
