"""Output that never vanishes: any encoding, NO_COLOR, a terminal or not, a closed, full or
abandoned stdout, a name no stream can encode.  Subprocesses: the process and its streams are
the point."""
from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from pillpipe.common import events as events_module
from pillpipe.common.cli import EXIT_OUTPUT
from pillpipe.common.events import MARKERS, Events
from pillpipe.common.model import FileRecord, Stage, Status

from .conftest import MODULES, ROOT

REPORT_TAIL = "\n=== Pipeline complete ===\n"
FAST = ("--time-scale", "0")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM", "PYTHONIOENCODING")}
    env.update({"PYTHONIOENCODING": "utf-8", **extra})
    return env


def _run(module: str, *args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    if "stdout" not in kwargs:
        kwargs["capture_output"] = True
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env or _env(), timeout=60, **kwargs)


def _jsonl(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "records.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def _no_traceback(err: bytes | str) -> None:
    text = err.decode("utf-8", "replace") if isinstance(err, bytes) else err
    assert "Traceback" not in text and "Exception ignored" not in text, text


# Any encoding ---------------------------------------------------------------------------------
def test_an_ascii_stdout_gets_plain_markers_and_the_whole_report(variant):
    done = _run(MODULES[variant], "--files", "2", *FAST, env=_env(PYTHONIOENCODING="ascii"))
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode("ascii")  # nothing but ASCII reached the stream
    assert "[>] Dispatcher: dispatching file file_100.pdf" in out
    assert "[ok] Verified: file_101.pdf - API_UPLOADED" in out
    assert re.search(r"^\[done\] Uploader S3-Worker-\d is DONE", out, re.M)
    assert "Success: 2" in out and out.endswith(REPORT_TAIL)
    assert done.stderr == b""


def test_an_ascii_stream_escapes_what_it_cannot_encode_and_json_stays_json(tmp_path):
    source = _jsonl(tmp_path, '{"id": 1, "name": "caf\\u00e9.pdf"}', '{"id": 2, "name": "b.pdf"}')
    text = _run("threaded", "--input", source, *FAST, env=_env(PYTHONIOENCODING="ascii"))
    assert text.returncode == 0, text.stderr
    assert "[ok] Verified: caf\\xe9.pdf - API_UPLOADED" in text.stdout.decode("ascii")
    as_json = _run("threaded", "--input", source, *FAST, "--json", "--details", env=_env(PYTHONIOENCODING="ascii"))
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout.decode("ascii"))
    assert [f["name"] for f in report["files"]] == ["café.pdf", "b.pdf"]
    assert "[>] Dispatcher: dispatching file caf\\xe9.pdf" in as_json.stderr.decode("ascii")  # events: stderr


@pytest.mark.parametrize("env, plain", [({"NO_COLOR": "1"}, True), ({"NO_COLOR": ""}, False),
                                        ({"TERM": "dumb"}, False), ({}, False)],
                         ids=["NO_COLOR=1", "NO_COLOR empty", "TERM=dumb, not a terminal", "default"])
def test_no_color_gives_plain_markers_and_term_dumb_only_on_a_terminal(env, plain):
    done = _run("asyncio_version", "--files", "1", *FAST, env=_env(**env), text=True, encoding="utf-8")
    assert done.returncode == 0
    assert ("[>] Dispatcher: dispatching file file_100.pdf" in done.stdout) is plain
    assert ("🔖 Dispatcher: dispatching file file_100.pdf" in done.stdout) is not plain
    assert done.stdout.endswith(REPORT_TAIL)


