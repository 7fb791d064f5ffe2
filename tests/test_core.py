"""The shared core on its own: determinism, the pill, the ledger, the report, the config."""
from __future__ import annotations

import io
import pickle
import uuid

import pytest

from pillpipe.common.config import Config, UsageError
from pillpipe.common.faults import FaultPlan, FaultSpecError
from pillpipe.common.ledger import Ledger
from pillpipe.common.model import PILL, FileRecord, Outcome, Stage, Status, _Pill
from pillpipe.common.report import Report
from pillpipe.common.stages import HANG, StagePlan, api_upload, s3_copy
from pillpipe.common.events import Events
from pillpipe.common.timing import Timeline
from pillpipe.common.workload import KEY_NAMESPACE, RUN_DATE_PREFIX, Workload, dest_key, draw, generate_files

QUIET = Events(None)


def test_files_are_the_tutorials_and_streamed():
    files = generate_files(3)
    assert not isinstance(files, list)
    assert [(f.id, f.name, f.status) for f in files] == [
        (1, "file_100.pdf", Status.READY), (2, "file_101.pdf", Status.READY), (3, "file_102.pdf", Status.READY)]


def test_draws_depend_only_on_their_arguments():
    forward = [draw(7, i, Stage.S3, 1, 0) for i in range(100)]
    backward = [draw(7, i, Stage.S3, 1, 0) for i in reversed(range(100))][::-1]
    assert forward == backward
    assert all(0 <= u < 1 for u in forward)
    assert len(set(forward)) == 100
    assert draw(7, 1, Stage.S3, 1, 0) != draw(8, 1, Stage.S3, 1, 0) != draw(7, 1, Stage.API, 1, 0)
    assert draw(7, 1, Stage.S3, 1, 0) != draw(7, 1, Stage.S3, 2, 0)


def test_latencies_stay_in_range_and_scale():
    w = Workload(seed=3, s3_latency=(0.2, 0.5), api_latency=(1.0, 2.0), time_scale=0.5)
    s3 = [w.latency(Stage.S3, i, 1) for i in range(1, 500)]
    api = [w.latency(Stage.API, i, 1) for i in range(1, 500)]
    assert 0.1 <= min(s3) and max(s3) <= 0.25
    assert 0.5 <= min(api) and max(api) <= 1.0
    assert Workload(time_scale=0).latency(Stage.S3, 1, 1) == 0


def test_fail_rate_is_roughly_honoured():
    w = Workload(seed=1, fail_rate=0.25)
    rate = sum(w.fails(Stage.API, i, 1) for i in range(4000)) / 4000
    assert 0.2 < rate < 0.3
    assert not any(Workload(fail_rate=0).fails(Stage.S3, i, 1) for i in range(100))
    assert all(Workload(fail_rate=1).fails(Stage.S3, i, 1) for i in range(100))


def test_dest_key_is_date_prefix_plus_name_based_uuid():
    key = dest_key(5, "file_100.pdf")
    prefix, _, tail = key.rpartition("/")
    assert prefix == RUN_DATE_PREFIX
    assert uuid.UUID(tail) == uuid.uuid5(KEY_NAMESPACE, "5/file_100.pdf")
    assert dest_key(5, "file_100.pdf") == key != dest_key(6, "file_100.pdf")


def test_pill_is_a_private_typed_singleton_never_none():
    assert PILL is _Pill("PILL") and PILL is not None
    assert pickle.loads(pickle.dumps(PILL)) is PILL
    assert repr(PILL) == "PILL"


def _drive(steps):
    waits = list(steps)
    return waits


def test_stage_logic_copies_then_uploads():
    plan = StagePlan(Workload(seed=1, time_scale=1))
    record = FileRecord(1, "file_100.pdf")
    waits = _drive(s3_copy(record, plan, "S3-Worker-1"))
    assert len(waits) == 1 and 0.2 <= waits[0] <= 0.5
    assert record.status is Status.S3_COPIED and record.dest_key == dest_key(1, "file_100.pdf")
    waits = _drive(api_upload(record, plan, "API-Worker-1"))
    assert len(waits) == 1 and 1 <= waits[0] <= 2
    assert record.status is Status.API_UPLOADED and record.last_stage is Stage.API


