"""Durable runs, the part every state backend shares: rows, the resume rule, batching, identity.

A run with a state store writes one row per terminal outcome.  A row holds everything the
ledger counted for that file (its ``--details`` fields, whether it reached the verifier), so a
resumed run can count the rows an earlier run committed exactly as that run counted them, and
its final report equals an uninterrupted run's: same counts, same digest, same ``processed``,
same ``--details`` list.

Nothing here blocks but ``identity`` (it reads ``--input`` once, before the run).  A backend
(``sqlite_store.py``; a Redis one later) implements the small ``Store`` interface; its methods
block, and each variant waits on them with its own primitive - a writer thread in threads, a
thread hand-off from the event loop in asyncio and anyio - like every other blocking call.
"""
from __future__ import annotations

import hashlib
import json
import time
from array import array
from bisect import bisect_left
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, NamedTuple, Protocol, Sequence, TypeVar

from .config import Config, UsageError
from .model import FileRecord, Outcome, Rejected, Stage, Status
from .source import open_input

if TYPE_CHECKING:
    from .ledger import Ledger

SCHEMA = 1  # the state layout this pillpipe writes and reads; a newer one is refused, never guessed at
BATCH_ROWS = 1000  # a batch is due at this many rows (rows/s per batch size: docs/resume.md) ...
BATCH_SECONDS = 0.1  # ... or this long after its oldest row, whichever comes first

_TEXT: dict[Outcome | Stage | None, str | None] = {member: member.value for enum in (Outcome, Stage) for member in enum}  # .value is slow on the hot path
_TEXT[None] = None
_STAGES = {stage.value: stage for stage in Stage}  # and lookups by dict, not Stage(text), when restoring
_OUTCOMES = {outcome.value: outcome for outcome in Outcome}


class StateError(UsageError):
    """The state cannot serve this run (not SQLite, not pillpipe's, a newer schema, another
    workload, in use by another run): one line on stderr, exit code 2, before any work."""


class StateWriteError(Exception):
    """The state could not be written (disk full, read-only, an I/O error).  The batch that
    failed is not committed; every batch committed before it stands, so the run can stop
    cleanly and be resumed once the state is writable again."""


# Rows ----------------------------------------------------------------------------------
class FileRow(NamedTuple):
    """One file's terminal state, in column order: a ``--details`` entry plus ``verified``."""

    id: int
    name: str
    outcome: str
    dest_key: str | None
    failed_stage: str | None
    error: str | None
    s3_attempts: int
    api_attempts: int
    last_stage: str
    verified: int  # 1 when the file reached the verifier (it counts in ``processed``)

    def record(self) -> FileRecord:
        """The record as it was when it settled: what ``outcome_line`` and the details read."""
        failed_stage = _STAGES[self.failed_stage] if self.failed_stage else None
        last_stage = _STAGES[self.last_stage]
        if self.outcome == "success":
            status = Status.API_UPLOADED
        elif failed_stage is not None:
            status = Status.FAILED
        else:
            status = {Stage.S3: Status.S3_COPIED, Stage.API: Status.API_UPLOADED}.get(last_stage, Status.READY)
        return FileRecord(self.id, self.name, status=status, dest_key=self.dest_key, s3_attempts=self.s3_attempts,
                          api_attempts=self.api_attempts, failed_stage=failed_stage, error=self.error,
                          last_stage=last_stage)


class RejectedRow(NamedTuple):
    """An input line that was never dispatched (invalid or duplicate), keyed by its line number:
    a duplicate carries the id of an earlier file, and an invalid record may have no id at all."""

    line: int
    outcome: str
    id: int | None
    name: str | None
    error: str

    def rejected(self) -> Rejected:
        return Rejected(self.line, Outcome(self.outcome), self.error, self.id, self.name)


Row = FileRow | RejectedRow
_file_row = FileRow._make  # from one tuple: 40% cheaper than FileRow(*args), and this runs once per file