def _in_a_terminal(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run ``python -m threaded args`` with stdout and stderr on a pseudo-terminal; its exit code
    and everything it wrote there."""
    leader, follower = pty.openpty()
    child = subprocess.Popen([sys.executable, "-m", "threaded", *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                             stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        assert ready, "no output from the terminal for 60 s"
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return child.wait(timeout=60), b"".join(chunks).decode("utf-8").replace("\r\n", "\n")


def test_nothing_depends_on_a_terminal_the_event_lines_are_the_same():
    """The tutorial's event lines are the default on a terminal and off it; TERM=dumb is honoured
    only where it describes the stream (a terminal)."""
    args = ("--files", "3", "--time-scale", "0.001", "--s3-workers", "1", "--api-workers", "1")
    code, on_tty = _in_a_terminal(*args, env=_env(TERM="xterm"))
    piped = _run("threaded", *args, env=_env(TERM="xterm"), text=True, encoding="utf-8")
    assert code == 0 == piped.returncode
    def lines(out: str) -> list[str]:  # the same lines (stages interleave); the wall time is the run's own
        return sorted(line for line in out.splitlines() if not line.startswith("Wall time:"))

    assert lines(on_tty) == lines(piped.stdout)
    assert "🔖 Dispatcher: dispatching file file_102.pdf" in on_tty and on_tty.endswith(REPORT_TAIL)
    code, dumb = _in_a_terminal(*args, env=_env(TERM="dumb"))
    assert code == 0 and "[>] Dispatcher: dispatching file file_102.pdf" in dumb and "🔖" not in dumb


def test_every_marker_has_a_plain_twin():
    """Every event line and notice written by the core reads as plain ASCII on an ASCII stream."""
    buffer = io.BytesIO()
    stream = io.TextIOWrapper(buffer, encoding="ascii", write_through=True)
    events = Events(stream)
    assert events.plain
    record = FileRecord(1, "file_100.pdf", status=Status.API_UPLOADED, dest_key="k", error="boom")
    events.dispatching(record)
    events.s3_copying("S3-Worker-1", record)
    events.s3_stored("S3-Worker-1", record, "bucket")
    events.api_uploaded("API-Worker-1", record)
    events.verified(record)
    events.s3_done("S3-Worker-1")
    events.api_done("API-Worker-1")
    events.attempt_failed("S3-Worker-1", Stage.S3, record, 1, 2)
    written = buffer.getvalue().decode("ascii")
    assert "\\u" not in written and "\\U" not in written and len(written.splitlines()) == 8
    # the notices are written elsewhere (common/context.py): each symbol there has its twin too
    for path in (ROOT / "common" / "context.py", ROOT / "common" / "events.py"):
        symbols = {c for c in path.read_text(encoding="utf-8") if unicodedata.category(c) == "So"}
        assert symbols <= set(MARKERS), f"{path.name}: no plain twin for {symbols - set(MARKERS)}"


def test_a_lone_surrogate_in_a_name_never_makes_stdout_vanish(tmp_path):
    """``"\\ud800"`` cannot be encoded by any stream; the record may be refused as invalid, but the
    event lines and the report still get out, and the exit code is the run's."""
    source = _jsonl(tmp_path, '{"id": 1, "name": "a\\ud800.pdf"}', '{"id": 2, "name": "b.pdf"}')
    done = _run("threaded", "--input", source, *FAST, "--details")
    out = done.stdout.decode("utf-8")
    assert out.endswith(REPORT_TAIL) and "Expected: 2" in out, done.stderr
    assert "a\\ud800.pdf" in out  # escaped, in an event line or the table
    assert done.returncode not in (0, EXIT_OUTPUT)  # the broken record cannot succeed
    _no_traceback(done.stderr)
    as_json = _run("threaded", "--input", source, *FAST, "--json", "--details", "--quiet")
    report = json.loads(as_json.stdout)
    assert report["expected"] == 2 and as_json.returncode == done.returncode
    _no_traceback(as_json.stderr)


# A stdout that cannot take the report ----------------------------------------------------------
def test_a_closed_stdout_is_said_on_stderr_and_exits_74(variant):
    done = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", MODULES[variant], "--files", "3",
                           *FAST], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_OUTPUT, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "stdout is closed" in lines[0] and "exit code 0 (every file succeeded)" in lines[0]
    _no_traceback(done.stderr)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
