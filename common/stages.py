"""What an S3 copy and an API upload do to a record, written once for every variant.

A stage is a generator of steps: it yields each wait in seconds (``HANG`` for a call that never
returns on its own) and, with real I/O (``--io real``), each call to make (``common/calls.py``:
an ``S3Copy``, an ``ApiPost``); it leaves the record copied, uploaded or failed when it ends.  The
variant's ``_wait_through`` only does the waiting - ``time.sleep``-like in threads, ``await
asyncio.sleep`` in coroutines - and makes each call with its own clients, answering it with the
result or the ``CallError`` (``Steps`` sends it back into the stage), so retries, backoff, timeouts and injected faults behave
identically in every model, simulated or real.  When nothing can wait or fail (simulated I/O, no
latency, no failure: ``StagePlan.instant``) a stage does its work at once and returns ``DONE``, no
step at all: the per-file work at zero latency runs no generator.

Every attempt's latency and failure comes from one place, ``calls.hint_for``: the simulation waits
the hinted delay and raises the hinted error; real I/O sends the hint to our servers, which sleep
and answer 503 (or never) as asked; a server that is not ours ignores hints, so the core plays the
hinted fault itself there.

A per-file error is data: any exception raised while working on one file (an injected
fault, a transient service error, a timeout, a failed call, even a bug in this module) is caught,
counted as one failed attempt, and retried up to ``retries`` times; then the record is marked
failed and still travels on, so the verifier sees every file.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Generator, Iterator, ParamSpec, Union

from .calls import (HANG as HANG_HINT, NO_HINT, UNAVAILABLE, ApiGet, Call, CallError, S3Head, call_for, hint_for,
                    verify_calls)
from .events import Events
from .faults import FaultPlan
from .model import FileRecord, Stage, Status
from .workload import DEST_BUCKET, Workload, dest_key

if TYPE_CHECKING:
    from .realio import RealIO

HANG = math.inf
P = ParamSpec("P")

Step = Union[float, Call]  # what a stage yields: seconds to wait, or a call to make
Gen = Generator[Step, Any, Any]  # a stage's generator: a call's result is sent in, its CallError thrown in

# The members a stage sets and compares once per file, looked up once: on Python 3.11 each
# ``Status.X`` is a descriptor call (~50 ns), a tenth of what the fast path costs per stage.
_FAILED, _S3_COPIED, _API_UPLOADED, _S3, _API = Status.FAILED, Status.S3_COPIED, Status.API_UPLOADED, Stage.S3, Stage.API


class Steps:
    """A stage's steps, as the variant's ``_wait_through`` takes them: iterate for each one (a wait in
    seconds, or a call to make); after a call, ``answer`` it with its result or its ``CallError``,
    which the stage receives (or raises) where it yielded the call."""

    __slots__ = ("_gen", "_answer")

    def __init__(self, gen: Gen) -> None:
        self._gen = gen
        self._answer: Any = None

    def __iter__(self) -> "Steps":
        return self

    def __next__(self) -> Step:
        answer, self._answer = self._answer, None
        if isinstance(answer, BaseException):
            return self._gen.throw(answer)
        return self._gen.send(answer)

    def answer(self, outcome: Any) -> None:
        self._answer = outcome

    def waits(self) -> Iterator[float]:
        """The steps of a stage that makes no calls (simulated I/O): each a wait in seconds."""
        for step in self:
            if not isinstance(step, float):
                raise TypeError(f"a simulated stage made a call: {step!r}")
            yield step


class _Done(Steps):
    """The steps of a stage that is already done: none (the fast path's answer)."""

    __slots__ = ()

    def __init__(self) -> None:
        pass

    def __iter__(self) -> Iterator[Step]:  # type: ignore[override]
        return iter(())

    def waits(self) -> Iterator[float]:
        return iter(())


DONE: Steps = _Done()
"""What a stage returns when it did everything at once: no step to wait through."""


def stepped(stage: Callable[P, Gen]) -> Callable[P, Steps]:
    """A generator function whose calls give ``Steps``."""

    @functools.wraps(stage)
    def steps(*args: P.args, **kwargs: P.kwargs) -> Steps:
        return Steps(stage(*args, **kwargs))

    return steps


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
    io: "RealIO | None" = None  # real I/O (--io real): the calls' timeout, hints, and what they measured
    instant: bool = field(init=False, repr=False, compare=False)  # no attempt can wait or fail: the fast path

    def __post_init__(self) -> None:
        workload = self.workload
        object.__setattr__(self, "instant", self.io is None and workload.fail_rate == 0 and not self.faults.files
                           and workload.waits_nothing())

    def backoff(self, attempt: int) -> float:
        return self.retry_backoff * (2.0 ** (attempt - 1)) * self.workload.time_scale


def s3_copy(record: FileRecord, plan: StagePlan, worker: str) -> Steps:
    """Copy one file between buckets: READY -> S3_COPIED with a stable ``dest_key``."""
    if plan.instant:
        return _copy_now(record, plan, worker)
    return Steps(_attempts(_S3, record, plan, worker))


def api_upload(record: FileRecord, plan: StagePlan, worker: str) -> Steps:
    """Upload one file's metadata: S3_COPIED -> API_UPLOADED."""
    if plan.instant:
        return _upload_now(record, plan, worker)
    return Steps(_attempts(_API, record, plan, worker))


# The fast path: when no attempt can wait or fail (simulated I/O, no latency, no failure rate, no
# file fault: ``StagePlan.instant``), the first attempt succeeds at once.  It is done straight away,
# as ``_attempts`` would do it, and the stage returns ``DONE``: no generator to run.  Should it
# raise all the same (a name the key cannot be made of), the general path takes the file from the
# start, so a per-file error stays data, counted and retried exactly as there.

def _copy_now(record: FileRecord, plan: StagePlan, worker: str) -> Steps:
    if record.status is _FAILED:
        return DONE
    try:
        key = dest_key(plan.workload.seed, record.name)
    except Exception:  # noqa: BLE001 - the general path fails it, as data
        return Steps(_attempts(_S3, record, plan, worker))
    record.s3_attempts = 1
    events = plan.events
    if events.enabled:
        events.s3_copying(worker, record)
    record.dest_key, record.status, record.last_stage, record.error = key, _S3_COPIED, _S3, None
    if events.enabled:
        events.s3_stored(worker, record, DEST_BUCKET)
    return DONE


def _upload_now(record: FileRecord, plan: StagePlan, worker: str) -> Steps:
    if record.status is _FAILED:
        return DONE
    record.api_attempts = 1
    record.status, record.last_stage, record.error = _API_UPLOADED, _API, None
    if plan.events.enabled:
        plan.events.api_uploaded(worker, record)
    return DONE


def verify_checks(record: FileRecord, plan: StagePlan) -> Gen:
    """The verifier's checks of a file that reached API_UPLOADED: none with simulated I/O; with real
    I/O, the object is in the destination bucket with the expected size and metadata, and the API
    has the record (each check retried like a stage's call).  A check that fails fails the file at
    the verify stage."""
    if plan.io is None or record.status is not Status.API_UPLOADED:
        return
    for check in verify_calls(record, plan.workload.seed):
        problem = yield from _check(check, plan)
        if problem is not None:
            record.status, record.failed_stage, record.error = Status.FAILED, Stage.VERIFY, problem
            return


def _copied(record: FileRecord, plan: StagePlan, events: Events, worker: str) -> None:
    record.dest_key = dest_key(plan.workload.seed, record.name)
    record.status = _S3_COPIED
    record.last_stage = _S3
    if events.enabled:
        events.s3_stored(worker, record, DEST_BUCKET)


def _uploaded(record: FileRecord, plan: StagePlan, events: Events, worker: str) -> None:
    record.status = _API_UPLOADED
    record.last_stage = _API
    if events.enabled:
        events.api_uploaded(worker, record)


_ON_SUCCESS: dict[Stage, Callable[[FileRecord, StagePlan, Events, str], None]] = {
    Stage.S3: _copied,
    Stage.API: _uploaded,
}
_ATTEMPTS_FIELD = {Stage.S3: "s3_attempts", Stage.API: "api_attempts"}


def _attempts(stage: Stage, record: FileRecord, plan: StagePlan, worker: str) -> Gen:
    events = plan.events
    if record.status is _FAILED:  # failed upstream: passes through to the verifier untouched
        return
    attempts = plan.retries + 1
    field_name, on_success, copying = _ATTEMPTS_FIELD[stage], _ON_SUCCESS[stage], events.enabled and stage is _S3
    attempt_steps = _simulated if plan.io is None else _real
    for attempt in range(1, attempts + 1):
        setattr(record, field_name, attempt)
        if copying:
            events.s3_copying(worker, record)
        try:
            yield from attempt_steps(stage, record, attempt, plan)
            on_success(record, plan, events, worker)
            record.error = None
            return
        except Exception as exc:  # noqa: BLE001 - a per-file error is data, whatever it is
            record.error = str(exc) or type(exc).__name__
            if plan.io is not None:
                plan.io.failed(exc)
        if events.enabled:
            events.attempt_failed(worker, stage, record, attempt, attempts)
        if attempt < attempts:
            backoff = plan.backoff(attempt)
            if backoff:
                yield backoff
    record.status = _FAILED
    record.failed_stage = stage


def _simulated(stage: Stage, record: FileRecord, attempt: int, plan: StagePlan) -> Gen:
    """One simulated attempt: wait what the hint says, then end as it says."""
    hint = hint_for(plan.workload, plan.faults, stage, record.id, attempt)
    delay, timeout = (HANG if hint.fault == HANG_HINT else hint.delay), plan.stage_timeout
    if timeout is not None and delay > timeout:
        yield float(timeout)
        raise StageTimeout(f"timeout after {timeout:g}s")
    if delay:
        yield delay
    if hint.fault == UNAVAILABLE:
        raise ServiceError(f"{hint.reason} {stage.value} error")


def _real(stage: Stage, record: FileRecord, attempt: int, plan: StagePlan) -> Gen:
    """One real attempt: the call, with its hint for our servers to play (the delay, a 503, a hang
    the client's timeout ends).  A server that is not ours ignores hints, so the hinted fault is
    played here instead, exactly as simulated (its latency is the network's)."""
    io = plan.io
    assert io is not None
    hint = hint_for(plan.workload, plan.faults, stage, record.id, attempt)
    if not io.hints:
        if hint.fault == HANG_HINT:
            yield float(io.timeout)
            raise StageTimeout(f"timeout after {io.timeout:g}s")
        if hint.fault == UNAVAILABLE:
            raise ServiceError(f"{hint.reason} {stage.value} error")
        hint = NO_HINT
    yield from _timed(call_for(stage, record, plan.workload.seed, hint), io)


def _timed(call: Call, io: "RealIO") -> Gen:
    """Yield ``call`` and return its result (a ``CallError`` is raised here); its latency is noted."""
    started = time.perf_counter()
    try:
        result = yield call
    except CallError:
        io.called(call.stage, time.perf_counter() - started)
        raise
    io.called(call.stage, time.perf_counter() - started)
    return result


def _check(check: S3Head | ApiGet, plan: StagePlan) -> Gen:
    """One verifier check, retried like a stage's call: what is wrong, or None."""
    io = plan.io
    assert io is not None
    problem: str | None = None
    for attempt in range(1, plan.retries + 2):
        try:
            found = yield from _timed(check, io)
            return check.problem(found)
        except CallError as exc:
            problem = str(exc)
            io.failed(exc)
        if attempt <= plan.retries:
            backoff = plan.backoff(attempt)
            if backoff:
                yield backoff
    return problem