@pytest.mark.parametrize("name", ["file_100.pdf", "caf\u00e9 \u540d.pdf", "\ud800"])  # the last: no key can be made
def test_the_fast_path_does_what_the_general_path_does(name):
    """Nothing can wait or fail (``StagePlan.instant``): the stages work the file at once and return no
    step; the record and the event lines are the general path's, a failed key included."""
    records, lines = [], []
    for instant in (True, False):
        out = io.StringIO()
        plan = StagePlan(Workload(seed=3, time_scale=0), retries=2, events=Events(out))
        assert plan.instant
        object.__setattr__(plan, "instant", instant)
        record = FileRecord(7, name)
        assert _drive(s3_copy(record, plan, "S3-Worker-1")) == []
        assert _drive(api_upload(record, plan, "API-Worker-1")) == []
        records.append(repr(record))
        lines.append(out.getvalue())
    assert records[0] == records[1] and lines[0] == lines[1] and lines[0].count("\n") >= 2
    assert ("FAILED" in records[0]) == (name == "\ud800")


def test_the_fast_path_only_when_nothing_can_wait_or_fail():
    assert StagePlan(Workload(time_scale=0)).instant
    assert StagePlan(Workload(time_scale=1, s3_latency=(0, 0), api_latency=(0, 0))).instant
    assert not StagePlan(Workload(time_scale=1)).instant
    assert not StagePlan(Workload(time_scale=0, fail_rate=0.1)).instant
    assert not StagePlan(Workload(time_scale=0), FaultPlan.parse(["s3:id=1:slow=2"])).instant
    assert StagePlan(Workload(time_scale=0), FaultPlan.parse(["s3:worker=1:after=1:die"])).instant  # a loop's fault


def test_failures_are_data_with_bounded_retries_and_backoff():
    plan = StagePlan(Workload(time_scale=1, s3_latency=(0.1, 0.1)), FaultPlan.parse(["s3:id=1:raise"]),
                     retries=2, retry_backoff=0.5)
    record = FileRecord(1, "file_100.pdf")
    waits = _drive(s3_copy(record, plan, "S3-Worker-1"))
    assert waits == [0.1, 0.5, 0.1, 1.0, 0.1]  # attempt, backoff, attempt, backoff, attempt
    assert record.status is Status.FAILED and record.failed_stage is Stage.S3
    assert record.s3_attempts == 3 and "injected" in record.error
    assert _drive(api_upload(record, plan, "API-Worker-1")) == []  # failed upstream: passes through
    assert record.api_attempts == 0


def test_transient_fault_succeeds_within_retries_with_one_stable_key():
    plan = StagePlan(Workload(time_scale=0), FaultPlan.parse(["s3:id=1:raise:times=2"]), retries=2)
    record = FileRecord(1, "file_100.pdf")
    _drive(s3_copy(record, plan, "S3-Worker-1"))
    assert record.status is Status.S3_COPIED and record.s3_attempts == 3 and record.error is None
    assert record.dest_key == dest_key(0, "file_100.pdf")


def test_hang_is_bounded_by_the_stage_timeout():
    record = FileRecord(4, "file_103.pdf")
    unbounded = StagePlan(Workload(time_scale=0), FaultPlan.parse(["api:id=4:hang"]))
    assert next(api_upload(record, unbounded, "API-Worker-1")) == HANG
    bounded = StagePlan(Workload(time_scale=0), FaultPlan.parse(["api:id=4:hang"]), stage_timeout=0.25)
    record = FileRecord(4, "file_103.pdf", status=Status.S3_COPIED)
    assert _drive(api_upload(record, bounded, "API-Worker-1")) == [0.25]
    assert record.status is Status.FAILED and record.error == "timeout after 0.25s"


@pytest.mark.parametrize("spec", ["disk:id=1:raise", "s3:id=x:raise", "s3:raise", "s3:id=1", "s3:id=1:raise:hang",
                                  "s3:id=1:slow=x", "s3:worker=0:after=1:die", "verifier:crash", "s3:id=1:raise:bogus=1"])
def test_bad_fault_specs_are_rejected(spec):
    with pytest.raises(FaultSpecError):
        FaultPlan.parse([spec])


def test_fault_plan_selectors():
    plan = FaultPlan.parse(["api:id=7:raise:times=2", "s3:worker=*:after=3:die", "api:worker=1:after=2:die",
                            "verifier:after=5:crash", "s3:id=12:slow=50"])
    assert plan.for_attempt(Stage.API, 7, 2).kind == "raise" and plan.for_attempt(Stage.API, 7, 3) is None
    assert plan.for_attempt(Stage.S3, 12, 9).factor == 50
    assert plan.worker_dies(Stage.S3, 2, 3) and not plan.worker_dies(Stage.S3, 2, 2)
    assert plan.worker_dies(Stage.API, 1, 2) and not plan.worker_dies(Stage.API, 2, 5)
    assert plan.verifier_crashes(5) and not plan.verifier_crashes(4)


