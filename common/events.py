"""The event lines users watch, written through one place that never makes output vanish.

- **Any encoding works.**  Where the stream cannot encode the emoji markers (an ASCII terminal or
  pipe, ``PYTHONIOENCODING=ascii``), or the user asked for plain output (``NO_COLOR`` set and not
  empty, or ``TERM=dumb`` on a terminal), every marker is written as its plain ASCII twin
  (``MARKERS``, at the start of a line).  A character the stream still cannot encode (a lone
  surrogate in a file name, an accent on an ASCII stream) is written as a backslash escape: the
  line is never dropped.
- **Only a real broken pipe switches a stream off** (the reader went away, ``| head``).
- **Any other failure** (``> /dev/full``, a closed descriptor) is said once on stderr and the run
  goes on; the command line then says whether the report itself got out (``common/cli.py``).
"""
from __future__ import annotations

import os
import re
import sys
from typing import TextIO

from .model import FileRecord, Stage

# Each emoji marker and its plain ASCII twin.  A new marker in an event line or a notice belongs here.
MARKERS = {
    "🔖": "[>]",      # dispatching
    "💾": "[s3]",     # stored in S3
    "🔝": "[api]",    # uploaded to the API
    "✓": "[ok]",      # verified
    "☑": "[done]",    # a worker's pill
    "⚠": "[!]",       # an attempt failed
    "✗": "[x]",       # a rejected record, unreadable input
    "⏹": "[stop]",    # draining, aborting
    "💥": "[died]",   # a dead worker
    "⏳": "[wait]",   # waiting on something
}
PLAIN = str.maketrans({**MARKERS, "\ufe0f": ""})  # U+FE0F: the emoji presentation selector after ☑ and ⚠
_LEAD = re.compile(r"[\W_]*")  # a line's markers: everything before its first letter or digit
_TWINS: dict[str, str] = {}  # lead -> its plain twin (a few dozen distinct leads; bounded below)


def plain(line: str) -> str:
    """``line`` with the markers it starts with as their ASCII twins.  Only the lead is touched: a
    file name that holds an emoji stays that name (escaped if the stream cannot encode it)."""
    if line.isascii():
        return line
    end = _LEAD.match(line).end()  # type: ignore[union-attr]  # [\W_]* always matches
    lead = line[:end]
    twin = _TWINS.get(lead)
    if twin is None:
        twin = lead.translate(PLAIN)
        if len(_TWINS) < 256:
            _TWINS[lead] = twin
    return twin + line[end:]


def plain_wanted(stream: TextIO) -> bool:
    """Whether ``stream`` gets the ASCII markers: the user asked for no colour (``NO_COLOR``), the
    terminal is dumb (``TERM=dumb``, only when the stream is that terminal), or the stream's
    encoding cannot encode every emoji marker."""
    if os.environ.get("NO_COLOR"):
        return True
    if os.environ.get("TERM") == "dumb" and _isatty(stream):
        return True
    encoding = getattr(stream, "encoding", None)
    if not encoding:  # an in-memory text stream holds any character
        return False
    try:
        "".join(MARKERS).encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return True
    return False


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def write(stream: TextIO, text: str) -> None:
    """Write ``text`` and flush.  What the stream cannot encode is written as a backslash escape
    (``\\ud800``, ``\\xe9``), so a line is never lost to its characters.  Raises ``OSError`` (a
    broken pipe, a full disk) and ``ValueError`` (a closed stream object) for the caller to judge."""
    try:
        stream.write(text)
    except UnicodeEncodeError:  # nothing was written: a text stream encodes the whole string first
        stream.write(escaped(text, getattr(stream, "encoding", None)))
    stream.flush()


def escaped(text: str, encoding: str | None) -> str:
    """``text`` with every character ``encoding`` cannot encode as a backslash escape."""
    try:
        return text.encode(encoding or "ascii", "backslashreplace").decode(encoding or "ascii")
    except (LookupError, UnicodeError):
        return text.encode("ascii", "backslashreplace").decode("ascii")


