"""The durable store on its own: rows, the resume rule, batching, identity, the SQLite file, status.

These tests build rows from a real run's ledger (captured from its sink, where ``--state``
takes them), commit them, and prove that a ledger restored from the file gives the same report;
tests/test_durable.py and tests/test_crash.py run the whole thing.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pillpipe import threaded
from pillpipe.common.config import Config, UsageError
from pillpipe.common.ledger import Ledger, outcome_line, rejected_line
from pillpipe.common.model import FileRecord, Outcome, Rejected, Stage, Status
from pillpipe.common.source import records
from pillpipe.common.sqlite_store import APPLICATION_ID, SqliteStore
from pillpipe.common.store import (SCHEMA, Batcher, FileRow, RejectedRow, Settled, StateError, StateWriteError,
                                   file_row, identity, kept, kept_outcomes, rejected_row, restore, restore_all)
from pillpipe.common.timing import Timeline

from .conftest import ROOT, fast

IDENT = identity(Config(files=10))
STATUS = [sys.executable, "-m", "pillpipe", "status"]


def ok(file_id: int, name: str | None = None) -> FileRow:
    record = FileRecord(file_id, name or f"file_{file_id}.pdf", status=Status.API_UPLOADED, dest_key=f"k/{file_id}",
                        s3_attempts=1, api_attempts=1, last_stage=Stage.API)
    return file_row(record, Outcome.SUCCESS, verified=True)


def settled_as(file_id: int, outcome: Outcome) -> FileRow:
    return file_row(FileRecord(file_id, f"file_{file_id}.pdf", error="why"), outcome)


def one_row_per_outcome() -> list[FileRow | RejectedRow]:
    failed = FileRecord(2, "b", status=Status.FAILED, s3_attempts=2, failed_stage=Stage.S3, error="transient s3 error")
    return [ok(1), file_row(failed, Outcome.FAILED, verified=True), settled_as(3, Outcome.CANCELLED),
            settled_as(4, Outcome.ABORTED), rejected_row(Rejected(5, Outcome.INVALID, "line 5: bad JSON")),
            rejected_row(Rejected(6, Outcome.DUPLICATE, "id 1 seen before", 1, "a"))]


# Rows: everything the ledger counted, and nothing else ----------------------------------
ids = st.integers(min_value=-(1 << 70), max_value=1 << 70)
texts = st.text(max_size=20)
optional = st.none() | texts


@st.composite
def settled_records(draw: st.DrawFn) -> tuple[FileRecord, Outcome, bool]:
    verified = draw(st.booleans())
    outcome = draw(st.sampled_from([Outcome.SUCCESS, Outcome.FAILED] if verified else
                                   [Outcome.SUCCESS, Outcome.FAILED, Outcome.CANCELLED, Outcome.ABORTED]))
    record = FileRecord(draw(ids), draw(texts), dest_key=draw(optional), s3_attempts=draw(st.integers(0, 9)),
                        api_attempts=draw(st.integers(0, 9)), failed_stage=draw(st.none() | st.sampled_from(Stage)),
                        error=draw(optional), last_stage=draw(st.sampled_from(Stage)))
    if verified and outcome is Outcome.FAILED and record.failed_stage is None:
        record.failed_stage = Stage.S3  # what reaches the verifier unsuccessful has failed at a stage
    record.status = Status.API_UPLOADED if outcome is Outcome.SUCCESS else Status.FAILED
    return record, outcome, verified


rejections = st.builds(Rejected, st.integers(1, 1 << 40), st.sampled_from([Outcome.INVALID, Outcome.DUPLICATE]),
                       texts, st.none() | ids, optional)


@given(settled_records())
def test_a_file_row_rebuilds_the_outcome_line_and_the_details(settled):
    record, outcome, verified = settled
    row = file_row(record, outcome, verified)
    assert outcome_line(row.record(), outcome) == outcome_line(record, outcome)
    assert details_of(row.record(), outcome) == details_of(record, outcome)
    assert row.verified == int(verified)


@given(rejections)
def test_a_rejected_row_rebuilds_the_rejected_line(rejected):
    assert rejected_row(rejected).rejected() == rejected
    assert rejected_line(rejected_row(rejected).rejected()) == rejected_line(rejected)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(settled_records(), max_size=30, unique_by=lambda s: s[0].id),
       st.lists(rejections, max_size=5, unique_by=lambda r: r.line))
def test_rows_through_sqlite_count_as_the_originals_did(settled, rejected):
    """Counts, digest, processed and the details list: a ledger restored from the file equals
    the ledger that counted the outcomes themselves (ids beyond 64 bits included)."""
    original = Ledger(details=True)
    for record, outcome, verified in settled:
        original.admit(record)
        if verified:
            original.verify(record)
        else:
            original.settle(record, outcome)
    for item in rejected:
        original.reject(item)
    rows = [file_row(*s) for s in settled] + [rejected_row(r) for r in rejected]
    with scratch() as path:
        with SqliteStore.open(path, IDENT) as store:
            assert store.commit(rows) == len(rows)
        restored = Ledger(details=True)
        with SqliteStore.read(path) as store:
            settled_now = restore_all(store, restored)
    assert report(restored) == report(original)
    assert report(restored).digest == report(original).digest and report(restored).files == report(original).files
    assert len(settled_now) == len(rows)


def test_rows_of_a_real_run_restore_its_report(tmp_path, monkeypatch):
    """A run with failures, retries, a timeout, invalid and duplicate input lines and a 70-digit
    id: the rows its ledger settles (captured where the wiring will write them) restore a
    report equal to the run's own."""
    rows = capture_rows(monkeypatch)
    source = write_input(tmp_path)
    config = fast(input=str(source), details=True, fail_rate=0.3, retries=1, stage_timeout=0.05,
                  faults=("api:id=4:hang",))
    original = threaded.run(config)
    monkeypatch.undo()
    assert original.failed and original.invalid and original.duplicate and original.success
    with SqliteStore.open(str(tmp_path / "run.db"), identity(config)) as store:
        for start in range(0, len(rows), 3):
            store.commit(rows[start:start + 3])
    restored = Ledger(details=True)
    with SqliteStore.open(str(tmp_path / "run.db"), identity(config), resume=True) as store:
        restore_all(store, restored)
    assert report(restored) == original and report(restored).processed == original.processed


