"""Crash tests (issue 12): real processes, killed for real, resumed until done - every model.

``kill -9`` at random instants (seeded; a bounded count) during a run with ``--state``, then
``--resume`` until the run is done: the final report equals an uninterrupted run's and no file
is missing or counted twice.  A drain (SIGINT) leaves cancelled files that a resume works again.
A full disk mid-run stops the run clearly (exit 70) and keeps what was committed.  A state that
is not SQLite, another program's, a newer pillpipe's or another workload's is one line, exit 2.
"""
from __future__ import annotations

import hashlib
import json
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pillpipe.common.report import IGNORED
from pillpipe.common.sqlite_store import SqliteStore
from pillpipe.common.store import StateError

from .conftest import MODULES, ROOT, cli, fast, run_sequential

pytestmark = pytest.mark.slow
FILES = 1500
WORKLOAD = ["--fail-rate", "0.2", "--retries", "1"]  # what the state's identity holds (with --input)
PACE = ["--s3-workers", "20", "--api-workers", "40", "--queue-size", "50", "--time-scale", "0.01"]
KILLS = 3  # per model: each at a random point of what is left, then one resume runs to the end


def write_input(folder: Path, count: int = FILES) -> Path:
    lines = [json.dumps({"id": 1000 + i, "name": f"file_{i}.pdf"}) for i in range(count)]
    lines[7] = '{"id": '  # invalid
    lines[11] = json.dumps({"id": 1003, "name": "again.pdf"})  # a duplicate
    path = folder / "files.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def clean_report(source: Path) -> dict[str, Any]:
    """The uninterrupted run's report, from the sequential reference (pace does not change it)."""
    return run_sequential(fast(input=str(source), fail_rate=0.2, retries=1, details=True)).comparable()


def start(variant: str, source: Path, state: Path, *more: str, **popen: Any) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", MODULES[variant], "--input", str(source), *WORKLOAD, *PACE, "--state", str(state),
            "--json", "--details", "--quiet", *more]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def recorded(state: Path) -> int:
    """The rows committed so far, read beside the run (0 while the state does not exist yet)."""
    try:
        with SqliteStore.read(str(state)) as store:
            return int(store.summary()["recorded"])
    except (StateError, sqlite3.Error):
        return 0


def finished(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, dict[str, Any], str]:
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return proc.returncode, json.loads(out) if out.strip() else {}, err


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in report.items() if key not in IGNORED}


def kill_when(proc: subprocess.Popen[str], state: Path, target: int, rng: random.Random) -> int | None:
    """SIGKILL ``proc`` once ``target`` rows are committed (then a random few ms later); None when
    it ended first.  Returns the rows committed at the kill."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and recorded(state) < target:
        assert time.monotonic() < deadline, "the run neither progressed nor ended (a hang)"
        time.sleep(0.005)
    time.sleep(rng.uniform(0, 0.02))
    if proc.poll() is not None:
        proc.communicate()
        return None
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return recorded(state)


@pytest.mark.parametrize("variant", list(MODULES))
def test_kill_9_at_random_instants_then_resume_until_done(variant, tmp_path):
    source, state = write_input(tmp_path), tmp_path / "run.db"
    rng = random.Random(f"kill-9/{variant}")
    at_kills = []
    for attempt in range(KILLS):  # the first run starts the state; the others resume it
        before = recorded(state)
        proc = start(variant, source, state, *(["--resume"] if attempt else []))
        killed = kill_when(proc, state, before + int(rng.uniform(0.15, 0.6) * (FILES - before)), rng)
        if killed is not None:
            at_kills.append(killed)
    assert at_kills and any(0 < rows < FILES for rows in at_kills), at_kills  # killed mid-run, for real
    code, final, _ = finished(start(variant, source, state, "--resume"))
    assert code == 1 and final["failed"] > 0  # --fail-rate: some files fail, the same ones every run
    assert comparable(final) == clean_report(source)
    ids = [f["id"] for f in final["files"] if "line" not in f]
    assert len(ids) == len(set(ids)) == FILES - 2 and final["expected"] == FILES  # none missing, none twice
    with SqliteStore.read(str(state)) as store:
        summary = store.summary()
    assert summary["recorded"] == FILES and summary["runs"] >= len(at_kills) + 1


@pytest.mark.parametrize("variant", list(MODULES))
def test_a_drained_run_resumes_its_cancelled_files(variant, tmp_path):
    """SIGINT mid-run: files not started end cancelled (rows committed), the report is printed
    (exit 130); a resume works the cancelled files again and the report is the whole run's."""
    source, state = write_input(tmp_path), tmp_path / "run.db"
    proc = start(variant, source, state)
    deadline = time.monotonic() + 60
    while recorded(state) < FILES // 4:
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended or hung before a quarter"
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    code, drained, _ = finished(proc)
    assert code == 130 and drained["stopped_by"] == "SIGINT" and drained["cancelled"] > 0
    with SqliteStore.read(str(state)) as store:
        assert store.summary()["cancelled"] == drained["cancelled"]  # the drain's outcomes are committed too
    code, final, _ = finished(start(variant, source, state, "--resume"))
    assert code == 1 and comparable(final) == clean_report(source)


