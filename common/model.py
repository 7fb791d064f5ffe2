"""The file record, its terminal outcomes, and the poison pill."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Union


class Status(str, enum.Enum):
    """Where a record is on its way through the pipeline (the tutorial's statuses)."""

    READY = "READY"
    S3_COPIED = "S3_COPIED"
    API_UPLOADED = "API_UPLOADED"
    FAILED = "FAILED"


class Outcome(str, enum.Enum):
    """The terminal states.  Every file ends in exactly one of them."""

    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"  # never started because of shutdown
    ABORTED = "aborted"  # in flight at a hard abort
    INVALID = "invalid"  # a malformed input record
    DUPLICATE = "duplicate"  # an input record whose id was seen before


class Stage(str, enum.Enum):
    """The stages in pipeline order: ``list(Stage)`` is the order files travel in."""

    DISPATCH = "dispatch"
    S3 = "s3"
    API = "api"
    VERIFY = "verify"


@dataclass(slots=True, eq=False)
class FileRecord:
    """One file, enriched as it moves: READY -> S3_COPIED (dest_key) -> API_UPLOADED."""

    id: int
    name: str
    size: int | None = None
    source_bucket: str | None = None
    source_key: str | None = None
    status: Status = Status.READY
    dest_key: str | None = None
    s3_attempts: int = 0
    api_attempts: int = 0
    failed_stage: Stage | None = None
    error: str | None = None
    last_stage: Stage = Stage.DISPATCH  # the last stage completed


@dataclass(slots=True, frozen=True)
class Rejected:
    """An input record that is never dispatched: invalid or duplicate, with its line number."""

    line: int
    outcome: Outcome
    error: str
    id: int | None = None
    name: str | None = None


class _Pill(enum.Enum):
    """The poison pill's type: exactly one value, compared by identity, never ``None``.  An enum of
    one member, so ``message is PILL`` also narrows a ``Message`` to a ``FileRecord`` for a type
    checker, and pickling keeps the singleton."""

    PILL = "PILL"

    def __repr__(self) -> str:
        return "PILL"


PILL: Final = _Pill.PILL

Message = Union[FileRecord, _Pill]
"""What travels on every queue: a record, or the pill that ends a consumer."""