def test_a_resume_keeps_what_settled_and_works_the_rest_again(tmp_path, monkeypatch):
    """Kill-and-resume in miniature: half the rows were committed before the kill, a few
    files were cancelled by a drain; the resume forgets those, skips exactly the kept ones,
    and once the rest is counted again the report equals the uninterrupted run's."""
    rows = capture_rows(monkeypatch)
    source = write_input(tmp_path)
    config = fast(input=str(source), details=True, fail_rate=0.3, retries=1)
    original = threaded.run(config)
    monkeypatch.undo()
    path = str(tmp_path / "run.db")
    cut = len(rows) // 2
    committed, rest = rows[:cut], rows[cut:]
    drained = [settled_as(row.id, Outcome.CANCELLED) for row in rest if isinstance(row, FileRow)][:3]
    with SqliteStore.open(path, identity(config)) as store:
        store.commit(committed)
        store.commit(drained)
    resumed = Ledger(details=True)
    with SqliteStore.open(path, identity(config), resume=True) as store:
        settled = restore_all(store, resumed)
    with open(source, encoding="utf-8", newline="") as stream:
        todo = list(settled.unsettled(records(0, stream, "jsonl")))
    assert sorted(map(key, todo)) == sorted(map(key, rest))  # the cancelled ones are worked again
    for row in rest:  # what the resumed run works: the same workload, so the same outcomes
        restore(resumed, row)
    assert report(resumed) == original


