"""Every termination strategy ends every stream, loses nothing, and gives the same report."""
from __future__ import annotations

import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pillpipe.common.config import UsageError
from pillpipe.common.shutdown import STRATEGIES, Shutdown, unsupported
from pillpipe.common.model import Stage

from .conftest import MODULES, RUNS, cli, fast, run_sequential

HAS_SHUTDOWN = sys.version_info >= (3, 13)


def supported(variant: str) -> list[str]:
    return [s for s in STRATEGIES if unsupported(s, variant) is None]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.integers(0, 120), s3=st.integers(1, 12), api=st.integers(1, 12), queue_size=st.sampled_from([0, 1, 3]),
       seed=st.integers(0, 10**6), fail_rate=st.sampled_from([0.0, 0.3]), retries=st.integers(0, 2))
def test_every_strategy_gives_the_sequential_report(files, s3, api, queue_size, seed, fail_rate, retries):
    base = dict(files=files, s3_workers=s3, api_workers=api, queue_size=queue_size, seed=seed,
                fail_rate=fail_rate, retries=retries)
    reference = run_sequential(fast(**base))
    for variant, run in RUNS.items():
        for strategy in supported(variant):
            report = run(fast(shutdown=strategy, **base))
            assert report == reference, (variant, strategy)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_worker_ends_exactly_once(run, variant, strategy):
    if unsupported(strategy, variant):
        pytest.skip(unsupported(strategy, variant))
    report = run(fast(files=40, s3_workers=4, api_workers=3, queue_size=2, time_scale=0.001, shutdown=strategy))
    assert report.success == 40
    workers = report.timing["workers"]
    assert len(workers) == 1 + 4 + 3 + 1
    assert all(w["exited_s"] is not None for w in workers.values())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_dying_worker_never_hangs_any_strategy(run, variant, strategy):
    """One API worker and one S3 worker die mid-run: their siblings take over under every strategy.
    A death tied to a count fires only if its worker gets that many files, which scheduling decides
    (a loaded CI run once gave S3-Worker-2 fewer than 4 of 50): each death that fired fails the one
    file its worker held, and the rest succeed."""
    if unsupported(strategy, variant):
        pytest.skip(unsupported(strategy, variant))
    config = fast(files=50, time_scale=0.001, shutdown=strategy, details=True,
                  faults=("api:worker=1:after=2:die", "s3:worker=2:after=3:die"))
    with pytest.raises(ExceptionGroup) as caught:
        run(config)
    report, deaths = caught.value.report, len(caught.value.exceptions)
    assert report.expected == report.terminal_total == 50
    assert 1 <= deaths <= 2 and report.failed == deaths and report.success == 50 - deaths
    assert all("worker crashed" in f["error"] for f in report.files if f["outcome"] == "failed")


def test_last_out_needs_no_coordinator_pills():
    """Under last-out the producers end every stream; the coordinator only joins."""
    shutdown = Shutdown("last-out", {Stage.DISPATCH: 1, Stage.S3: 2, Stage.API: 1, Stage.VERIFY: 1}, None)
    assert shutdown.check_out(Stage.DISPATCH) is Stage.S3
    assert shutdown.check_out(Stage.S3) is None and shutdown.check_out(Stage.S3) is Stage.API
    assert not shutdown.coordinator_ends(Stage.S3) and not shutdown.coordinator_ends(Stage.API)
    assert shutdown.coordinator_ends(Stage.VERIFY)  # its producer never checked out (say it died)


def test_relay_puts_one_pill_and_pills_one_per_consumer():
    assert Shutdown("relay", {}, None).pills_for(5) == 1
    assert Shutdown("pills", {}, None).pills_for(5) == 5
    assert Shutdown("pills", {}, None).pills_for(0) == 0
    assert Shutdown("queue-shutdown", {}, None).pills_for(5) == 0


def test_cancel_is_asyncio_only(variant):
    done = cli(MODULES[variant], "--time-scale", "0", "--shutdown", "cancel", "--quiet")
    if variant == "asyncio":
        assert done.returncode == 0 and "Success: 8" in done.stdout
    else:
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
        assert ("asyncio only" if variant == "threaded" else "anyio ends a stream") in done.stderr


def test_queue_shutdown_needs_python_3_13(variant):
    done = cli(MODULES[variant], "--time-scale", "0", "--shutdown", "queue-shutdown", "--quiet")
    if HAS_SHUTDOWN and variant != "anyio":
        assert done.returncode == 0 and "Success: 8" in done.stdout
    else:
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert ("3.13" if variant != "anyio" else "anyio ends a stream") in done.stderr


def test_unsupported_strategy_is_a_usage_error_from_run():
    with pytest.raises(UsageError):
        RUNS["threaded"](fast(shutdown="cancel"))


def test_uvloop_gives_the_same_report():
    pytest.importorskip("uvloop")
    config = dict(files=80, s3_workers=4, api_workers=3, queue_size=2, fail_rate=0.2, retries=1, seed=3)
    reference = run_sequential(fast(**config))
    assert RUNS["asyncio"](fast(loop="uvloop", **config)) == reference
    assert RUNS["asyncio"](fast(loop="uvloop", time_scale=0.001, **config)) == reference


def test_loop_applies_to_asyncio_only():
    done = cli(MODULES["threaded"], "--loop", "uvloop", "--quiet")
    assert done.returncode == 2 and "asyncio variant only" in done.stderr


@pytest.mark.parametrize("fault", ["s3:worker=*:after=3:die", "api:worker=*:after=3:die", "verifier:after=3:crash"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_whole_stage_dying_ends_with_a_report_under_every_strategy(run, variant, strategy, fault):
    """A dead stage's queue is drained by the coordinator - even once it is shut down (3.13)."""
    if unsupported(strategy, variant):
        pytest.skip(unsupported(strategy, variant))
    with pytest.raises(ExceptionGroup) as caught:
        run(fast(files=30, time_scale=0.001, queue_size=2, shutdown=strategy, faults=(fault,)))
    report = caught.value.report
    assert report.stopped_by == "crash" and report.cancelled > 0
    assert report.expected == report.terminal_total == 30
