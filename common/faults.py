"""Deterministic fault injection: ``--fault SPEC``, repeatable.

Grammar (fields separated by ``:``)::

    s3|api:id=N:raise[:times=K]     the copy/upload of file N raises (its first K attempts; default every one)
    s3|api:id=N:hang[:times=K]      the call never returns on its own (bounded only by --stage-timeout)
    s3|api:id=N:slow=F[:times=K]    the call takes F times the file's latency
    s3|api:worker=W|*:after=N:die   worker W (1-based, or every worker) dies - a bug, not a per-file
                                    error - when it takes a file after handling N files
    verifier:after=N:crash          the verifier dies when it takes a file after verifying N
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .model import Stage

FILE_ACTIONS = ("raise", "hang", "slow")


class FaultSpecError(ValueError):
    """A fault spec that does not parse; its message names the spec."""


class InjectedCrash(RuntimeError):
    """Raised by a worker loop (not by per-file work) when a die/crash fault fires."""


@dataclass(frozen=True, slots=True)
class FileFault:
    kind: str  # raise | hang | slow
    times: int | None = None  # None: every attempt
    factor: float = 1.0  # for slow


@dataclass(frozen=True, slots=True)
class WorkerFault:
    worker: int | None  # None: every worker of the stage
    after: int


@dataclass(slots=True)
class FaultPlan:
    specs: tuple[str, ...] = ()
    files: dict[tuple[Stage, int], FileFault] = field(default_factory=dict)
    workers: dict[Stage, list[WorkerFault]] = field(default_factory=dict)
    verifier_after: int | None = None

    @classmethod
    def parse(cls, specs: "tuple[str, ...] | list[str]") -> "FaultPlan":
        plan = cls(specs=tuple(specs))
        for spec in specs:
            plan._add(spec)
        return plan

    def _add(self, spec: str) -> None:
        parts = spec.strip().split(":")
        where, fields = parts[0].lower(), _fields(spec, parts[1:])
        if where == "verifier":
            _expect(spec, fields, {"after", "crash"}, {"after", "crash"})
            self.verifier_after = _int(spec, fields["after"], "after")
            return
        if where not in ("s3", "api"):
            raise FaultSpecError(f"fault {spec!r}: stage must be s3, api or verifier")
        stage = Stage(where)
        if "worker" in fields:
            _expect(spec, fields, {"worker", "after", "die"}, {"worker", "after", "die"})
            worker = None if fields["worker"] == "*" else _int(spec, fields["worker"], "worker", low=1)
            after = _int(spec, fields["after"], "after")
            self.workers.setdefault(stage, []).append(WorkerFault(worker, after))
            return
        if "id" not in fields:
            raise FaultSpecError(f"fault {spec!r}: needs id=N or worker=W")
        kinds = [k for k in FILE_ACTIONS if k in fields]
        if len(kinds) != 1:
            raise FaultSpecError(f"fault {spec!r}: needs exactly one of raise, hang, slow=F")
        _expect(spec, fields, {"id", kinds[0], "times"}, {"id", kinds[0]})
        times = _int(spec, fields["times"], "times", low=1) if "times" in fields else None
        factor = 1.0
        if kinds[0] == "slow":
            try:
                factor = float(fields["slow"])
            except ValueError:
                raise FaultSpecError(f"fault {spec!r}: slow=F needs a number") from None
            if not factor >= 0:
                raise FaultSpecError(f"fault {spec!r}: slow=F needs a number >= 0")
        self.files[(stage, _int(spec, fields["id"], "id"))] = FileFault(kinds[0], times, factor)

    def for_attempt(self, stage: Stage, file_id: int, attempt: int) -> FileFault | None:
        fault = self.files.get((stage, file_id)) if self.files else None
        if fault is None or (fault.times is not None and attempt > fault.times):
            return None
        return fault

    def worker_dies(self, stage: Stage, worker: int, handled: int) -> bool:
        """Whether worker ``worker`` (1-based) dies on taking a file after ``handled`` files."""
        for fault in self.workers.get(stage, ()):
            if (fault.worker is None or fault.worker == worker) and handled >= fault.after:
                return True
        return False

    def verifier_crashes(self, verified: int) -> bool:
        return self.verifier_after is not None and verified >= self.verifier_after


def _fields(spec: str, parts: list[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in parts:
        key, _, value = part.partition("=")
        key = key.strip().lower()
        if not key or key in fields:
            raise FaultSpecError(f"fault {spec!r}: empty or repeated field {part!r}")
        fields[key] = value.strip()
    return fields


def _expect(spec: str, fields: dict[str, str], allowed: set[str], required: set[str]) -> None:
    extra, missing = set(fields) - allowed, required - set(fields)
    if extra or missing:
        what = ", ".join([f"unknown {sorted(extra)}"] * bool(extra) + [f"missing {sorted(missing)}"] * bool(missing))
        raise FaultSpecError(f"fault {spec!r}: {what}")


def _int(spec: str, text: str, name: str, low: int = 0) -> int:
    try:
        value = int(text)
    except ValueError:
        raise FaultSpecError(f"fault {spec!r}: {name}= needs a whole number") from None
    if value < low:
        raise FaultSpecError(f"fault {spec!r}: {name}= must be >= {low}")
    return value