# The resume rule -----------------------------------------------------------------------
@pytest.mark.parametrize("outcome, kept_plain, kept_retrying", [
    (Outcome.SUCCESS, True, True), (Outcome.FAILED, True, False), (Outcome.INVALID, True, False),
    (Outcome.DUPLICATE, True, False), (Outcome.CANCELLED, False, False), (Outcome.ABORTED, False, False)])
def test_which_outcomes_a_resume_keeps(outcome, kept_plain, kept_retrying):
    assert kept(outcome) is kept_plain and kept(outcome.value, retry_failed=True) is kept_retrying
    assert (outcome in kept_outcomes()) is kept_plain


@pytest.mark.parametrize("retry_failed", [False, True])
def test_a_resume_forgets_the_rows_it_works_again(tmp_path, retry_failed):
    path = str(tmp_path / "run.db")
    with SqliteStore.open(path, IDENT) as store:
        store.commit(one_row_per_outcome())
    with SqliteStore.open(path, IDENT, resume=True, retry_failed=retry_failed) as store:
        left = {row.outcome for row in store.rows()}
        assert left == {o.value for o in kept_outcomes(retry_failed)}
        assert store.summary()["runs"] == 2
        assert store.commit([settled_as(3, Outcome.SUCCESS)]) == 1  # the cancelled file settles anew


def test_settled_skips_ids_and_lines_in_any_order():
    rows = [ok(9), ok(-4), ok(1 << 80), ok(3), rejected_row(Rejected(12, Outcome.INVALID, "x")),
            rejected_row(Rejected(2, Outcome.DUPLICATE, "y", 3, "c"))]
    settled = Settled(rows)
    assert len(settled) == 6
    items = [FileRecord(i, "f") for i in (1, 3, -4, 9, 10, 1 << 80, 1 << 81)] + \
            [Rejected(line, Outcome.INVALID, "") for line in (2, 5, 12)]
    assert [key(item) for item in settled.unsettled(items)] == \
           [("id", 1), ("id", 10), ("id", 1 << 81), ("line", 5)]
    assert not Settled().skips(FileRecord(1, "a"))


# Batching ------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_gaps_are_the_id_ranges_no_kept_row_covers():
    """A drain cancels a resumed run's never-dispatched generated files as ranges: without the
    files an earlier run kept, which are counted already."""
    settled = Settled([ok(10), ok(3), ok(7), ok(4)])
    assert list(settled.gaps(1, 12)) == [(1, 2), (5, 6), (8, 9), (11, 12)]
    assert list(settled.gaps(3, 4)) == [] and list(settled.gaps(5, 5)) == [(5, 5)]
    assert list(settled.gaps(8, 7)) == [] and list(Settled().gaps(1, 3)) == [(1, 3)]


def test_a_batch_is_due_at_size_rows():
    batcher = Batcher(size=3, interval=10, clock=Clock())
    assert batcher.wait() is None and not batcher.due()
    assert [batcher.add(ok(i)) for i in (1, 2, 3)] == [False, False, True]
    assert batcher.due() and batcher.wait() == 0
    assert batcher.take() == [ok(1), ok(2), ok(3)]
    assert len(batcher) == 0 and batcher.wait() is None and batcher.take() == []


def test_a_batch_is_due_interval_seconds_after_its_oldest_row():
    clock = Clock()
    batcher = Batcher(size=1000, interval=0.5, clock=clock)
    batcher.add(ok(1))
    clock.now += 0.3
    batcher.add(ok(2))  # a newer row does not postpone the batch
    assert batcher.wait() == pytest.approx(0.2) and not batcher.due()
    clock.now += 0.2
    assert batcher.due()
    assert len(batcher.take()) == 2
    clock.now += 5
    batcher.add(ok(3))  # a new batch starts its own interval
    assert batcher.wait() == pytest.approx(0.5)


