"""Durable runs, wired in (issue 12): ``--state``, ``--resume`` and ``--retry-failed`` in every variant.

In-process runs at zero latency: what the state holds after a run, what a resume skips and works
again, where the commits run (never on an event loop), how they are batched, and how a state
that cannot be written stops the run.  tests/test_crash.py kills real processes.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path

import pytest

from pillpipe.common.cli import EXIT_INTERNAL, exit_code
from pillpipe.common.config import Config
from pillpipe.common.ledger import Ledger
from pillpipe.common.model import Outcome
from pillpipe.common.sqlite_store import SqliteStore
from pillpipe.common.store import restore_all
from pillpipe.common.timing import Timeline

from .conftest import RUNS, cli, fast, run_sequential


def write_input(folder: Path, count: int = 300) -> Path:
    """An input with everything a row must carry: failures (with --fail-rate), bad JSON, a
    ``null``, a duplicate id, a name with a tab, and an id beyond 64 bits."""
    lines = [json.dumps({"id": i, "name": f"file_{i}.pdf"}) for i in range(1, count + 1)]
    lines[5] = '{"id": 6, "name": '
    lines[9] = json.dumps({"id": 3, "name": "again.pdf"})
    lines[12] = "null"
    lines.append(json.dumps({"id": 10 ** 70, "name": "huge\tid.pdf"}))
    path = folder / "files.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def workload(tmp_path: Path, **more: object) -> Config:
    return fast(input=str(write_input(tmp_path)), fail_rate=0.3, retries=1, details=True, **more)  # type: ignore[arg-type]


def with_state(config: Config, path: Path, **more: object) -> Config:
    return Config(**{**{f: getattr(config, f) for f in Config.__dataclass_fields__ if f != "fault_plan"},
                     "state": str(path), **more})


def from_state(path: Path) -> Ledger:
    """A ledger counted from the committed rows alone."""
    ledger = Ledger(details=True)
    with SqliteStore.read(str(path)) as store:
        restore_all(store, ledger)
    return ledger


def worked(report) -> int:
    """How many files this run's S3 stage worked on (a resume works only what it must)."""
    return report.timing["stages"]["s3"]["files"]