def file_row(record: FileRecord, outcome: Outcome, verified: bool = False) -> FileRow:
    """The row for ``record`` settling as ``outcome`` (``verified``: it reached the verifier)."""
    return _file_row((record.id, record.name, _TEXT[outcome], record.dest_key, _TEXT[record.failed_stage],
                      record.error, record.s3_attempts, record.api_attempts, _TEXT[record.last_stage], int(verified)))


def rejected_row(rejected: Rejected) -> RejectedRow:
    return RejectedRow(rejected.line, rejected.outcome.value, rejected.id, rejected.name, rejected.error)


# Which files a resume works again ------------------------------------------------------
Item = TypeVar("Item", FileRecord, Rejected, FileRecord | Rejected)  # the dispatcher's stream, whichever it is
_KEPT = (Outcome.SUCCESS,)
_KEPT_UNLESS_RETRY = (Outcome.FAILED, Outcome.INVALID, Outcome.DUPLICATE)


def kept_outcomes(retry_failed: bool = False) -> tuple[Outcome, ...]:
    """The terminal states a resume keeps (and so never works again): ``success`` and, unless
    ``--retry-failed``, ``failed``, ``invalid``, ``duplicate``.  Every other file - ``cancelled``,
    ``aborted``, never reached, in flight when the process died (no row) - is worked again."""
    return _KEPT if retry_failed else _KEPT + _KEPT_UNLESS_RETRY


def kept(outcome: Outcome | str, retry_failed: bool = False) -> bool:
    return Outcome(outcome) in kept_outcomes(retry_failed)


class Settled:
    """The files a resumed run skips: every row kept from the runs before it.

    Ids and line numbers are held in sorted ``array('q')`` (8 bytes each, so a million settled
    files cost 8 MB, not the ~70 MB of a ``set``); ids beyond 64 bits, which input records may
    carry, go to a small set."""

    def __init__(self, rows: Iterable[Row] = ()) -> None:
        self._ids, self._lines, self._big_ids = array("q"), array("q"), set[int]()
        self._sorted = True
        for row in rows:
            self.add(row)
        self.freeze()

    def add(self, row: Row) -> None:
        if isinstance(row, RejectedRow):
            values, key = self._lines, row.line
        elif -(1 << 63) <= row.id < (1 << 63):
            values, key = self._ids, row.id
        else:
            self._big_ids.add(row.id)
            return
        if values and values[-1] > key:
            self._sorted = False
        values.append(key)

    def freeze(self) -> None:
        """Sort, once every row is added (a SQLite store yields them sorted: then nothing to do)."""
        if not self._sorted:
            self._ids, self._lines = array("q", sorted(self._ids)), array("q", sorted(self._lines))
            self._sorted = True

    def __len__(self) -> int:
        return len(self._ids) + len(self._lines) + len(self._big_ids)

    def skips(self, item: FileRecord | Rejected) -> bool:
        if isinstance(item, Rejected):
            return _holds(self._lines, item.line)
        if -(1 << 63) <= item.id < (1 << 63):
            return _holds(self._ids, item.id)
        return item.id in self._big_ids

    def gaps(self, first: int, last: int) -> Iterator[tuple[int, int]]:
        """The runs of ids ``first..last`` that no kept row covers, as (first, last) pairs: what a
        drain may cancel as generated ranges without counting a kept file twice."""
        ids, start = self._ids, first
        i = bisect_left(ids, first)
        while i < len(ids) and ids[i] <= last:
            if ids[i] > start:
                yield start, ids[i] - 1
            start = ids[i] + 1
            i += 1
        if start <= last:
            yield start, last

    def unsettled(self, items: Iterable[Item]) -> Iterator[Item]:
        """The dispatcher's stream minus what is settled: what a resumed run works (or rejects)."""
        for item in items:
            if not self.skips(item):
                yield item


def _holds(values: array[int], value: int) -> bool:
    i = bisect_left(values, value)
    return i < len(values) and values[i] == value