def test_a_late_writer_takes_every_pending_row_at_once():
    batcher = Batcher(size=2, interval=1, clock=Clock())
    assert [batcher.add(ok(i)) for i in range(5)] == [False, True, False, False, False]  # one wake a batch
    assert batcher.due() and len(batcher.take()) == 5


@pytest.mark.parametrize("size, interval", [(0, 1), (1, -1), (1, float("nan"))])
def test_batch_limits_must_make_sense(size, interval):
    with pytest.raises(ValueError):
        Batcher(size, interval)


# Identity ------------------------------------------------------------------------------
WORKLOAD = {"files": 9, "seed": 1, "s3_latency": (0.1, 0.2), "api_latency": (0.5, 0.6), "fail_rate": 0.5,
            "retries": 2, "stage_timeout": 3.0, "faults": ("s3:id=1:raise",), "io": "real"}
NOT_WORKLOAD = {"time_scale": 0.0, "retry_backoff": 1.0, "s3_workers": 7, "api_workers": 5, "queue_size": 10,
                "shutdown": "relay", "shutdown_grace": 2.0, "json": True, "details": True, "quiet": True}


@pytest.mark.parametrize("flag", sorted(WORKLOAD))
def test_a_workload_flag_changes_the_identity(flag):
    assert identity(Config(**{flag: WORKLOAD[flag]})) != identity(Config())


def test_a_simulated_run_is_not_resumed_for_real(tmp_path):
    """Files a simulated run settled were never copied: --io real must not skip them."""
    path = str(tmp_path / "run.db")
    SqliteStore.open(path, identity(Config(files=3))).close()
    with pytest.raises(StateError, match="--io was sim, now real"):
        SqliteStore.open(path, identity(Config(files=3, io="real")), resume=True)


@pytest.mark.parametrize("flag", sorted(NOT_WORKLOAD))
def test_pace_shape_and_output_flags_do_not(flag):
    assert identity(Config(**{flag: NOT_WORKLOAD[flag]})) == identity(Config())


def test_time_scale_counts_only_with_a_stage_timeout():
    """The timeout compares scaled latencies with real seconds: the scale then decides outcomes."""
    assert identity(Config(stage_timeout=1, time_scale=0)) != identity(Config(stage_timeout=1))


def test_fault_order_counts():  # two specs for one file and stage are a usage error (common/faults.py)
    a, b = "s3:id=1:raise", "s3:id=2:slow=2"
    assert identity(Config(faults=(a, b))) != identity(Config(faults=(b, a)))


def test_an_input_is_known_by_its_bytes_not_its_path(tmp_path):
    first = write_input(tmp_path)
    copy = tmp_path / "elsewhere.jsonl"
    shutil.copy(first, copy)
    assert identity(Config(input=str(first))) == identity(Config(input=str(copy)))
    assert identity(Config(input=str(first))) != identity(Config(input=str(first), input_format="csv"))
    copy.write_bytes(first.read_bytes().replace(b"file_a", b"file_b"))
    assert identity(Config(input=str(first))) != identity(Config(input=str(copy)))
    assert identity(Config(input="-"))["input"] == {"stdin": True}
    with pytest.raises(UsageError, match="missing.jsonl"):
        identity(Config(input=str(tmp_path / "missing.jsonl")))


def test_another_workload_is_one_line_naming_the_flag_and_deletes_nothing(tmp_path):
    path = str(tmp_path / "run.db")
    with SqliteStore.open(path, IDENT) as store:
        store.commit([settled_as(1, Outcome.CANCELLED)])
    with pytest.raises(StateError) as caught:
        SqliteStore.open(path, identity(Config(files=10, seed=7)), resume=True)
    assert str(caught.value).count("\n") == 0 and "--seed was 0, now 7" in str(caught.value)
    with pytest.raises(StateError, match="--s3-latency was 0.2 0.5, now 0.1 0.2"):
        SqliteStore.open(path, identity(Config(files=10, s3_latency=(0.1, 0.2))), resume=True)
    with SqliteStore.read(path) as store:
        assert store.summary()["cancelled"] == 1  # a refused resume forgets nothing


