"""Deterministic fault injection: ``--fault SPEC``, repeatable.

Grammar (fields separated by ``:``)::

    s3|api:FILE:raise[:times=K]     the copy/upload of FILE raises (its first K attempts; default every one)
    s3|api:FILE:hang[:times=K]      the call never returns on its own (bounded only by --stage-timeout)
    s3|api:FILE:slow=F[:times=K]    the call takes F times the file's latency (0 <= F <= 1000)
    s3|api:FILE:die                 the worker that takes FILE dies - a bug, not a per-file error -
                                    and FILE fails with it (a death tied to a file: deterministic)
    s3|api:worker=W|*:after=N:die   worker W (1-based, or every worker) dies - a bug, not a per-file
                                    error - when it takes a file after handling N files (a death
                                    tied to a count: which file it holds depends on scheduling)
    verifier:after=N:crash          the verifier dies when it takes a file after verifying N

FILE is ``id=N`` (the record's id: generated files are ids 1..--files) or, for generated files,
``name=file_100.pdf`` (the name the event lines show; file_100.pdf is id 1).  Numbers are written
with the digits 0-9 only.  ``check`` refuses a fault that can never fire in a run: an id outside
1..--files or a name that is not generated, a worker that does not exist, ``after`` not below the
number of files.  With ``--input`` the ids and the count are unknown until the input is read, so
only the worker numbers are checked; ``name=`` is refused there (give the record's id).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .model import Stage
from .workload import FIRST_NAME_NUMBER, file_name

FILE_ACTIONS = ("raise", "hang", "slow")
MAX_SLOW = 1000.0  # slow=F: at most this many times the file's latency
MAX_COUNT = 10**9  # after=, times=: nothing bigger can happen in a run (--files is at most 10^9)
MAX_ID = (1 << 63) - 1  # ids are 0..2^63-1 (common/source.py)
MAX_WORKER = 1_000_000  # worker=W: --s3-workers/--api-workers are at most this
_NUMBER = re.compile(r"[0-9]{1,20}\Z")
_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]{1,3})?\Z")
_GENERATED_NAME = re.compile(r"file_([0-9]{1,20})\.pdf\Z")


class FaultSpecError(ValueError):
    """A fault spec that does not parse; its message names the spec."""


class InjectedCrash(RuntimeError):
    """Raised by a worker loop (not by per-file work) when a die/crash fault fires."""


class FileDeath(InjectedCrash):
    """``s3|api:id=N:die``: the worker taking file N dies.  Its message names the file, never the
    worker (which worker takes a file depends on scheduling), so reports compare equal."""


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
    deaths: set[tuple[Stage, int]] = field(default_factory=set)  # (stage, file id): s3|api:FILE:die
    _origin: dict[object, str] = field(default_factory=dict, repr=False)  # what each fault's spec was

    @classmethod
    def parse(cls, specs: "tuple[str, ...] | list[str]", generated: bool = True) -> "FaultPlan":
        """Parse ``specs``; ``generated`` is False when files come from ``--input`` (no ``name=``)."""
        plan = cls(specs=tuple(specs))
        for spec in specs:
            plan._add(spec, generated)
        return plan

    def check(self, files: int | None, workers: dict[Stage, int]) -> None:
        """Raise ``FaultSpecError`` for a fault that can never fire: ``files`` generated files
        (None: read from --input, count and ids unknown) and ``workers`` per stage."""
        tied: list[tuple[tuple[Stage, int], object]] = [(key, key) for key in self.files]
        tied += [((stage, file_id), ("die", stage, file_id)) for stage, file_id in self.deaths]
        for (stage, file_id), origin in tied:
            if files is not None and not 1 <= file_id <= files:
                spec = self._origin[origin]
                names = f"file_{FIRST_NAME_NUMBER}.pdf" + (f"..{file_name(files)}" if files > 1 else "")
                raise FaultSpecError(f"fault {spec!r} can never fire: " + (
                    "--files 0 generates no file" if files == 0 else
                    f"the generated files are ids 1..{files} ({names}); name one by id=N or name=file_N.pdf"))
        for stage, faults in self.workers.items():
            for fault in faults:
                spec = self._origin[id(fault)]
                if fault.worker is not None and fault.worker > workers[stage]:
                    count = workers[stage]
                    workers_are = "1 worker" if count == 1 else f"{count} workers, numbered 1..{count}"
                    raise FaultSpecError(f"fault {spec!r} can never fire: the {stage.value} stage has {workers_are}")
                if files is not None and fault.after >= files:
                    raise FaultSpecError(f"fault {spec!r} can never fire: a worker takes at most {files} "
                                         f"file{'s' * (files != 1)} (--files {files}), so after= must be below it")
        if files is not None and self.verifier_after is not None and self.verifier_after >= files:
            raise FaultSpecError(f"fault {self._origin['verifier']!r} can never fire: the verifier sees at most "
                                 f"{files} file{'s' * (files != 1)} (--files {files}), so after= must be below it")

    def _add(self, spec: str, generated: bool) -> None:
        parts = spec.strip().split(":")
        where, fields = parts[0].lower(), _fields(spec, parts[1:])
        if where == "verifier":
            _expect(spec, fields, {"after", "crash"}, {"after", "crash"})
            if self.verifier_after is not None:
                raise FaultSpecError(f"fault {spec!r}: a second verifier fault (one at most)")
            self.verifier_after = _int(spec, fields["after"], "after", high=MAX_COUNT)
            self._origin["verifier"] = spec
            return
        if where not in ("s3", "api"):
            raise FaultSpecError(f"fault {spec!r}: stage must be s3, api or verifier")
        stage = Stage(where)
        if "worker" in fields:
            _expect(spec, fields, {"worker", "after", "die"}, {"worker", "after", "die"})
            worker = None if fields["worker"] == "*" else _int(spec, fields["worker"], "worker", 1, MAX_WORKER)
            after = _int(spec, fields["after"], "after", high=MAX_COUNT)
            fault = WorkerFault(worker, after)
            self.workers.setdefault(stage, []).append(fault)
            self._origin[id(fault)] = spec
            return
        chosen = [k for k in ("id", "name") if k in fields]
        if len(chosen) != 1:
            raise FaultSpecError(f"fault {spec!r}: needs id=N, name=NAME or worker=W" if not chosen else
                                 f"fault {spec!r}: id= or name=, not both")
        if "die" in fields:  # a death tied to a file
            _expect(spec, fields, {chosen[0], "die"}, {chosen[0], "die"})
            death = (stage, _int(spec, fields["id"], "id", high=MAX_ID) if chosen[0] == "id"
                     else _generated_id(spec, fields["name"], generated))
            self.deaths.add(death)
            self._origin[("die", *death)] = spec
            return
        kinds = [k for k in FILE_ACTIONS if k in fields]
        if len(kinds) != 1:
            raise FaultSpecError(f"fault {spec!r}: needs exactly one of raise, hang, slow=F")
        _expect(spec, fields, {chosen[0], kinds[0], "times"}, {chosen[0], kinds[0]})
        times = _int(spec, fields["times"], "times", 1, MAX_COUNT) if "times" in fields else None
        factor = 1.0
        if kinds[0] == "slow":
            text = fields["slow"]
            factor = float(text) if _DECIMAL.match(text) else math.nan
            if not 0 <= factor <= MAX_SLOW:
                raise FaultSpecError(f"fault {spec!r}: slow=F needs a number from 0 to {MAX_SLOW:g} (got {text!r})")
        if chosen[0] == "id":
            file_id = _int(spec, fields["id"], "id", high=MAX_ID)
        else:
            file_id = _generated_id(spec, fields["name"], generated)
        if (stage, file_id) in self.files:
            raise FaultSpecError(f"fault {spec!r}: a second fault for the same file and stage "
                                 f"(already {self._origin[(stage, file_id)]!r})")
        self.files[(stage, file_id)] = FileFault(kinds[0], times, factor)
        self._origin[(stage, file_id)] = spec

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

    def dies_on(self, stage: Stage, file_id: int) -> bool:
        """Whether the worker of ``stage`` that takes file ``file_id`` dies (``id=N:die``)."""
        return (stage, file_id) in self.deaths

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


def _int(spec: str, text: str, name: str, low: int = 0, high: int = MAX_COUNT) -> int:
    if not _NUMBER.match(text):
        raise FaultSpecError(f"fault {spec!r}: {name}= needs a whole number written with the digits 0-9")
    value = int(text)
    if not low <= value <= high:
        shown = {MAX_ID: "2^63-1", MAX_COUNT: "10^9"}.get(high, f"{high:_}")
        raise FaultSpecError(f"fault {spec!r}: {name}= must be from {low} to {shown}")
    return value


def _generated_id(spec: str, name: str, generated: bool) -> int:
    """The id of a generated file's name: file_100.pdf is id 1."""
    if not generated:
        raise FaultSpecError(f"fault {spec!r}: name= names generated files only; with --input, give the "
                             "record's id (id=N)")
    match = _GENERATED_NAME.match(name)
    if match is None or int(match[1]) < FIRST_NAME_NUMBER:
        raise FaultSpecError(f"fault {spec!r}: generated files are named file_{FIRST_NAME_NUMBER}.pdf, "
                             f"file_{FIRST_NAME_NUMBER + 1}.pdf, ... (got {name!r})")
    return int(match[1]) - FIRST_NAME_NUMBER + 1
