"""Both variants give the same report as each other and as the plain sequential run."""
from __future__ import annotations

import threading

import pytest
from hypothesis import HealthCheck, given, settings

from pillpipe.common.config import Config

from .conftest import RUNS, configs, fast, in_flight_bound, run_sequential

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs())
def test_variants_equal_each_other_and_the_sequential_reference(config: Config):
    reference = run_sequential(config)
    for name, run in RUNS.items():
        report = run(config)
        assert report.variant == name
        assert report.comparable() == reference.comparable(), name
        assert report == reference
    assert reference.expected == config.files == reference.terminal_total
    assert reference.processed == config.files
    assert reference.success + reference.failed == config.files
    if config.details:
        assert sorted(f["id"] for f in reference.files) == list(range(1, config.files + 1))
        assert all(f["outcome"] in ("success", "failed") for f in reference.files)


@pytest.mark.parametrize("queue_size", [0, 2])
def test_real_waits_give_the_same_report(run, queue_size):
    """Small but real latencies, so workers really interleave."""
    config = fast(files=30, time_scale=0.002, queue_size=queue_size, fail_rate=0.2, retries=1, seed=11, details=True)
    report = run(config)
    assert report == run_sequential(config)
    assert 0 < report.failed < 30 and report.success + report.failed == 30


def test_each_file_ends_in_exactly_one_terminal_state(run):
    report = run(fast(files=120, fail_rate=0.3, retries=1, details=True, seed=5))
    ids = [f["id"] for f in report.files]
    assert sorted(ids) == list(range(1, 121))  # each file exactly once
    outcomes = [f["outcome"] for f in report.files]
    assert outcomes.count("success") == report.success and outcomes.count("failed") == report.failed
    assert report.expected == report.terminal_total == 120
    for f in report.files:
        if f["outcome"] == "failed":
            assert f["failed_stage"] in ("s3", "api") and f["error"]
        else:
            assert f["dest_key"] and f["error"] is None


def test_memory_is_flat_the_ledger_only_holds_files_in_flight(run, in_flight_peak):
    """With a bounded queue the ledger never holds more than the queues and workers can."""
    report = run(fast(files=20_000, queue_size=10))
    assert report.success == 20_000 and report.files is None
    assert in_flight_peak[0] <= in_flight_bound(10)


def test_no_thread_is_left_behind():
    before = set(threading.enumerate())
    for run in RUNS.values():
        run(fast(files=50, s3_workers=7, api_workers=5, queue_size=3))
    assert set(threading.enumerate()) <= before


@pytest.mark.parametrize("fault, processed", [("api:worker=*:after=2:die", 2), ("s3:worker=*:after=3:die", 3),
                                              ("verifier:after=4:crash", 4)])
def test_sequential_reference_with_one_worker_per_stage_dies_once_and_cancels_the_rest(fault, processed):
    from pillpipe.common.context import WorkerCrashes

    with pytest.raises(WorkerCrashes) as caught:
        run_sequential(fast(files=10, s3_workers=1, api_workers=1, faults=(fault,)))
    report = caught.value.report
    assert (report.processed, report.success, report.failed, report.cancelled) == (processed, processed, 1, 9 - processed)
    assert report.stopped_by == "crash" and len(report.errors) == 1


def test_sequential_reference_hands_a_dead_workers_stage_to_the_next_worker():
    """As a sibling takes over in the concurrent variants, the reference's next API worker takes
    over when one dies: with 5 API workers dying after 2 files each, 10 files see three deaths
    (files 3, 6, 9) and the stage lives on."""
    from pillpipe.common.context import WorkerCrashes

    with pytest.raises(WorkerCrashes) as caught:
        run_sequential(fast(files=10, api_workers=5, faults=("api:worker=*:after=2:die",), details=True))
    report = caught.value.report
    assert (report.processed, report.success, report.failed, report.cancelled) == (7, 7, 3, 0)
    assert [f["id"] for f in report.files if f["outcome"] == "failed"] == [3, 6, 9]
    assert report.stopped_by is None and len(report.errors) == 3