def test_a_run_that_read_stdin_cannot_be_resumed(tmp_path):
    path = str(tmp_path / "run.db")
    SqliteStore.open(path, identity(Config(input="-"))).close()
    with pytest.raises(StateError, match="standard input"):
        SqliteStore.open(path, identity(Config(input="-")), resume=True)


# The SQLite file -----------------------------------------------------------------------
def test_a_new_run_refuses_a_state_that_holds_one(tmp_path):
    path = str(tmp_path / "run.db")
    SqliteStore.open(path, IDENT).close()
    with pytest.raises(StateError, match="already holds a run: add --resume"):
        SqliteStore.open(path, IDENT)


def test_resuming_a_missing_or_empty_state_starts_a_new_run(tmp_path):
    for path in (tmp_path / "missing.db", tmp_path / "empty.db"):
        if path.name == "empty.db":
            path.write_bytes(b"")
        with SqliteStore.open(str(path), IDENT, resume=True) as store:
            assert store.summary()["runs"] == 1 and store.identity() == IDENT


def test_the_first_write_per_file_wins(tmp_path):
    with SqliteStore.open(str(tmp_path / "run.db"), IDENT) as store:
        assert store.commit([settled_as(1, Outcome.ABORTED)]) == 1
        assert store.commit([ok(1), ok(2), settled_as(2, Outcome.FAILED), ok(3)]) == 2  # within a batch too
        assert [(row.id, row.outcome) for row in store.rows()] == [(1, "aborted"), (2, "success"), (3, "success")]
        with pytest.raises(TypeError):
            store.commit([(4, "file_4.pdf")])


def test_the_writer_may_be_another_thread_than_the_opener(tmp_path):
    """How the variants will wait on a commit: a writer thread, or a hand-off from the event loop."""
    import asyncio
    import threading

    with SqliteStore.open(str(tmp_path / "run.db"), IDENT) as store:
        writer = threading.Thread(target=store.commit, args=([ok(1)],))
        writer.start()
        writer.join(timeout=60)
        assert asyncio.run(asyncio.to_thread(store.commit, [ok(2)])) == 1
        assert [row.id for row in store.rows()] == [1, 2]


def test_one_run_at_a_time_per_state(tmp_path):
    path = str(tmp_path / "run.db")
    with SqliteStore.open(path, IDENT):
        with pytest.raises(StateError, match="in use by another run"):
            SqliteStore.open(path, IDENT, resume=True)
        with SqliteStore.read(path) as reader:  # readers are welcome
            assert reader.summary()["recorded"] == 0
    SqliteStore.open(path, IDENT, resume=True).close()


def test_the_file_is_wal_and_marked_as_pillpipes(tmp_path):
    path = str(tmp_path / "run.db")
    SqliteStore.open(path, IDENT).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA
    conn.close()


def test_the_schema_refuses_a_verdict_that_is_not_the_verifiers(tmp_path):
    with SqliteStore.open(str(tmp_path / "run.db"), IDENT) as store:
        with pytest.raises(StateWriteError, match="this batch was not committed"):
            store.commit([ok(1), settled_as(2, Outcome.CANCELLED)._replace(verified=1)])
        assert list(store.rows()) == []  # all or nothing