def say(line: str) -> None:
    """One line on stderr, whatever state stderr is in (closed, full, any encoding): it is the last
    channel, so a failure here is swallowed."""
    stream = sys.stderr
    if stream is None:
        return
    try:
        write(stream, (plain(line) if plain_wanted(stream) else line) + "\n")
    except (OSError, ValueError):
        pass


def describe(exc: BaseException) -> str:
    """A failed write in a few words: ``[Errno 28] No space left on device``."""
    return str(exc) or type(exc).__name__


class Events:
    """Writes the tutorial's event lines; a no-op when disabled (``--quiet``).

    Each line is one ``write`` call, so lines from concurrent workers never interleave.  If the
    reader goes away (``| head``), the stream is switched off and the run carries on: output
    never kills a worker.  Any other failure is said once on stderr (``failed`` keeps it) and
    later lines are still tried, so output comes back if the stream does.
    """

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self.enabled = stream is not None
        self.plain = stream is not None and plain_wanted(stream)
        self.failed: str | None = None  # why a line could not be written, the first time
        self._deferred: list[str] = []  # lines a signal handler could not write at once

    def emit(self, line: str) -> None:
        stream = self._stream
        if stream is None:
            return
        if self._deferred:
            self.flush()
        try:
            write(stream, (plain(line) if self.plain else line) + "\n")
        except BrokenPipeError:  # the reader is gone: nobody wants the rest
            self._stream, self.enabled = None, False
        except RuntimeError:  # a signal handler's line while this thread was mid-write: written later
            if len(self._deferred) < 100:
                self._deferred.append(line)
        except (OSError, ValueError) as exc:  # a full disk, a closed descriptor: say so, keep going
            if self.failed is None:
                self.failed = describe(exc)
                if stream is not sys.stderr:
                    say(f"{getattr(stream, 'name', 'output')}: event lines cannot be written ({self.failed}); "
                        "the run goes on")

    def flush(self) -> None:
        """Write the lines a signal handler had to defer (the coordinator's tend calls this)."""
        if not self._deferred:
            return
        lines, self._deferred = self._deferred, []
        for line in lines:
            self.emit(line)

    # The tutorial's lines -------------------------------------------------------------
    def dispatching(self, record: FileRecord) -> None:
        self.emit(f"🔖 Dispatcher: dispatching file {record.name}")

    def s3_copying(self, worker: str, record: FileRecord) -> None:
        self.emit(f"    Uploader {worker} copy file {record.name} S3 -> S3")

    def s3_stored(self, worker: str, record: FileRecord, bucket: str) -> None:
        self.emit(f"💾 Uploader {worker} stored file [{record.name}] in S3 bucket=[{bucket}] and key=[{record.dest_key}]")

    def api_uploaded(self, worker: str, record: FileRecord) -> None:
        self.emit(f"🔝 API Uploader: file [{record.name}] uploaded ! {record.status.value}")

    def verified(self, record: FileRecord) -> None:
        self.emit(f"✓ Verified: {record.name} - {record.status.value}")

    def s3_done(self, worker: str) -> None:
        self.emit(f"☑️ Uploader {worker} is DONE. Finishing work ... Finished")

    def api_done(self, worker: str) -> None:
        self.emit(f"☑️  - 🔝 API Uploader {worker} got DONE signal. Finishing ... Finished")

    # Lines the tutorial never needed ----------------------------------------------------
    def attempt_failed(self, worker: str, stage: Stage, record: FileRecord, attempt: int, attempts: int) -> None:
        what = "giving up" if attempt == attempts else "will retry"
        self.emit(f"⚠️  {worker}: {stage.value} attempt {attempt}/{attempts} for [{record.name}] failed: {record.error} ({what})")

    def notice(self, line: str) -> None:
        """A line about the run itself (draining, aborting, a dead worker)."""
        self.emit(line)
