"""The event lines users watch, written through one place that survives a closed stdout."""
from __future__ import annotations

import os
from typing import TextIO

from .model import FileRecord, Stage


class Events:
    """Writes the tutorial's event lines; a no-op when disabled (``--quiet``).

    Each line is one ``write`` call, so lines from concurrent workers never interleave.
    If the reader goes away (``| head``), the stream is swapped for ``/dev/null`` and the
    run carries on: output never kills a worker.
    """

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self.enabled = stream is not None

    def emit(self, line: str) -> None:
        stream = self._stream
        if stream is None:
            return
        try:
            stream.write(line + "\n")
            stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            self._lost(stream)
        except RuntimeError:  # a signal handler's line while this thread was mid-write: drop the line
            pass

    def _lost(self, stream: TextIO) -> None:
        """The reader is gone: stop writing, and point the descriptor at /dev/null so the
        interpreter's own flush at exit does not complain either."""
        self._stream, self.enabled = None, False
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

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
