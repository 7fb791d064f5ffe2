"""The live progress view: what a long run is doing, on stderr, only when stderr is a terminal.

Files done / total (the total is unknown while ``--input`` is streamed: said so), files/s, ETA,
elapsed time, per stage the queue depth and the busy workers, and the run's phase (draining,
aborting, what it waits for).  Rendering only: ``Context.tend`` hands it a ``Snapshot`` on the
coordinator's tick (every ``context.POLL``) and it redraws at most every ``REFRESH`` seconds -
never per file, so with the view off nothing at all is paid, and with it on the cost is a few
redraws a second.

``--progress auto`` (the default) shows it for a long run - more than ``AUTO_FILES`` generated
files, or an ``--input`` that is not a regular file of at most ``AUTO_BYTES`` - when stderr is a
terminal (not ``TERM=dumb``) and ``--quiet`` is not given; the tutorial's small run keeps its
event lines.  ``on`` shows it whenever stderr is a terminal, ``off`` never.  While it is shown it
replaces the event lines; the notices (draining, aborting, a dead worker) print above it.

With rich (``pip install 'pillpipe[progress]'``) the view is a rich ``Live`` panel with a bar;
without it, one plain status line redrawn in place - the runtime install stays anyio only.
"""
from __future__ import annotations

import os
import stat
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, TextIO

AUTO_FILES = 200  # generated files above which --progress auto shows the view
AUTO_BYTES = 16 * 1024  # an --input regular file above this many bytes (about 200 records) too
REFRESH = 0.25  # seconds between two redraws
MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class Snapshot:
    """What the view shows, taken on the coordinator's tick."""

    done: int  # files in a terminal state
    total: int | None  # None: streamed --input, unknown until read
    stages: tuple[tuple[str, int, int, int], ...]  # (stage, queued, busy, alive workers)
    phase: str  # "running", or the stop's phase with what it waits for


def wanted(mode: str, quiet: bool, files: int, input_path: str | None, stream: TextIO | None) -> bool:
    """Whether this run shows the view (see the module's doc for the rule)."""
    if mode == "off" or stream is None or not _terminal(stream):
        return False
    if mode == "on":
        return True
    return not quiet and long_run(files, input_path)


def long_run(files: int, input_path: str | None) -> bool:
    if input_path is None:
        return files > AUTO_FILES
    if input_path == "-":
        return True
    try:
        st = os.stat(input_path)
    except OSError:
        return False
    return not stat.S_ISREG(st.st_mode) or st.st_size > AUTO_BYTES


def _terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError, OSError):
        return False


def describe(snap: Snapshot, elapsed: float, rate: float | None) -> list[str]:
    """The view as plain lines: counts and pace, the stages, the phase."""
    if snap.total is None:
        counts = f"{snap.done:,} files (total unknown: streamed --input)"
        eta = ""
    else:
        share = f" ({100 * snap.done / snap.total:.0f}%)" if snap.total else ""
        counts = f"{snap.done:,} / {snap.total:,} files{share}"
        left = snap.total - snap.done
        eta = f"  ETA {_duration(left / rate)}" if rate and left > 0 else ""
    pace = f"  {rate:,.0f} files/s" if rate is not None else ""
    stages = "   ".join(f"{name}: {queued:,} queued, {busy}/{alive} busy" for name, queued, busy, alive in snap.stages)
    return [f"{counts}{pace}{eta}  elapsed {_duration(elapsed)}", stages, snap.phase]


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class Progress:
    """The view on ``stream``: started at the first snapshot, closed once (the last frame stays)."""

    def __init__(self, stream: TextIO, total: int | None) -> None:
        self.stream, self.total = stream, total
        self.encoding = getattr(stream, "encoding", None)  # for Events, which writes its notices here
        self.start = time.monotonic()
        self._next = 0.0
        self._samples: deque[tuple[float, int]] = deque(maxlen=12)  # (time, done): the pace of the last ~3 s
        self._view: _Rich | _Plain | None = None
        self._last: Snapshot | None = None
        self.closed = False

    def due(self) -> bool:
        return not self.closed and time.monotonic() >= self._next

    def show(self, snap: Snapshot) -> None:
        now = time.monotonic()
        self._next = now + REFRESH
        self._samples.append((now, snap.done))
        self._last = snap
        if self._view is None:
            try:
                self._view = _Rich(self.stream)
            except ImportError:  # no progress extra: the plain line
                self._view = _Plain(self.stream)
        self._view.draw(snap, describe(snap, now - self.start, self.rate()))

    def rate(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None

    # A text stream for the notices while the view is on: they print above it -----------------
    def write(self, text: str) -> int:
        if self._view is None:
            return self.stream.write(text)
        self._view.above(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return True

    def close(self, snap: Snapshot | None = None) -> None:
        """Draw the last frame (``snap``, or the last one seen) and leave it on screen."""
        if self.closed:
            return
        self.closed = True
        if self._view is not None:
            final = snap or self._last
            if final is not None:
                self._view.draw(final, describe(final, time.monotonic() - self.start, self.rate()))
            self._view.stop()


class _Plain:
    """One status line redrawn in place (``\\r`` and clear-to-end), cut to the terminal's width."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.line = ""

    def draw(self, snap: Snapshot, lines: list[str]) -> None:
        stages = " ".join(f"| {name} q{queued:,} {busy}/{alive}" for name, queued, busy, alive in snap.stages)
        phase = "" if snap.phase == "running" else f" | {snap.phase}"
        text = f"{lines[0]} {stages}{phase}"
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, ValueError, OSError):
            width = 0
        self.line = text[: max(20, (width or 80) - 1)]  # a terminal that gives no size: 80 columns
        self._write(f"\r{self.line}\x1b[K")

    def above(self, text: str) -> None:
        self._write(f"\r\x1b[K{text}{'' if text.endswith(chr(10)) else chr(10)}{self.line}")

    def stop(self) -> None:
        self._write("\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError, UnicodeError):
            pass


class _Rich:
    """A rich ``Live`` panel: a bar (pulsing while the total is unknown), the counts, one row per stage."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream, stderr=True)
        self.live = Live(console=self.console, auto_refresh=False, redirect_stdout=False, redirect_stderr=False)
        self.live.start()

    def draw(self, snap: Snapshot, lines: list[str]) -> None:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, padding=(0, 2), show_edge=False)
        for column in ("stage", "queued", "busy", "workers"):
            table.add_column(column, justify="left" if column == "stage" else "right")
        for name, queued, busy, alive in snap.stages:
            table.add_row(name, f"{queued:,}", str(busy), str(alive))
        head = Table.grid(padding=(0, 1))
        head.add_row(ProgressBar(total=snap.total or None, completed=snap.done, width=24), Text(lines[0]))
        parts: list[Any] = [head, table]
        if snap.phase != "running":
            parts.append(Text(snap.phase, style="yellow"))
        self.live.update(Group(*parts), refresh=True)

    def above(self, text: str) -> None:
        self.live.console.print(text.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)

    def stop(self) -> None:
        self.live.stop()