@pytest.mark.parametrize("quiet", [False, True], ids=["events", "quiet"])
def test_a_full_device_is_said_on_stderr_and_exits_74(variant, quiet):
    with open("/dev/full", "w") as full:
        done = _run(MODULES[variant], "--files", "3", *FAST, "--fault", "s3:id=2:raise", *(["--quiet"] if quiet else []),
                    stdout=full, stderr=subprocess.PIPE, text=True)
    assert done.returncode == EXIT_OUTPUT, done.stderr
    lines = done.stderr.splitlines()
    assert "report could not be written" in lines[-1] and "No space left on device" in lines[-1]
    assert "exit code 1 (some file did not succeed)" in lines[-1]
    assert len(lines) == (1 if quiet else 2)  # with events: their failure is said once, then the report's
    _no_traceback(done.stderr)


@pytest.mark.parametrize("fault, code", [((), 0), (("--fault", "s3:id=3:raise"), 1)])
def test_head_closing_the_pipe_keeps_the_runs_exit_code(variant, fault, code):
    """``| head -n 1`` through a real shell: one line out, every file still worked (the exit code
    is the run's, not 74: the reader chose to stop), one line on stderr, no traceback."""
    command = f'"$0" -m {MODULES[variant]} --files 2000 --time-scale 0 {" ".join(fault)} | head -n 1; ' \
              'exit "${PIPESTATUS[0]}"'
    done = subprocess.run(["bash", "-c", command, sys.executable], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, encoding="utf-8", timeout=120)
    assert done.stdout == "🔖 Dispatcher: dispatching file file_100.pdf\n"
    assert done.returncode == code, done.stderr
    assert done.stderr.splitlines() == [f"python -m {MODULES[variant]}: the report was not written: the reader "
                                        f"closed the pipe (exit code {code} is the run's)"]


# In process: the writer's rules ---------------------------------------------------------------
class _Failing(io.TextIOBase):
    """A stream whose writes fail as a full disk's do (the real /dev/full is tested above)."""

    name = "<full>"
    encoding = "utf-8"

    def __init__(self, error: BaseException) -> None:
        self.error, self.writes = error, 0

    def write(self, text: str) -> int:
        self.writes += 1
        raise self.error


def test_only_a_broken_pipe_switches_event_lines_off(capsys):
    full = _Failing(OSError(28, "No space left on device"))
    events = Events(full)
    events.notice("one")
    events.notice("two")
    assert events.enabled and full.writes == 2  # still tried: the stream may come back
    assert capsys.readouterr().err == "<full>: event lines cannot be written ([Errno 28] No space left on device); " \
                                      "the run goes on\n"  # said once
    gone = _Failing(BrokenPipeError(32, "Broken pipe"))
    events = Events(gone)
    events.notice("one")
    events.notice("two")
    assert not events.enabled and gone.writes == 1 and capsys.readouterr().err == ""


def test_an_encoding_error_is_never_taken_for_a_closed_stream():
    buffer = io.BytesIO()
    stream = io.TextIOWrapper(buffer, encoding="utf-8", write_through=True)
    events = Events(stream)
    assert not events.plain
    events.notice("✓ \ud800 one")
    events.notice("✓ two")
    assert events.enabled and events.failed is None
    assert buffer.getvalue().decode("utf-8") == "✓ \\ud800 one\n✓ two\n"


def test_plain_markers_follow_no_color(monkeypatch):
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert not events_module.plain_wanted(stream)
    monkeypatch.setenv("NO_COLOR", "1")
    assert events_module.plain_wanted(stream)


def test_only_a_lines_lead_markers_are_replaced_a_name_keeps_its_characters():
    assert events_module.plain("✓ Verified: ✓.pdf - API_UPLOADED") == "[ok] Verified: ✓.pdf - API_UPLOADED"
    assert events_module.plain("☑️  - 🔝 API Uploader") == "[done]  - [api] API Uploader"
    assert events_module.plain("    Uploader S3-Worker-1 copy file é.pdf") == "    Uploader S3-Worker-1 copy file é.pdf"
