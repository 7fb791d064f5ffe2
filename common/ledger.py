"""The ledger: the source of truth for every file's state, and what the report is built from.

Each file is recorded when admitted and leaves the ledger when it reaches a terminal state;
the first terminal state wins, so a late result after a timeout or an abort never overwrites
it.  Only files still in flight are kept (plus running counts and an order-independent
digest), so a million files run in flat memory unless per-file details are asked for.
"""
from __future__ import annotations

import bisect
import hashlib
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Iterable

from .model import FileRecord, Outcome, Rejected, Stage, Status
from .report import Report
from .timing import Timeline

_MOD = 1 << 256
REJECTED_SHOWN = 10  # rejected records whose reason the report keeps (the rest are only counted)
_TEXT: dict[Outcome | Stage | None, str] = {member: member.value for enum in (Outcome, Stage) for member in enum}  # .value is slow on the hot path
_TEXT[None] = ""


def outcome_line(record: FileRecord, outcome: Outcome) -> str:
    """One file's outcome, canonically: what the digest is made of."""
    return (f"{record.id}\t{record.name}\t{_TEXT[outcome]}\t{record.dest_key or ''}\t{_TEXT[record.failed_stage]}\t"
            f"{record.error or ''}\t{record.s3_attempts}\t{record.api_attempts}\t{_TEXT[record.last_stage]}")


def rejected_line(rejected: Rejected) -> str:
    return f"line {rejected.line}\t{rejected.outcome.value}\t{rejected.id}\t{rejected.name}\t{rejected.error}"


class Ledger:
    """Thread-safe when given a real lock (threads); a no-op lock suffices on one event loop."""

    def __init__(self, lock: AbstractContextManager[Any] | None = None, details: bool = False) -> None:
        self._lock = lock if lock is not None else nullcontext()
        self._in_flight: dict[int, FileRecord] = {}
        self._held: dict[str, FileRecord] = {}  # worker name -> the file in its hands
        self._counts = dict.fromkeys(Outcome, 0)
        self._digest = 0
        self._details: list[dict[str, Any]] | None = [] if details else None
        self.processed = 0
        self.errors: list[str] = []
        self.rejected: list[tuple[int, str]] = []  # the REJECTED_SHOWN first lines' reasons, by line

    # Admission ---------------------------------------------------------------------------
    def admit(self, record: FileRecord) -> None:
        with self._lock:
            self._in_flight[record.id] = record

    def reject(self, rejected: Rejected) -> None:
        with self._lock:
            if len(self.rejected) < REJECTED_SHOWN or rejected.line < self.rejected[-1][0]:  # in any order
                reason = rejected.error.removeprefix(f"line {rejected.line}: ")
                bisect.insort(self.rejected, (rejected.line, f"line {rejected.line} ({rejected.outcome.value}): {reason}"))
                del self.rejected[REJECTED_SHOWN:]
            self._count(rejected.outcome, rejected_line(rejected), {
                "line": rejected.line, "id": rejected.id, "name": rejected.name,
                "outcome": rejected.outcome.value, "error": rejected.error})

    def cancel_unadmitted(self, records: Iterable[FileRecord | Rejected], error: str | None = None) -> None:
        """Files that were never admitted because of shutdown still end as cancelled."""
        for record in records:
            if isinstance(record, Rejected):
                self.reject(record)
                continue
            if error is not None:
                record.error = error
            with self._lock:
                self._terminal(record, Outcome.CANCELLED)

    # Terminal states -----------------------------------------------------------------
    def verify(self, record: FileRecord) -> Outcome:
        """The verifier's verdict on a record that reached it."""
        outcome = Outcome.SUCCESS if record.status is Status.API_UPLOADED else Outcome.FAILED
        with self._lock:
            self.processed += 1
            if self._in_flight.pop(record.id, None) is not None:
                self._terminal(record, outcome)
        return outcome

    def settle(self, record: FileRecord, outcome: Outcome, error: str | None = None) -> bool:
        """Give ``record`` a terminal state unless it already has one (the first one wins)."""
        with self._lock:
            if self._in_flight.pop(record.id, None) is None:
                return False
            if error is not None:
                record.error = error
            self._terminal(record, outcome)
            return True

    def settle_remaining(self) -> None:
        """At the end of any run: whatever is still in flight was never finished.

        A file no S3 worker ever started is cancelled; one that had started is aborted (it
        keeps its last completed stage)."""
        with self._lock:
            remaining = list(self._in_flight.values())
        for record in remaining:
            started = record.s3_attempts > 0 or record.last_stage is not Stage.DISPATCH
            self.settle(record, Outcome.ABORTED if started else Outcome.CANCELLED)

    # Which worker holds which file (each worker writes only its own entry: no lock needed) --
    def hold(self, worker: str, record: FileRecord) -> None:
        self._held[worker] = record

    def release(self, worker: str) -> None:
        self._held.pop(worker, None)

    def held_by(self, worker: str) -> FileRecord | None:
        return self._held.get(worker)

    def in_flight(self) -> int:
        return len(self._in_flight)

    def _terminal(self, record: FileRecord, outcome: Outcome) -> None:
        detail = None
        if self._details is not None:
            detail = {"id": record.id, "name": record.name, "outcome": outcome.value, "dest_key": record.dest_key,
                      "failed_stage": record.failed_stage.value if record.failed_stage else None,
                      "error": record.error, "s3_attempts": record.s3_attempts, "api_attempts": record.api_attempts,
                      "last_stage": record.last_stage.value}
        self._count(outcome, outcome_line(record, outcome), detail)

    def _count(self, outcome: Outcome, line: str, detail: dict[str, Any] | None) -> None:
        self._counts[outcome] += 1
        self._digest += int.from_bytes(hashlib.sha256(line.encode()).digest(), "big")  # mod 2^256 when reported
        if self._details is not None and detail is not None:
            self._details.append(detail)

    # The report ----------------------------------------------------------------------
    def report(self, variant: str, timeline: Timeline, stopped_by: str | None = None) -> Report:
        with self._lock:
            counts = dict(self._counts)
            files = None
            if self._details is not None:
                files = sorted(self._details, key=lambda d: (d.get("id") is None, d.get("id") or 0, d.get("line") or 0))
            return Report(
                variant=variant,
                expected=sum(counts.values()),
                processed=self.processed,
                success=counts[Outcome.SUCCESS],
                failed=counts[Outcome.FAILED],
                cancelled=counts[Outcome.CANCELLED],
                aborted=counts[Outcome.ABORTED],
                invalid=counts[Outcome.INVALID],
                duplicate=counts[Outcome.DUPLICATE],
                digest=f"{self._digest % _MOD:064x}",
                stopped_by=stopped_by,
                errors=sorted(self.errors),
                rejected=[reason for _, reason in self.rejected],
                files=files,
                timing=timeline.to_dict(),
            )
