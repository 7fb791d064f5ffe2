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
from typing import Any, Callable, Iterable

from .model import FileRecord, Outcome, Rejected, Stage, Status
from .report import Report
from .store import Row, file_row, rejected_row
from .timing import Timeline
from .workload import file_name

_MOD = 1 << 256
REJECTED_SHOWN = 10  # rejected records whose reason the report keeps (the rest are only counted)
DETAILS_RANGE = 100_000  # --details lists at most this many files of one not-dispatched range (~15 MB of JSON)
_TEXT: dict[Outcome | Stage | None, str] = {member: member.value for enum in (Outcome, Stage) for member in enum}  # .value is slow on the hot path
_TEXT[None] = ""
# Members compared once per file, looked up once (on Python 3.11 each ``Outcome.X`` is a descriptor call)
_SUCCESS, _FAILED, _CANCELLED, _API_UPLOADED = Outcome.SUCCESS, Outcome.FAILED, Outcome.CANCELLED, Status.API_UPLOADED


def outcome_line(record: FileRecord, outcome: Outcome) -> str:
    """One file's outcome, canonically: what the digest is made of."""
    return (f"{record.id}\t{record.name}\t{_TEXT[outcome]}\t{record.dest_key or ''}\t{_TEXT[record.failed_stage]}\t"
            f"{record.error or ''}\t{record.s3_attempts}\t{record.api_attempts}\t{_TEXT[record.last_stage]}")


def outcome_term(record: FileRecord, outcome: Outcome) -> int:
    """What one file adds to the digest when it settles as ``outcome``: what the ledger adds, and what
    anything rebuilding a digest from settled rows must add (a never-started file: its closed form)."""
    if outcome is _CANCELLED and _never_started(record):
        return never_started_term(record.id, record.id, record.error)
    return _term(outcome_line(record, outcome))


def _term(line: str) -> int:
    """One outcome line's term of the digest: its SHA-256 as a number (the digest sums them mod 2^256)."""
    return _from_bytes(_sha256(line.encode()).digest(), "big")


_sha256, _from_bytes = hashlib.sha256, int.from_bytes  # looked up once: this runs once per file


# A generated file cancelled before any stage started it (the not-dispatched remainder of a stopped
# run) adds base(error) + A*id + B*id^2 + C*id^3 to the digest instead of its line's SHA-256: the
# same value whichever way it was cancelled, and a range of ids sums in closed form, so a trillion
# not-dispatched files are counted, never looped over.  Still a function of the outcome line alone.
_A, _B, _C = (_term(f"pillpipe: never-started file, power {k}") for k in (1, 2, 3))
_BASES: dict[str | None, int] = {}


def _base(error: str | None) -> int:
    base = _BASES.get(error)
    if base is None:
        base = _term(f"cancelled\t{error or ''}")
        if len(_BASES) < 64:
            _BASES[error] = base
    return base


def _power_sums(n: int) -> tuple[int, int, int]:
    """Sums of i, i^2 and i^3 for i in 1..n."""
    s1 = n * (n + 1) // 2
    return s1, n * (n + 1) * (2 * n + 1) // 6, s1 * s1


def never_started_term(first: int, last: int, error: str | None) -> int:
    """The digest terms of generated files ``first..last`` cancelled before dispatch, summed."""
    (a1, a2, a3), (b1, b2, b3) = _power_sums(first - 1), _power_sums(last)
    return (last - first + 1) * _base(error) + _A * (b1 - a1) + _B * (b2 - a2) + _C * (b3 - a3)