@pytest.mark.parametrize("damage, message", [
    ("text", "not a SQLite database"),
    ("foreign", "a SQLite database, but not a pillpipe state"),
    ("newer", "written by a newer pillpipe (state schema 2; this one reads 1)"),
    ("older", "state schema 0 is not supported"),
    ("row", "is damaged"),
    ("pages", "is damaged"),
])
def test_a_foreign_or_damaged_state_is_one_line_never_a_traceback(tmp_path, damage, message):
    path = tmp_path / "run.db"
    damaged(path, damage)
    with pytest.raises(StateError) as caught:
        with SqliteStore.open(str(path), IDENT, resume=True) as store:
            restore_all(store, Ledger())
    assert message in str(caught.value) and "\n" not in str(caught.value)
    result = subprocess.run([*STATUS, str(path)], capture_output=True, text=True, timeout=60)
    if damage in ("row",):  # status counts rows without parsing them
        assert result.returncode == 0
    else:
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr.startswith("pillpipe status: error: state ") and result.stderr.count("\n") == 1


def test_bad_paths_are_one_line(tmp_path):
    for path, message in ((tmp_path, "(?i)is a directory"), (tmp_path / "no" / "run.db", "No such file")):
        with pytest.raises(StateError, match=message):
            SqliteStore.open(str(path), IDENT)