def test_ledger_first_terminal_state_wins_and_digest_ignores_order():
    def finish(order):
        ledger = Ledger(details=True)
        records = [FileRecord(i, f"f{i}", status=Status.API_UPLOADED) for i in range(1, 6)]
        for r in records:
            ledger.admit(r)
        for i in order:
            ledger.verify(records[i])
        assert not ledger.settle(records[0], Outcome.ABORTED)  # already terminal
        return ledger.report("x", Timeline())

    a, b = finish([0, 1, 2, 3, 4]), finish([4, 2, 0, 3, 1])
    assert a == b and a.digest == b.digest and a.success == 5 and a.aborted == 0
    assert [f["id"] for f in a.files] == [1, 2, 3, 4, 5]


def test_ledger_classifies_what_is_left_in_flight():
    ledger = Ledger()
    queued, started = FileRecord(1, "a"), FileRecord(2, "b", s3_attempts=1)
    ledger.admit(queued)
    ledger.admit(started)
    ledger.settle_remaining()
    report = ledger.report("x", Timeline())
    assert (report.cancelled, report.aborted, report.expected) == (1, 1, 2)


@pytest.mark.parametrize("files", [0, 5])
def test_timing_says_when_the_last_file_was_verified(files):
    from pillpipe.common import sequential
    timing = sequential.run(Config(files=files, time_scale=0, quiet=True)).timing
    verifier = timing["workers"]["Verifier"]
    if files == 0:
        assert timing["last_verified_s"] is None and timing["shutdown_tail_s"] is None
        return
    assert verifier["started_s"] < timing["last_verified_s"] <= verifier["pill_s"] <= timing["wall_s"]
    assert timing["shutdown_tail_s"] == pytest.approx(verifier["exited_s"] - timing["last_verified_s"])
    assert timing["stages"]["verify"]["files"] == files and timing["stages"]["s3"]["busy_s"] > 0


def test_report_equality_ignores_only_variant_and_timing():
    a = Report("threaded", expected=1, success=1, digest="ab", timing={"wall_s": 1})
    b = Report("asyncio", expected=1, success=1, digest="ab", timing={"wall_s": 2})
    assert a == b
    assert a != Report("asyncio", expected=1, failed=1, digest="ab")
    assert "timing" not in a.comparable() and "variant" not in a.comparable()


def test_report_block_is_the_tutorials():
    text = Report("threaded", expected=8, processed=8, success=8).format()
    assert text.splitlines() == ["", "=== VERIFICATION REPORT ===", "Expected: 8", "Processed: 8", "Success: 8",
                                 "Failed: 0", "", "=== Pipeline complete ==="]
    timed = Report("threaded", expected=8, processed=8, success=8, timing={"wall_s": 7.0234}).format()
    assert timed.splitlines()[6:8] == ["Wall time: 7.02 s", ""]  # the text report's one addition
    extra = Report("threaded", expected=3, processed=1, success=1, cancelled=1, aborted=1).format()
    assert "Cancelled: 1" in extra and "Aborted: 1" in extra and "Invalid" not in extra


@pytest.mark.parametrize("kwargs", [dict(files=-1), dict(s3_workers=0), dict(api_workers=-2), dict(fail_rate=1.5),
                                    dict(s3_latency=(0.5, 0.2)), dict(queue_size=-1), dict(retries=-1),
                                    dict(time_scale=-1), dict(stage_timeout=0), dict(faults=("nope",))])
def test_config_validation(kwargs):
    with pytest.raises(UsageError):
        Config(**kwargs)


def test_a_stage_s_last_exit_is_known_only_once_every_worker_exited():
    """anyio notes a stream's end at its last producer's exit; while one has not exited (given up
    after an abort) there is no such instant yet, and none for a stage that never ran."""
    timeline = Timeline()
    first, second = timeline.worker("S3-Worker-1", Stage.S3, 1), timeline.worker("S3-Worker-2", Stage.S3, 2)
    assert timeline.last_exit(Stage.S3) is None and timeline.last_exit(Stage.API) is None
    first.exited()
    assert timeline.last_exit(Stage.S3) is None
    second.exited()
    assert timeline.last_exit(Stage.S3) == second.exited_at >= first.exited_at
