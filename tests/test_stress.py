"""Randomized stress (hypothesis): worker counts, queue sizes, fault plans.  Both variants must give
identical per-file terminal states, and the ledger's invariants must hold in every run."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pillpipe import asyncio_version
from pillpipe import threaded
from pillpipe.common.context import WorkerCrashes

from .conftest import fast

pytestmark = pytest.mark.timeout(120)

FILES = 16

# Faults whose effect on each file depends only on the file (never on which worker ran it).
file_fault = st.one_of(
    st.builds(lambda s, i, t: f"{s}:id={i}:raise" + (f":times={t}" if t else ""),
              st.sampled_from(["s3", "api"]), st.integers(1, FILES), st.integers(0, 2)),
    st.builds(lambda s, i, t: f"{s}:id={i}:hang" + (f":times={t}" if t else ""),
              st.sampled_from(["s3", "api"]), st.integers(1, FILES), st.integers(0, 1)),
    st.builds(lambda s, i, f: f"{s}:id={i}:slow={f}", st.sampled_from(["s3", "api"]), st.integers(1, FILES),
              st.sampled_from([0, 3, 20])),
)
# Faults that kill worker loops: which file a dying worker holds may depend on scheduling,
# except when every S3 worker dies on its first take (it holds the first files, in order).
worker_fault = st.sampled_from(["s3:worker=*:after=0:die", "s3:worker=1:after=2:die", "api:worker=1:after=1:die",
                                "api:worker=*:after=3:die", "verifier:after=4:crash"])
DETERMINISTIC = {"s3:worker=*:after=0:die"}


def stage_dies(config) -> bool | None:
    """Whether a whole stage must die (exit 70), when the fault plan decides it alone."""
    deaths = [s for s in config.faults if s.endswith(("die", "crash"))]
    if not deaths:
        return False
    death = deaths[0]
    if death in DETERMINISTIC or death.startswith("verifier"):
        return True  # every S3 worker dies on its first file; the verifier sees all 16 files
    if death.startswith("s3:worker=1") and config.s3_workers == 1:
        return True
    if death.startswith("api:worker=1") and config.api_workers == 1:
        return True
    if death.startswith("s3:worker=1") or death.startswith("api:worker=1"):
        return False  # worker 1 may die, its siblings carry on
    return None


def run_both(config):
    results = []
    for run in (threaded.run, asyncio_version.run):
        try:
            results.append((run(config), None))
        except WorkerCrashes as crashes:
            results.append((crashes.report, crashes))
    return results


def check(report, crashes, config) -> dict[int, str]:
    outcomes = {f["id"]: f["outcome"] for f in report.files}
    assert len(report.files) == len(outcomes) == FILES == report.expected == report.terminal_total
    assert sorted(outcomes) == list(range(1, FILES + 1))
    assert report.processed == sum(1 for f in report.files if f["outcome"] == "success") + sum(
        1 for f in report.files if f["outcome"] == "failed" and not (f["error"] or "").startswith("worker crashed"))
    assert report.aborted == 0 and report.stopped_by in (None, "crash")
    if crashes is None:
        assert report.stopped_by is None and report.errors == []
    else:
        assert len(report.errors) == len(crashes.exceptions) >= 1
    expected = stage_dies(config)
    if expected is not None:
        assert (report.stopped_by == "crash") == expected
    for f in report.files:
        if f["outcome"] == "success":
            assert f["last_stage"] == "api" and f["dest_key"] and f["error"] is None
        if f["outcome"] == "cancelled":
            assert f["s3_attempts"] == 0 or (f["error"] or "").endswith("stage dead")
    return outcomes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(s3_workers=st.integers(1, 4), api_workers=st.integers(1, 3), queue_size=st.integers(0, 3),
       retries=st.integers(0, 2), fail_rate=st.sampled_from([0, 0.2, 0.5]), seed=st.integers(0, 1000),
       faults=st.lists(file_fault, max_size=4, unique_by=lambda s: tuple(s.split(":")[:2])),
       death=st.one_of(st.none(), worker_fault))
def test_both_variants_agree_file_by_file(s3_workers, api_workers, queue_size, retries, fail_rate, seed, faults,
                                          death):
    all_faults = tuple(faults) + ((death,) if death else ())
    config = fast(files=FILES, s3_workers=s3_workers, api_workers=api_workers, queue_size=queue_size,
                  retries=retries, fail_rate=fail_rate, seed=seed, faults=all_faults, stage_timeout=0.02,
                  time_scale=0.0005, details=True)
    (t_report, t_crash), (a_report, a_crash) = run_both(config)
    t_outcomes, a_outcomes = check(t_report, t_crash, config), check(a_report, a_crash, config)
    if death is None:
        assert t_report == a_report  # every per-file detail, via the digest and the details
    elif death in DETERMINISTIC:
        assert t_outcomes == a_outcomes
        assert t_report.stopped_by == a_report.stopped_by == "crash"
    else:
        assert (t_report.stopped_by is None) == (a_report.stopped_by is None)