# Read-only and full: the run stops clearly, what was committed stands --------------------
def test_a_read_only_state_is_refused_before_any_work_and_still_readable(tmp_path):
    folder = tmp_path / "state"
    folder.mkdir()
    path = folder / "run.db"
    with SqliteStore.open(str(path), IDENT) as store:
        store.commit([ok(1), settled_as(2, Outcome.CANCELLED)])
    with read_only(folder) as view:
        with pytest.raises(StateError, match="cannot be written: its (file|directory) is read-only"):
            SqliteStore.open(str(view / "run.db"), IDENT, resume=True)
        with SqliteStore.read(str(view / "run.db")) as store:
            assert store.summary()["success"] == 1
        result = subprocess.run([*STATUS, str(view / "run.db"), "--json"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and json.loads(result.stdout)["cancelled"] == 1
    with SqliteStore.open(str(path), IDENT, resume=True) as store:  # writable again: nothing was lost
        assert [row.id for row in store.rows()] == [1]


FILL = textwrap.dedent("""
    import json, resource, signal, sys
    from pillpipe.common.config import Config
    from pillpipe.common.sqlite_store import SqliteStore
    from pillpipe.common.model import FileRecord, Outcome
    from pillpipe.common.store import StateWriteError, file_row, identity
    store = SqliteStore.open(sys.argv[1], identity(Config(files=10)))
    if len(sys.argv) > 2:  # the file-size limit stands for the disk: writes past it fail (EFBIG)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
    committed = 0
    try:
        while True:
            store.commit([file_row(FileRecord(i, f"file_{i}.pdf", dest_key="k" * 56), Outcome.SUCCESS)
                          for i in range(committed, committed + 100)])
            committed += 100
    except StateWriteError as exc:
        print(json.dumps({"committed": committed, "error": str(exc)}))
""")


@pytest.mark.parametrize("disk", ["rlimit-fsize", "tmpfs"])
def test_a_full_disk_fails_the_batch_and_keeps_every_batch_before_it(tmp_path, disk):
    """Two ways to fill the disk for real: ``RLIMIT_FSIZE`` (any user, any OS: the kernel fails
    the write with EFBIG, which SQLite reports as an I/O error) and a 256 KiB tmpfs (ENOSPC, which
    SQLite reports as SQLITE_FULL; needs the right to mount, skipped without it)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    with (tmpfs(folder) if disk == "tmpfs" else _nothing()):
        path = folder / "run.db"
        limit = [] if disk == "tmpfs" else [str(256 * 1024)]
        result = subprocess.run([sys.executable, "-c", FILL, str(path), *limit], capture_output=True, text=True,
                                timeout=120, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        outcome = json.loads(result.stdout)
        assert outcome["committed"] >= 100
        assert "cannot be written" in outcome["error"] and "everything committed before it stands" in outcome["error"]
        if disk == "tmpfs":
            assert "the disk is full" in outcome["error"]
        shutil.copytree(folder, tmp_path / "copy")  # read it where there is room again
    with SqliteStore.open(str(tmp_path / "copy" / "run.db"), identity(Config(files=10)), resume=True) as store:
        assert [row.id for row in store.rows()] == list(range(outcome["committed"]))


# What a commit must carry whole --------------------------------------------------------------
@pytest.mark.parametrize("one_step", [True, False], ids=["json-statement", "row-by-row"])
@pytest.mark.parametrize("name", ["nul\x00inside.pdf", "lone\ud800surrogate.pdf", "\udfff", "tab\tand\u2028line", "é😀"])
def test_any_text_a_record_may_carry_is_committed_whole(tmp_path, monkeypatch, name, one_step):
    """A batch travels as one JSON statement (SQLite 3.38+; row by row before); a NUL (where
    SQLite's JSON text would end) and a lone surrogate (not UTF-8: kept as its bytes) take the
    row-by-row way, and every text reads back the same."""
    monkeypatch.setattr("pillpipe.common.sqlite_store._ONE_STEP", one_step and sqlite3.sqlite_version_info >= (3, 38))
    rows = [file_row(FileRecord(1, name, error=name, dest_key=name), Outcome.FAILED),
            file_row(FileRecord(2, "plain.pdf"), Outcome.CANCELLED),
            rejected_row(Rejected(3, Outcome.DUPLICATE, f"id 1 seen before: {name}", 1, name))]
    with SqliteStore.open(str(tmp_path / "run.db"), IDENT) as store:
        assert store.commit(rows) == 3
        assert list(store.rows()) == rows


@pytest.mark.parametrize("count", [1, 99, 1000, 5000])
def test_a_batch_of_any_size_commits_whole_and_a_repeated_row_once(tmp_path, count):
    """One statement per batch whatever its size; a row repeated within a batch is still counted
    once (the first wins)."""
    rows = [ok(i) for i in range(count)] + [settled_as(0, Outcome.CANCELLED)]
    rejected = [rejected_row(Rejected(line, Outcome.INVALID, "bad")) for line in range(1, count + 1)]
    with SqliteStore.open(str(tmp_path / "run.db"), IDENT) as store:
        assert store.commit(rows + rejected) == 2 * count
        assert list(store.rows()) == rows[:-1] + rejected


# pillpipe status ---------------------------------------------------------------------
def test_status_counts_per_state_as_text_and_json(tmp_path):
    path = str(tmp_path / "run.db")
    with SqliteStore.open(path, IDENT) as store:
        store.commit(one_row_per_outcome())
    text = subprocess.run([*STATUS, path], capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and text.stderr == ""
    assert "Recorded: 6 of 10\nProcessed: 2\nSuccess: 1\nFailed: 1\nCancelled: 1\nAborted: 1\nInvalid: 1\n" \
           "Duplicate: 1" in text.stdout
    assert "--files 10 --seed 0" in text.stdout
    data = json.loads(subprocess.run([*STATUS, path, "--json"], capture_output=True, text=True, timeout=60).stdout)
    assert {k: data[k] for k in ("recorded", "processed", "expected", "runs", "schema")} == \
           {"recorded": 6, "processed": 2, "expected": 10, "runs": 1, "schema": SCHEMA}
    assert {o.value: data[o.value] for o in Outcome} == dict.fromkeys((o.value for o in Outcome), 1)
    assert data["workload"] == IDENT


def test_status_reads_while_a_run_writes(tmp_path):
    """Another process reads the committed rows while a write transaction is open (WAL)."""
    path = str(tmp_path / "run.db")
    with SqliteStore.open(path, IDENT) as store:
        store.commit([ok(1), ok(2)])
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")
        writer.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [ok(3), ok(4), ok(5)])
        during = subprocess.run([*STATUS, path, "--json"], capture_output=True, text=True, timeout=60)
        writer.execute("COMMIT")
        writer.close()
        after = subprocess.run([*STATUS, path, "--json"], capture_output=True, text=True, timeout=60)
        store.commit([ok(6)])
    assert during.returncode == 0 and json.loads(during.stdout)["success"] == 2
    assert json.loads(after.stdout)["success"] == 5


def test_status_usage_errors_are_one_line(tmp_path):
    for args in ([], [str(tmp_path / "missing.db")], [str(tmp_path)], ["--nope", "x"]):
        result = subprocess.run([*STATUS, *args], capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stdout) == (2, ""), args
        assert result.stderr.startswith("pillpipe status: error: ") and result.stderr.count("\n") == 1, args


# Helpers -------------------------------------------------------------------------------
def report(ledger: Ledger):
    return ledger.report("restored", Timeline())


def details_of(record: FileRecord, outcome: Outcome) -> list:
    ledger = Ledger(details=True)
    ledger.admit(record)
    ledger.settle(record, outcome)
    return report(ledger).files


def key(item) -> tuple[str, int]:
    return ("line", item.line) if isinstance(item, (Rejected, RejectedRow)) else ("id", item.id)


def capture_rows(monkeypatch: pytest.MonkeyPatch) -> list[FileRow | RejectedRow]:
    """The rows a run's ledger hands its sink (what ``--state`` commits), kept in memory: each
    terminal state (with whether the verifier gave it) and each rejected input line."""
    rows: list[FileRow | RejectedRow] = []
    init = Ledger.__init__

    def init_(self: Ledger, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        self.keep(rows.append)

    monkeypatch.setattr(Ledger, "__init__", init_)
    return rows


def write_input(folder: Path) -> Path:
    lines = [json.dumps({"id": i, "name": f"file_a{i}.pdf"}) for i in range(1, 25)]
    lines[5] = '{"id": 6, "name": '  # bad JSON
    lines[9] = json.dumps({"id": 3, "name": "again.pdf"})  # a duplicate
    lines[12] = "null"
    lines.append(json.dumps({"id": 10 ** 70, "name": "huge\tid.pdf"}))
    path = folder / "files.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@contextmanager
def scratch() -> Iterator[str]:
    """A fresh state path per hypothesis example (function-scoped fixtures are shared by examples)."""
    with tempfile.TemporaryDirectory(prefix="pillpipe-store-") as folder:
        yield os.path.join(folder, "run.db")


def damaged(path: Path, damage: str) -> None:
    if damage == "text":
        path.write_text("id,name\n1,file_100.pdf\n" * 100)
        return
    if damage == "foreign":
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.commit()
        conn.close()
        return
    with SqliteStore.open(str(path), IDENT) as store:
        store.commit([ok(i) for i in range(1, 2000)])
    conn = sqlite3.connect(path, isolation_level=None)
    if damage in ("newer", "older"):
        conn.execute(f"PRAGMA user_version = {2 if damage == 'newer' else 0}")
    elif damage == "row":
        conn.execute("UPDATE files SET last_stage = 'teleport' WHERE id = 7")
    conn.close()
    if damage == "pages":  # garbage over the middle of the file: SQLite finds a malformed B-tree page
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.seek(size // 2)
            f.write(os.urandom(size // 4))


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextmanager
def tmpfs(folder: Path) -> Iterator[None]:
    """A 256 KiB tmpfs on ``folder``, unmounted afterwards; skipped where mounting is not allowed."""
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        _unmount(folder)


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` seen read-only: through a read-only bind mount when this process may mount
    (root ignores file modes), else by taking the write permission away."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in (folder, *folder.iterdir())}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield folder
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    view = folder.parent / f"{folder.name}-ro"
    view.mkdir()
    done = subprocess.run(["mount", "--bind", str(folder), str(view)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"running as root, and cannot bind-mount read-only here: {done.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True, capture_output=True)
        yield view
    finally:
        _unmount(view)


def _unmount(target: Path) -> None:
    if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)  # busy: detach it now, free it later
