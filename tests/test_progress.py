"""The live progress view (issue 9, item 2), checked in a real terminal: the program runs with its
stderr on a pseudo-terminal (``pty``), its stdout on a pipe, as a user's shell would give them.

The view is rendered on the coordinator's tick, never per file; it shows files done / total,
files/s, ETA, queue depths and busy workers per stage, and the stop's phase.  ``auto`` keeps the
tutorial's event lines for a small run and switches to the view for a long one; ``--quiet`` or a
stderr that is not a terminal turn it off.
"""
from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

from pillpipe.common.config import Config, UsageError
from pillpipe.common.progress import AUTO_FILES, Snapshot, describe, long_run

from .conftest import ROOT

pytestmark = pytest.mark.timeout(120)
VARIANTS = ("threaded", "asyncio", "anyio", "sequential")
NO_RICH = "import sys; sys.modules['rich'] = None; "  # as if the progress extra were not installed


def in_terminal(*args: str, plain: bool = False, signal_after: str | None = None,
                timeout: float = 60) -> tuple[int, str, str]:
    """``pillpipe ARGS`` with stderr on a pty (80 columns): (exit code, the terminal's bytes as text,
    stdout).  With ``signal_after``, SIGINT is sent once the terminal shows that text."""
    master, slave = pty.openpty()
    code = f"{NO_RICH if plain else ''}from pillpipe.cli import console; console({list(args)!r})"
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "80", "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)  # never a full pipe
    reader.start()
    seen, signalled, deadline = b"", False, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 0.1)[0]:
                if proc.poll() is not None and not select.select([master], [], [], 0.2)[0]:
                    break  # exited, and the terminal has nothing more to show
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal (it exited)
                break
            if not chunk:
                break
            seen += chunk
            if signal_after and not signalled and signal_after.encode() in seen:
                proc.send_signal(signal.SIGINT)
                signalled = True
        else:
            proc.kill()
            raise AssertionError(f"hung; the terminal showed:\n{seen.decode(errors='replace')[-2000:]}")
        code = proc.wait(timeout=30)
        reader.join(timeout=30)
        return code, seen.decode(errors="replace"), out[0].decode()
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_long_run_shows_the_view_in_a_terminal(variant):
    """More than AUTO_FILES files: the view by itself (rich), no event lines, the last frame kept."""
    code, term, out = in_terminal("run", variant, "--files", str(AUTO_FILES + 100), "--time-scale", "0.005",
                                  "--queue-size", "20")
    assert code == 0, term[-2000:]
    assert f"300 / 300 files (100%)" in term and "files/s" in term and "elapsed" in term
    assert "queued" in term and "busy" in term and "workers" in term  # the stages' table
    for stage in ("s3", "api", "verify"):
        assert f"\n  {stage} " in term.replace("\r", "")
    assert "Dispatcher: dispatching" not in term + out  # the view replaces the event lines
    assert "Wall time: " in out and "Success: 300" in out


@pytest.mark.parametrize("variant", VARIANTS)
def test_without_rich_a_plain_line(variant):
    code, term, out = in_terminal("run", variant, "--files", "300", "--time-scale", "0.005", plain=True)
    assert code == 0, term[-2000:]
    frames = [frame for frame in term.split("\r") if "files" in frame]
    assert frames and frames[-1].startswith("300 / 300 files (100%)")
    assert "| s3 q" in frames[-1] and "| api q" in frames[-1] and "\x1b[K" in term
    assert "Dispatcher: dispatching" not in term + out


def test_the_tutorials_small_run_keeps_its_event_lines():
    code, term, out = in_terminal("run", "threaded", "--files", "8", "--time-scale", "0.01")
    assert code == 0
    assert "🔖 Dispatcher: dispatching file file_100.pdf" in out and "files/s" not in term


def test_quiet_or_off_turn_it_off_and_on_turns_it_on():
    for flags in (("--quiet",), ("--progress", "off")):
        code, term, out = in_terminal("run", "asyncio", "--files", "300", "--time-scale", "0", *flags)
        assert code == 0 and "files/s" not in term and "\x1b" not in term, flags
    code, term, out = in_terminal("run", "asyncio", "--files", "8", "--time-scale", "0.01", "--progress", "on",
                                  "--quiet")
    assert code == 0 and "8 / 8 files (100%)" in term


def test_streamed_input_says_the_total_is_unknown(tmp_path):
    records = tmp_path / "records.jsonl"
    records.write_text("".join(f'{{"id": {i}, "name": "f{i}.pdf"}}\n' for i in range(1, 400)))
    code, term, out = in_terminal("run", "asyncio", "--input", str(records), "--time-scale", "0.0005",
                                  "--progress", "on")
    assert code == 0 and "399 files (total unknown: streamed --input)" in term


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_view_shows_the_shutdown_phase(variant):
    """A drain waiting for a hung call: the phase and what it waits for are in the view.  (How many
    files it still waits for as the view refreshes depends on the machine's load: a file the API
    stage had started may still be in flight.  The hung one is always named.)"""
    code, term, out = in_terminal("run", variant, "--files", "400", "--time-scale", "0.01", "--fault",
                                  "s3:id=1:hang", "--shutdown-grace", "3", signal_after="files/s")
    assert code == 130, term[-2000:]
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n", "", term)  # the text, as the lines wrap
    assert "draining for" in screen, screen[-2000:]
    assert re.search(r"waiting for \d+ files? - file_100\.pdf in S3-Worker-1", screen), screen[-2000:]
    assert "SIGINT: draining" in screen  # the notice, printed above the view
    assert "Stopped by: SIGINT" in out


def test_when_stderr_is_not_a_terminal_there_is_no_view():
    done = subprocess.run([sys.executable, "-m", "pillpipe", "run", "threaded", "--files", "300", "--time-scale",
                           "0", "--progress", "on"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "files/s" not in done.stderr and "\x1b" not in done.stderr + done.stdout


def test_the_rule_and_the_lines():
    assert not long_run(AUTO_FILES, None) and long_run(AUTO_FILES + 1, None) and long_run(0, "-")
    with pytest.raises(UsageError):
        Config(progress="sometimes")
    lines = describe(Snapshot(250, 1000, (("s3", 7, 3, 3), ("api", 0, 2, 2), ("verify", 0, 0, 1)), "running"),
                     elapsed=5.0, rate=50.0)
    assert lines[0] == "250 / 1,000 files (25%)  50 files/s  ETA 15.0 s  elapsed 5.0 s"
    assert lines[1].startswith("s3: 7 queued, 3/3 busy")