def _never_started(record: FileRecord) -> bool:
    """A generated file cancelled before any stage touched it (its outcome line says only id and error)."""
    return (record.s3_attempts == 0 and record.api_attempts == 0 and record.dest_key is None
            and record.failed_stage is None and record.last_stage is Stage.DISPATCH and record.id > 0
            and record.name == file_name(record.id))


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
        self._sink: Callable[[Row], None] | None = None

    def keep(self, sink: Callable[[Row], None]) -> None:
        """From now on, hand every terminal state to ``sink`` as a row too (``--state``: the
        journal), under the lock, in the order they settle."""
        self._sink = sink

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
            if self._sink is not None:
                self._sink(rejected_row(rejected))

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

    def cancel_range(self, first: int, last: int, error: str | None = None) -> None:
        """Generated files ``first..last``, never dispatched because of a shutdown or a dead stage,
        end cancelled: counted in one step (no record is made), whatever their number.  With
        ``--details`` each is listed, up to ``DETAILS_RANGE`` (the rest is said in ``errors``)."""
        count = last - first + 1
        if count <= 0:
            return
        with self._lock:
            self._counts[Outcome.CANCELLED] += count
            self._digest += never_started_term(first, last, error)
            if self._details is not None:
                listed = min(count, DETAILS_RANGE)
                self._details.extend(
                    {"id": i, "name": file_name(i), "outcome": "cancelled", "dest_key": None, "failed_stage": None,
                     "error": error, "s3_attempts": 0, "api_attempts": 0, "last_stage": "dispatch"}
                    for i in range(first, first + listed))
                if listed < count:
                    self.errors.append(f"--details: files {first + listed}..{last} (cancelled, never dispatched) "
                                       "are counted but not listed")

    # Terminal states -----------------------------------------------------------------
    def verify(self, record: FileRecord) -> Outcome:
        """The verifier's verdict on a record that reached it."""
        outcome = _SUCCESS if record.status is _API_UPLOADED else _FAILED
        with self._lock:
            self.processed += 1
            if self._in_flight.pop(record.id, None) is not None:
                self._terminal(record, outcome, verified=True)
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

    def readmit(self, record: FileRecord) -> None:
        """A record taken back from a broker's queue (``--broker``, an abort): in flight here unless
        this process already holds it - a copy its worker gave back, less advanced than its own."""
        with self._lock:
            self._in_flight.setdefault(record.id, record)

    def pass_on(self, record: FileRecord) -> None:
        """``record`` leaves this process for another (``--broker``), which settles it."""
        with self._lock:
            self._in_flight.pop(record.id, None)

    def settle_remaining(self) -> set[int]:
        """At the end of any run: whatever is still in flight was never finished.

        A file no S3 worker ever started is cancelled; one that had started is aborted (it
        keeps its last completed stage).  Returns the ids settled here."""
        with self._lock:
            remaining = list(self._in_flight.values())
        settled = set()
        for record in remaining:
            started = record.s3_attempts > 0 or record.last_stage is not Stage.DISPATCH
            if self.settle(record, Outcome.ABORTED if started else Outcome.CANCELLED):
                settled.add(record.id)
        return settled

    # Which worker holds which file (each worker writes only its own entry: no lock needed) --
    def hold(self, worker: str, record: FileRecord) -> None:
        self._held[worker] = record

    def release(self, worker: str) -> None:
        self._held.pop(worker, None)

    def held_by(self, worker: str) -> FileRecord | None:
        return self._held.get(worker)

    def held(self) -> list[tuple[str, FileRecord]]:
        """(worker, file) for every file a worker holds now; safe to call from another thread."""
        return list(self._held.items())

    def in_flight(self) -> int:
        return len(self._in_flight)

    def settled(self) -> int:
        """How many files have reached a terminal state so far (a progress view's count)."""
        return sum(self._counts.values())

    def _terminal(self, record: FileRecord, outcome: Outcome, verified: bool = False) -> None:
        if self._sink is not None:
            self._sink(file_row(record, outcome, verified))
        self._counts[outcome] += 1
        self._digest += outcome_term(record, outcome)  # mod 2^256 when reported
        if self._details is not None:
            self._details.append(
                {"id": record.id, "name": record.name, "outcome": outcome.value, "dest_key": record.dest_key,
                 "failed_stage": record.failed_stage.value if record.failed_stage else None,
                 "error": record.error, "s3_attempts": record.s3_attempts, "api_attempts": record.api_attempts,
                 "last_stage": record.last_stage.value})

    def _count(self, outcome: Outcome, line: str, detail: dict[str, Any]) -> None:
        self._counts[outcome] += 1
        self._digest += _term(line)  # mod 2^256 when reported
        if self._details is not None:
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