def test_a_resumed_run_drained_counts_each_generated_file_once(tmp_path):
    """Generated files: a drained resume cancels its never-dispatched rest as id ranges - around
    the files an earlier run kept beyond it (here ids 1,501-3,000), which are counted already.
    One more resume then finishes the run."""
    state = tmp_path / "run.db"
    run_sequential(fast(files=3000, state=str(state)))
    conn = sqlite3.connect(state, isolation_level=None)
    conn.execute("DELETE FROM files WHERE id <= 1500")  # as if the files a run kept were the last half
    conn.close()
    args = [sys.executable, "-m", MODULES["asyncio"], "--files", "3000", "--time-scale", "0.01", "--s3-workers", "20",
            "--api-workers", "40", "--queue-size", "50", "--state", str(state), "--json", "--quiet", "--resume"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while recorded(state) < 1500 + 50:  # the resume is under way, its dispatcher far below id 1,500
        assert proc.poll() is None and time.monotonic() < deadline, "the resume ended or hung too soon"
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    code, drained, _ = finished(proc)
    assert code == 130 and drained["cancelled"] > 0
    assert drained["expected"] == 3000 and drained["success"] + drained["cancelled"] + drained["aborted"] == 3000
    code, final, _ = finished(subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                               text=True))
    assert code == 0 and comparable(final) == run_sequential(fast(files=3000)).comparable()


# A full disk mid-run --------------------------------------------------------------------------
def _file_size_limit(size: int) -> Any:
    def limit() -> None:  # the disk, for this process: a write past ``size`` fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


def assert_stopped_by_the_state(code: int, report: dict[str, Any], err: str, why: str) -> None:
    assert code == 70 and report["stopped_by"] == "state", (code, err)
    assert len(report["errors"]) == 1 and why in report["errors"][0]
    assert "everything committed before it stands" in report["errors"][0]
    notices = [line for line in err.splitlines() if "cannot be written" in line]
    assert len(notices) == 1 and notices[0].startswith("⏹"), err
    assert report["expected"] == FILES  # every file still ends in exactly one terminal state


@pytest.mark.parametrize("variant", list(MODULES))
def test_a_full_disk_mid_run_stops_the_run_and_keeps_what_was_committed(variant, tmp_path):
    """``RLIMIT_FSIZE`` stands for the disk (any user, any Linux): the WAL cannot grow past 256 KiB.
    The run stops like a drain, exit 70; a resume with room again works only what has no row."""
    source, state = write_input(tmp_path), tmp_path / "run.db"
    code, report, err = finished(start(variant, source, state, preexec_fn=_file_size_limit(256 * 1024)))
    assert_stopped_by_the_state(code, report, err, "cannot be written")
    with SqliteStore.read(str(state)) as store:
        kept = store.summary()
    assert kept["recorded"] < FILES and kept["cancelled"] == kept["aborted"] == 0
    code, final, _ = finished(start(variant, source, state, "--resume"))
    assert code == 1 and comparable(final) == clean_report(source)
    settled_files = kept["success"] + kept["failed"]  # the committed rows were kept: only the rest is worked
    assert final["timing"]["stages"]["s3"]["files"] == FILES - 2 - settled_files


@pytest.mark.parametrize("variant", ["asyncio"])  # the same path in every model: the file-size limit covers them
def test_a_full_tmpfs_mid_run_says_the_disk_is_full(variant, tmp_path):
    """A real ENOSPC: a 256 KiB tmpfs (needs the right to mount; skipped without it).  Once copied
    where there is room, the state resumes."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    source = write_input(tmp_path)
    try:
        code, report, err = finished(start(variant, source, disk / "run.db"))
        shutil.copytree(disk, tmp_path / "room")
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True, timeout=30)
    assert_stopped_by_the_state(code, report, err, "the disk is full")
    code, final, _ = finished(start(variant, source, tmp_path / "room" / "run.db", "--resume"))
    assert code == 1 and comparable(final) == clean_report(source)


# A state that cannot serve the run: one line, exit 2, the file untouched ------------------------
def _not_sqlite(path: Path) -> None:
    path.write_bytes(b"these are not the rows you are looking for\n" * 100)


def _foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE files (id, name)")
    conn.commit()
    conn.close()


def _newer(path: Path) -> None:
    run_sequential(fast(files=5, state=str(path)))
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 2")
    conn.close()


def _another_workload(path: Path) -> None:
    run_sequential(fast(files=5, seed=3, state=str(path)))


def _damaged(path: Path) -> None:
    run_sequential(fast(files=5, state=str(path)))
    data = bytearray(path.read_bytes())
    data[4096:8192] = b"\xff" * 4096  # the first table's page
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("variant, damage, message", [
    ("threaded", _not_sqlite, "not a SQLite database"),
    ("asyncio", _foreign, "a SQLite database, but not a pillpipe state"),
    ("anyio", _newer, "written by a newer pillpipe (state schema 2; this one reads 1)"),
    ("threaded", _another_workload, "holds another workload: --seed was 3, now 0"),
    ("asyncio", _damaged, "is damaged"),
], ids=["not-sqlite", "foreign", "newer-schema", "another-workload", "damaged"])
def test_a_state_that_cannot_serve_the_run_is_one_line(variant, damage, message, tmp_path):
    path = tmp_path / "run.db"
    damage(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    done = cli(MODULES[variant], "--files", "5", "--time-scale", "0", "--state", str(path), "--resume")
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert len(done.stderr.splitlines()) == 1 and message in done.stderr and "Traceback" not in done.stderr
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_a_new_run_on_a_state_that_holds_one_is_one_line(tmp_path):
    path = tmp_path / "run.db"
    run_sequential(fast(files=5, state=str(path)))
    done = cli("anyio_version", "--files", "5", "--time-scale", "0", "--state", str(path))
    assert done.returncode == 2 and "already holds a run: add --resume" in done.stderr
    assert len(done.stderr.splitlines()) == 1
