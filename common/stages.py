"""What an S3 copy and an API upload do to a record, written once for every variant.

A stage is a generator: it yields each wait in seconds (``HANG`` for a call that never
returns on its own) and leaves the record copied, uploaded or failed when it ends.  The
variant only does the waiting - ``time.sleep``-like in threads, ``await asyncio.sleep`` in
coroutines - so retries, backoff, timeouts and injected faults behave identically in both.

A per-file error is data: any exception raised while working on one file (an injected
fault, a transient service error, a timeout, even a bug in this module) is caught, counted
as one failed attempt, and retried up to ``retries`` times; then the record is marked
failed and still travels on, so the verifier sees every file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .events import Events
from .faults import FaultPlan
from .model import FileRecord, Stage, Status
from .workload import DEST_BUCKET, Workload, dest_key

HANG = math.inf


class ServiceError(Exception):
    """The simulated S3 or API service answered with an error."""


class StageTimeout(Exception):
    """A copy or upload took longer than ``--stage-timeout``."""


@dataclass(frozen=True, slots=True)
class StagePlan:
    """Everything the stage logic needs besides the record."""

    workload: Workload = field(default_factory=Workload)
    faults: FaultPlan = field(default_factory=FaultPlan)
    retries: int = 0
    retry_backoff: float = 0.0  # seconds before the 2nd attempt, doubling after; times time_scale
    stage_timeout: float | None = None  # real seconds, not multiplied by time_scale
    events: Events = field(default_factory=lambda: Events(None))  # where the event lines go (none: quiet)

    def backoff(self, attempt: int) -> float:
        return self.retry_backoff * (2.0 ** (attempt - 1)) * self.workload.time_scale


def s3_copy(record: FileRecord, plan: StagePlan, worker: str) -> Iterator[float]:
    """Copy one file between buckets: READY -> S3_COPIED with a stable ``dest_key``."""
    return _attempts(Stage.S3, record, plan, worker)


def api_upload(record: FileRecord, plan: StagePlan, worker: str) -> Iterator[float]:
    """Upload one file's metadata: S3_COPIED -> API_UPLOADED."""
    return _attempts(Stage.API, record, plan, worker)


def _copied(record: FileRecord, plan: StagePlan, events: Events, worker: str) -> None:
    record.dest_key = dest_key(plan.workload.seed, record.name)
    record.status = Status.S3_COPIED
    record.last_stage = Stage.S3
    if events.enabled:
        events.s3_stored(worker, record, DEST_BUCKET)


def _uploaded(record: FileRecord, plan: StagePlan, events: Events, worker: str) -> None:
    record.status = Status.API_UPLOADED
    record.last_stage = Stage.API
    if events.enabled:
        events.api_uploaded(worker, record)


_ON_SUCCESS: dict[Stage, Callable[[FileRecord, StagePlan, Events, str], None]] = {
    Stage.S3: _copied,
    Stage.API: _uploaded,
}
_ATTEMPTS_FIELD = {Stage.S3: "s3_attempts", Stage.API: "api_attempts"}


def _attempts(stage: Stage, record: FileRecord, plan: StagePlan, worker: str) -> Iterator[float]:
    events = plan.events
    if record.status is Status.FAILED:  # failed upstream: passes through to the verifier untouched
        return
    attempts, timeout = plan.retries + 1, plan.stage_timeout
    field_name, on_success, copying = _ATTEMPTS_FIELD[stage], _ON_SUCCESS[stage], events.enabled and stage is Stage.S3
    for attempt in range(1, attempts + 1):
        setattr(record, field_name, attempt)
        if copying:
            events.s3_copying(worker, record)
        try:
            delay, error = _attempt(stage, record.id, attempt, plan)
            if timeout is not None and delay > timeout:
                yield timeout
                raise StageTimeout(f"timeout after {timeout:g}s")
            if delay:
                yield delay
            if error is not None:
                raise error
            on_success(record, plan, events, worker)
            record.error = None
            return
        except Exception as exc:  # noqa: BLE001 - a per-file error is data, whatever it is
            record.error = str(exc) or type(exc).__name__
        if events.enabled:
            events.attempt_failed(worker, stage, record, attempt, attempts)
        if attempt < attempts:
            backoff = plan.backoff(attempt)
            if backoff:
                yield backoff
    record.status = Status.FAILED
    record.failed_stage = stage


def _attempt(stage: Stage, file_id: int, attempt: int, plan: StagePlan) -> tuple[float, Exception | None]:
    """How long this attempt takes and the error it ends with, if any."""
    delay = plan.workload.latency(stage, file_id, attempt)
    fault = plan.faults.for_attempt(stage, file_id, attempt)
    if fault is not None:
        if fault.kind == "raise":
            return delay, ServiceError(f"injected {stage.value} error")
        if fault.kind == "hang":
            return HANG, None
        return delay * fault.factor, None
    if plan.workload.fails(stage, file_id, attempt):
        return delay, ServiceError(f"transient {stage.value} error")
    return delay, None