# Resuming: the rows of earlier runs count as they counted then --------------------------
def restore(ledger: Ledger, row: Row) -> None:
    """Count one committed row into ``ledger`` through the ledger's own steps, so its counts,
    digest, ``processed`` and details are exactly what the original outcome contributed."""
    if isinstance(row, RejectedRow):
        ledger.reject(row.rejected())
        return
    record, outcome = row.record(), _OUTCOMES[row.outcome]
    if row.verified and outcome not in (Outcome.SUCCESS, Outcome.FAILED):
        raise ValueError(f"only the verifier's verdicts are verified, not {outcome.value}")
    ledger.admit(record)
    if row.verified:
        ledger.verify(record)  # the record's status gives the same verdict, and ``processed`` counts it
    else:
        ledger.settle(record, outcome)


def restore_all(store: "Store", ledger: Ledger) -> Settled:
    """Before a resumed run starts: count every committed row, and return what it must skip.

    A row that does not parse (an outcome or stage no pillpipe writes) is a damaged state:
    ``StateError``, never a half-counted report."""
    settled = Settled()
    for row in store.rows():
        try:
            restore(ledger, row)
        except (KeyError, ValueError, TypeError) as exc:
            raise StateError(f"state {store.path} is damaged: {row!r} ({exc!r})") from None
        settled.add(row)
    settled.freeze()
    return settled


