"""The timing section of a report: wall time, busy time, pills and exits.  Equality ignores it."""
from __future__ import annotations

import time
from typing import Any

from .handoff import Hands
from .model import FileRecord, Stage

_clock = time.perf_counter  # read twice per file by each worker: looked up once


class WorkerClock:
    """One worker: who it is (name, stage, 1-based index) and its own numbers.  Only that worker
    writes them, so no lock is needed.  The variants' worker loops call it ``me``."""

    __slots__ = ("name", "stage", "index", "files", "busy", "started_at", "pill_at", "exited_at", "working",
                 "hands", "ended", "_began", "_timeline", "_spans")

    def __init__(self, timeline: "Timeline", name: str, stage: Stage, index: int = 1) -> None:
        self.name, self.stage, self.index, self._timeline, self._spans = name, stage, index, timeline, timeline.spans
        self.files, self.busy = 0, 0.0
        self.started_at = timeline.now()  # the worker's clock is made when the worker first runs
        self.pill_at: float | None = None
        self.exited_at: float | None = None
        self.working = False  # took a message and has not asked for the next one yet
        self.hands: Hands | None = None  # its hand-off buffers under --batch N > 1 (common/handoff.py)
        self.ended: float | None = None  # the clock when it last finished a file (the verifier's: the last verified)
        self._began = 0.0

    def begin(self, record: FileRecord) -> None:
        self._began = _clock()

    def end(self, record: FileRecord) -> None:
        now = self.ended = _clock()
        self.files += 1
        self.busy += now - self._began
        if self._spans is not None:
            start = self._timeline.start
            self._spans.append((self.name, self.stage.value, record.id, self._began - start, now - start))

    def holding_for(self) -> float:
        """Seconds since this worker took the file it holds (a drain's "waiting for" line)."""
        return _clock() - self._began

    def pill(self) -> None:
        self.pill_at = self._timeline.now()

    def exited(self) -> None:
        self.exited_at = self._timeline.now()


class Timeline:
    """Seconds since the run started, per worker and per stage; spans only with ``trace``."""

    def __init__(self, trace: bool = False) -> None:
        self.start = time.perf_counter()
        self.workers: dict[str, WorkerClock] = {}
        self.pills_put: dict[str, list[float]] = {}
        self.spans: list[tuple[str, str, int, float, float]] | None = [] if trace else None
        self.wall: float | None = None

    def now(self) -> float:
        return _clock() - self.start

    @property
    def last_verified(self) -> float | None:
        """When the last file was verified: the verifier's last finished file (no clock read of its own)."""
        ends = [clock.ended for clock in self.workers.values() if clock.stage is Stage.VERIFY and clock.ended is not None]
        return max(ends) - self.start if ends else None

    def worker(self, name: str, stage: Stage, index: int = 1) -> WorkerClock:
        clock = self.workers[name] = WorkerClock(self, name, stage, index)
        return clock

    def pills_sent(self, stage: Stage, at: float | None = None) -> None:
        """The coordinator starts putting the pills for ``stage`` (now, or ``at``: when it began)."""
        self.pills_put.setdefault(stage.value, []).append(self.now() if at is None else at)

    def last_exit(self, stage: Stage) -> float | None:
        """When the last worker of ``stage`` exited (None while one has not, or none ran)."""
        clocks = [c for c in self.workers.values() if c.stage is stage]
        exits = [c.exited_at for c in clocks if c.exited_at is not None]
        return max(exits) if exits and len(exits) == len(clocks) else None

    def finish(self) -> None:
        self.wall = self.now()

    def to_dict(self) -> dict[str, Any]:
        stages: dict[str, dict[str, Any]] = {}
        for clock in self.workers.values():
            s = stages.setdefault(clock.stage.value, {"workers": 0, "files": 0, "busy_s": 0.0, "finished_s": None,
                                                      "pills_put_s": self.pills_put.get(clock.stage.value), "pills_s": []})
            s["workers"] += 1
            s["files"] += clock.files
            s["busy_s"] += clock.busy
            if clock.pill_at is not None:
                s["pills_s"].append(clock.pill_at)
            if clock.exited_at is not None:
                s["finished_s"] = max(s["finished_s"] or 0.0, clock.exited_at)
        exits = [c.exited_at for c in self.workers.values() if c.exited_at is not None]
        tail = None
        last_verified = self.last_verified
        if exits and last_verified is not None:
            tail = max(exits) - last_verified
        out: dict[str, Any] = {
            "wall_s": self.wall if self.wall is not None else self.now(),
            "last_verified_s": last_verified,
            "shutdown_tail_s": tail,
            "stages": stages,
            "workers": {c.name: {"stage": c.stage.value, "files": c.files, "busy_s": c.busy,
                                 "started_s": c.started_at, "pill_s": c.pill_at,
                                 "exited_s": c.exited_at} for c in self.workers.values()},
        }
        if self.spans is not None:
            out["spans"] = self.spans
        return out