# The flags -------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--resume"], "--resume needs --state PATH"),
    (["--state", "x.db", "--retry-failed"], "--retry-failed goes with --resume"),
    (["--retry-failed"], "--retry-failed goes with --resume"),
    (["--state", ""], "--state needs a path"),
    (["--inline-commit", "naive"], "--inline-commit needs --state PATH"),
])
def test_the_flags_need_each_other_in_one_line(args, message):
    done = cli("threaded", "--files", "1", "--time-scale", "0", "--quiet", *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stdout == ""


def test_the_help_names_the_flags_but_not_the_benchmark_switch():
    done = cli("asyncio_version", "--help")
    assert done.returncode == 0
    assert all(flag in done.stdout for flag in ("--state PATH", "--resume", "--retry-failed"))
    assert "--inline-commit" not in done.stdout


# What a run keeps ---------------------------------------------------------------------------
def test_the_state_holds_every_terminal_state_the_report_counts(run, tmp_path):
    """Failures, retries, invalid and duplicate lines, a 70-digit id: the committed rows alone give
    the run's own report, and ``pillpipe status`` counts them."""
    path = tmp_path / "run.db"
    report = run(with_state(workload(tmp_path), path))
    assert report.success and report.failed and report.invalid and report.duplicate
    assert from_state(path).report("restored", Timeline()) == report
    status = cli("pillpipe", "status", str(path), "--json")
    data = json.loads(status.stdout)
    assert data["recorded"] == report.expected and data["processed"] == report.processed
    assert {o.value: data[o.value] for o in Outcome} == {o.value: getattr(report, o.value) for o in Outcome}


def test_the_sequential_reference_keeps_a_state_too(tmp_path):
    """No writer there: each batch is committed where the file settles (it blocks nothing else)."""
    path = tmp_path / "run.db"
    report = run_sequential(with_state(workload(tmp_path), path))
    assert from_state(path).report("restored", Timeline()) == report


# What a resume skips and works again --------------------------------------------------------
def interrupted(tmp_path: Path, config: Config) -> tuple[Path, int]:
    """A state as a crash and a drain leave it: some rows never committed (the files in flight and
    the last batch), some files cancelled or aborted.  Returns the path and how many files a
    resume must work again."""
    path = tmp_path / "run.db"
    RUNS["threaded"](with_state(config, path))
    conn = sqlite3.connect(path, isolation_level=None)
    ids = [row[0] for row in conn.execute("SELECT id FROM files ORDER BY id")]
    lost, cancelled, aborted = ids[40:90], ids[100:110], ids[120:125]
    conn.executemany("DELETE FROM files WHERE id = ?", [(i,) for i in lost])
    conn.executemany("UPDATE files SET outcome = 'cancelled', verified = 0 WHERE id = ?", [(i,) for i in cancelled])
    conn.executemany("UPDATE files SET outcome = 'aborted', verified = 0 WHERE id = ?", [(i,) for i in aborted])
    conn.execute("DELETE FROM rejected WHERE outcome = 'duplicate'")
    conn.close()
    return path, len(lost) + len(cancelled) + len(aborted)


@pytest.mark.parametrize("model", [*RUNS, "sequential"])
def test_a_resume_works_only_what_is_not_settled_and_reports_the_whole_run(model, tmp_path):
    """Made by threads, resumed by each model: the report equals an uninterrupted run's (counts,
    digest, processed, the --details list) and only the files without a kept row were worked."""
    config = workload(tmp_path)
    clean = run_sequential(config)
    path, todo = interrupted(tmp_path, config)
    resume = RUNS.get(model, run_sequential)
    resumed = resume(with_state(config, path, resume=True, s3_workers=5))  # worker counts may change
    assert resumed == clean and resumed.files == clean.files and resumed.processed == clean.processed
    assert worked(resumed) == todo
    assert from_state(path).report("restored", Timeline()) == clean  # every file has its row again


def test_resuming_a_finished_run_works_nothing(run, tmp_path):
    config = workload(tmp_path)
    path = tmp_path / "run.db"
    first = run(with_state(config, path))
    again = run(with_state(config, path, resume=True))
    assert again == first and worked(again) == 0


def test_retry_failed_works_the_failed_and_rejected_files_again(run, tmp_path):
    """The simulated services fail the same files again (same seed): same report, but every failed
    file was worked once more, and every invalid and duplicate line rejected again."""
    config = workload(tmp_path)
    path = tmp_path / "run.db"
    first = run(with_state(config, path))
    again = run(with_state(config, path, resume=True, retry_failed=True))
    assert again == first and worked(again) == first.failed
    plain = run(with_state(config, path, resume=True))
    assert plain == first and worked(plain) == 0


def test_a_resume_of_another_workload_is_refused_and_changes_nothing(tmp_path):
    path = tmp_path / "run.db"
    RUNS["asyncio"](fast(files=20, state=str(path)))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    done = cli("anyio_version", "--files", "20", "--seed", "7", "--time-scale", "0", "--state", str(path), "--resume")
    assert done.returncode == 2 and done.stdout == "" and len(done.stderr.splitlines()) == 1
    assert "holds another workload: --seed was 0, now 7" in done.stderr
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


# The writer: batched, and never on the event loop --------------------------------------------
@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """Every commit a run makes: its size, its thread, and the event loop running there (if any)."""
    import sniffio

    seen: list[dict[str, object]] = []
    commit = SqliteStore.commit

    def spy(self: SqliteStore, rows):
        try:
            loop = sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            loop = None
        seen.append({"rows": len(rows), "thread": threading.current_thread().name, "loop": loop})
        return commit(self, rows)

    monkeypatch.setattr(SqliteStore, "commit", spy)
    return seen


@pytest.mark.parametrize("variant, backend", [("threaded", "asyncio"), ("asyncio", "asyncio"), ("anyio", "asyncio"),
                                              ("anyio", "trio")], ids=["threaded", "asyncio", "anyio", "anyio-trio"])
def test_no_commit_runs_on_the_event_loop(variant, backend, tmp_path, commits):
    """asyncio and anyio hand each commit to a thread; threads commit on the writer thread, never
    in a worker.  The last batch is committed after the run, with no loop left to block."""
    report = RUNS[variant](fast(files=3000, queue_size=100, backend=backend, state=str(tmp_path / "run.db")))
    assert report.success == 3000 and sum(c["rows"] for c in commits) == 3000
    assert all(c["loop"] is None for c in commits), commits
    threads = {str(c["thread"]) for c in commits}
    assert not any(name.startswith(("Dispatcher", "S3-Worker", "API-Worker", "Verifier")) for name in threads)
    if variant == "threaded":
        assert threads <= {"State-Writer", "MainThread"}


@pytest.mark.parametrize("variant", ["asyncio", "anyio"])
@pytest.mark.parametrize("inline, files", [("batched", 3000), ("naive", 40)])
def test_the_benchmarks_blocking_commit_does_block_the_loop(variant, inline, files, tmp_path, commits):
    """The check above can fail: with ``inline_commit`` (the benchmarks' switch) each batch - or,
    naive, each file - is committed by the worker that settles it, on the event loop itself."""
    report = RUNS[variant](fast(files=files, inline_commit=inline, state=str(tmp_path / "run.db")))
    assert report.success == files and sum(c["rows"] for c in commits) == files
    assert any(c["loop"] is not None for c in commits)
    if inline == "naive":
        assert len(commits) == files


def test_commits_are_batched(run, tmp_path, commits):
    report = run(fast(files=5000, queue_size=100, state=str(tmp_path / "run.db")))
    assert report.success == 5000 and sum(c["rows"] for c in commits) == 5000
    assert len(commits) <= 5000 // 100 and max(c["rows"] for c in commits) >= 100  # batches, not rows


def test_a_slow_trickle_is_committed_within_the_interval(run, tmp_path, commits):
    """Fewer files than a batch, spread over time: they are committed in small batches while the
    run goes (0.1 s after the oldest pending row), not all at the end."""
    report = run(fast(files=12, time_scale=0.05, state=str(tmp_path / "run.db")))  # ~1.2 s of API latency
    assert report.success == 12 and sum(c["rows"] for c in commits) == 12
    assert len(commits) >= 3


def test_a_writer_that_fell_behind_commits_holding_the_ledgers_lock(tmp_path, monkeypatch):
    """Threads' backpressure: a batch of BEHIND batches or more is committed under the ledger's
    lock, so the workers that settle files wait for it; a normal batch leaves the lock free."""
    from pillpipe.common.journal import BEHIND, Journal
    from pillpipe.common.model import FileRecord
    from pillpipe.common.store import BATCH_ROWS, file_row, identity

    lock, held = threading.Lock(), []
    commit = SqliteStore.commit

    def watched(self: SqliteStore, rows):
        held.append((len(rows), lock.locked()))
        return commit(self, rows)

    monkeypatch.setattr(SqliteStore, "commit", watched)
    with SqliteStore.open(str(tmp_path / "run.db"), identity(fast(files=1))) as store:
        journal = Journal(store, lock)
        rows = [file_row(FileRecord(i, f"f{i}"), Outcome.CANCELLED) for i in range(BEHIND * BATCH_ROWS + 1)]
        journal.commit(rows[:BATCH_ROWS])
        journal.commit(rows[BATCH_ROWS:])
    assert held == [(BATCH_ROWS, False), ((BEHIND - 1) * BATCH_ROWS + 1, False)]
    with SqliteStore.open(str(tmp_path / "two.db"), identity(fast(files=1))) as store:
        Journal(store, lock).commit(rows)
    assert held[-1] == (len(rows), True) and not lock.locked()


# A state that cannot be written any more -----------------------------------------------------
def test_a_state_that_turns_read_only_mid_run_stops_the_run_clearly(run, tmp_path, monkeypatch):
    """After the first batch the state's connection turns read-only (SQLite's ``query_only``: a
    real SQLITE_READONLY on the next write): the run stops like a drain, the report says why, the
    first batch stands, and a resume completes it."""
    commit, calls = SqliteStore.commit, []

    def turning(self: SqliteStore, rows):
        calls.append(len(rows))
        if len(calls) == 2:
            self._conn.execute("PRAGMA query_only = ON")
        return commit(self, rows)

    path = tmp_path / "run.db"
    config = fast(files=3000, time_scale=0.002, s3_workers=10, api_workers=20, queue_size=50)  # ~0.5 s: batches
    monkeypatch.setattr(SqliteStore, "commit", turning)                                       # by the interval
    stopped = run(with_state(config, path))
    monkeypatch.undo()
    assert stopped.stopped_by == "state" and exit_code(stopped) == EXIT_INTERNAL
    assert len(stopped.errors) == 1 and "cannot be written, it is read-only" in stopped.errors[0]
    assert "everything committed before it stands" in stopped.errors[0]
    assert stopped.expected == 3000 and stopped.cancelled > 0  # drained: the rest never dispatched
    assert len(calls) == 2  # nothing more was tried
    kept = from_state(path).report("restored", Timeline())
    assert kept.expected == calls[0] and kept.success == kept.expected
    resumed = run(with_state(config, path, resume=True))
    assert resumed == run_sequential(fast(files=3000))  # the pace does not change an outcome


# The benchmark scenario, in miniature -----------------------------------------------------------
def test_the_durable_benchmark_runs_counts_its_steps_and_renders(tmp_path):
    """Every part of ``benchmarks/scenarios/durable.py`` on tiny workloads: the steps it counts are
    the steps it takes, the run killed half-way resumes to every file, and the summary renders."""
    from pillpipe.benchmarks.harness import interpreter
    from pillpipe.benchmarks.scenario import Bench
    from pillpipe.benchmarks.scenarios.durable import MODES, SCENARIO, Plan, Stall

    plan = Plan(overhead_files=500, repeats=1, warmup=0, big_files=40_000, stall_repeats=1,
                stalls=(Stall(label="tiny", files=100, flags=("--time-scale", "0.01", "--api-workers", "20")),))
    bench = Bench(False, [interpreter()], quick=False)
    result = SCENARIO.run(bench, plan)
    assert bench.steps == SCENARIO.count(plan, bench)
    for row in result["resume"].values():
        assert 0 < row["killed"]["recorded"] < plan.big_files and row["success"] == plan.big_files
        assert row["restore"]["rows"] == row["killed"]["recorded"]
    assert all(row["writer"]["state_bytes_per_file"] > 50 for row in result["big"].values())
    assert {(r["variant"], r["mode"]) for r in result["stall"]} == {(v, m) for v in RUNS for m in MODES}
    assert all(r["lag_max_s"]["median"] >= r["lag_p50_s"]["median"] >= 0 for r in result["stall"])
    summary = SCENARIO.summary(result)
    assert summary.startswith("## Durable runs (--state)") and "### The stall" in summary
    assert len(SCENARIO.targets(result)) == len(RUNS) + 2


def test_the_committed_durable_results_render_with_todays_code(tmp_path):
    """benchmarks/results/durable/ renders with today's code (``pillpipe bench --render``; exit 1
    says a target was missed, which a shared machine may do: the results say so)."""
    import shutil
    import subprocess
    import sys

    from .conftest import ROOT

    shutil.copy(ROOT / "benchmarks" / "results" / "durable" / "results.json", tmp_path / "results.json")
    done = subprocess.run([sys.executable, "-m", "pillpipe.benchmarks", "--render", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr
    summary = (tmp_path / "summary.md").read_text()
    assert "## Durable runs (--state)" in summary and "### The stall" in summary