# Batching ------------------------------------------------------------------------------
class Batcher:
    """Decides when the pending rows are due for a commit: ``size`` rows, or ``interval``
    seconds after the oldest pending row, whichever comes first.

    Not locked: its caller guards it (the ledger's lock in threads; one event loop needs none).
    The writer waits ``wait()`` seconds (or until ``add`` says the batch is full), then commits
    ``take()`` through the store."""

    def __init__(self, size: int = BATCH_ROWS, interval: float = BATCH_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if size < 1 or not interval >= 0:
            raise ValueError(f"a batch needs size >= 1 and interval >= 0 (got {size}, {interval})")
        self.size, self.interval, self._clock = size, interval, clock
        self._rows: list[Row] = []
        self._oldest = 0.0

    def add(self, row: Row) -> bool:
        """Queue a row; True when this row filled the batch (wake the writer - once: while it
        commits an earlier batch, the rows after it need not wake it again, each a lock round
        trip and a notify on threads, a raised ``WouldBlock`` on anyio)."""
        if not self._rows:
            self._oldest = self._clock()
        self._rows.append(row)
        return len(self._rows) == self.size

    def wait(self) -> float | None:
        """Seconds until the pending rows are due (0: now); None when nothing is pending."""
        if not self._rows:
            return None
        if len(self._rows) >= self.size:
            return 0.0
        return max(0.0, self._oldest + self.interval - self._clock())

    def due(self) -> bool:
        return self.wait() == 0.0

    def take(self) -> list[Row]:
        """Every pending row, oldest first (more than ``size`` if the writer fell behind)."""
        rows, self._rows = self._rows, []
        return rows

    def __len__(self) -> int:
        return len(self._rows)


# The store's interface -----------------------------------------------------------------
class Store(Protocol):
    """What a run needs from a state backend.  Every method may block.

    Opening one (``SqliteStore.open(path, identity, resume=..., retry_failed=...)``) checks the
    schema and the run's identity, raising ``StateError``; on a resume it first forgets the rows
    that will be worked again (``kept_outcomes``), so within every run the first write per file
    wins."""

    path: str  # where it is, for messages

    def commit(self, rows: Sequence[Row]) -> int:
        """Write ``rows`` atomically, a file's (or line's) first row winning; return how many
        were new.  Raises ``StateWriteError``: then none of ``rows`` is committed."""

    def rows(self) -> Iterator[Row]:
        """Every committed row, streamed (files, then rejected lines)."""

    def summary(self) -> dict[str, Any]:
        """For ``pillpipe status``, one consistent snapshot: ``workload`` (the identity), ``runs``
        (how many runs opened it), ``recorded``, ``processed`` and a count per terminal state
        (``success``, ``failed``, ...; zeros included)."""

    def close(self) -> None: ...


# Run identity --------------------------------------------------------------------------
WORKLOAD_FLAGS = ("files", "input", "seed", "s3_latency", "api_latency", "fail_rate", "retries", "stage_timeout",
                  "faults", "time_scale", "io")


def identity(config: Config) -> dict[str, Any]:
    """The flags that define a run's workload: what every file's outcome line is a function of.

    In: the files (``--files``, or ``--input``'s content: its SHA-256, size and format, not its
    path), ``--seed``, both latencies, ``--fail-rate``, ``--retries``, ``--stage-timeout`` and
    every ``--fault`` in order (two specs for one file and stage are refused by the config).
    ``--time-scale`` only with ``--stage-timeout``: the timeout compares scaled latencies with
    real seconds, so the scale then decides which attempts time out; without one it is pace.
    ``--io`` unless it is the default ``sim``: files a simulated run settled were never copied, so a
    real run must not skip them (and the other way round).
    Out: pace and shape (``--time-scale`` otherwise, ``--retry-backoff``, worker counts,
    ``--queue-size``, ``--shutdown``, ``--loop``, ``--backend``, ``--shutdown-grace``) and
    output (``--json``, ``--details``, ``--quiet``): none of them changes an outcome line, so a
    run killed with one setting may be resumed with another."""
    ident: dict[str, Any] = {
        "seed": config.seed, "s3_latency": list(config.s3_latency), "api_latency": list(config.api_latency),
        "fail_rate": config.fail_rate, "retries": config.retries, "stage_timeout": config.stage_timeout,
        "faults": list(config.faults)}
    if config.input is None:
        ident["files"] = config.files
    else:
        ident["input"] = input_identity(config.input, config.input_format)
    if config.stage_timeout is not None:
        ident["time_scale"] = config.time_scale
    if config.io != "sim":
        ident["io"] = config.io
    return ident


def input_identity(path: str, fmt: str | None) -> dict[str, Any]:
    """``--input``'s identity: its bytes, not its name.  Standard input cannot be read twice,
    so a run that read it is recorded as such and cannot be resumed."""
    if path == "-":
        return {"stdin": True}
    try:
        stream, fmt = open_input(path, fmt)
    except OSError as exc:
        raise UsageError(str(exc)) from None
    digest, size = hashlib.sha256(), 0
    with stream:
        for chunk in iter(lambda: stream.buffer.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return {"sha256": digest.hexdigest(), "bytes": size, "format": fmt}


def check_identity(where: str, stored: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Raise ``StateError`` naming the first flag that differs between the state and this run."""
    if stored.get("input") == {"stdin": True}:
        raise StateError(f"{where} is a run that read standard input: it cannot be resumed (its input cannot "
                         "be checked); start a new state")
    wanted = json.loads(json.dumps(wanted))  # tuples as lists, as stored
    for key in WORKLOAD_FLAGS:
        if stored.get(key) != wanted.get(key):
            raise StateError(f"{where} holds another workload: {_flag(key)} was {_shown(key, stored.get(key))}, "
                             f"now {_shown(key, wanted.get(key))} (resume with the same workload flags, or "
                             "start a new state)")


def workload_args(ident: dict[str, Any]) -> str:
    """An identity as the flags that give it (for ``pillpipe status``)."""
    parts = []
    for key in WORKLOAD_FLAGS:
        if key in ident and ident[key] is not None and ident[key] != []:
            if key == "faults":
                parts += [f"--fault {spec}" for spec in ident[key]]
            else:
                parts.append(f"{_flag(key)} {_shown(key, ident[key])}")
    return " ".join(parts)


def _flag(key: str) -> str:
    return "--fault" if key == "faults" else f"--{key.replace('_', '-')}"


def _shown(key: str, value: Any) -> str:
    if value is None:
        return "sim" if key == "io" else "not given"
    if key == "input":
        if value.get("stdin"):
            return "- (standard input)"
        return f"<{value['format']}, {value['bytes']} bytes, sha256 {value['sha256'][:12]}>"
    if isinstance(value, list) and key != "faults":
        return " ".join(f"{v:g}" for v in value)
    if key == "faults":
        return " ".join(value) if value else "none"
    return f"{value:g}" if isinstance(value, float) else str(value)
