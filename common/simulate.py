"""The ideal: a discrete-event simulation of the pipeline with zero overhead.

It replays the same deterministic workload the variants run - the same worker counts, FIFO
queues, bounded queues honoured (a producer blocks on a full queue until a consumer takes
an item), and the same per-file waits, taken from the shared stage generators in
``common.stages`` - but every hand-off, dispatch and verification costs nothing.  What it
gives is the best makespan any implementation could reach, and each file's completion time;
efficiency = ideal makespan / measured makespan.

Timers are not free either: ``asyncio.sleep`` rounds every wait up to the next millisecond
and a thread's timed wait overshoots by ~0.1 ms.  ``TimerModel`` describes a runtime's
overshoot (fitted from measured sleeps by the benchmark harness) and ``simulate(..., timer=)``
applies it to every single wait, giving a *calibrated* ideal: what a perfect pipeline on
that runtime's timer would do, so a coarse timer is never mistaken for a slow framework.

Pure Python, no threading or asyncio: it lives in the shared core.  Worker deaths and hangs
without ``--stage-timeout`` are not modelled (a hang is an infinite wait).
"""
from __future__ import annotations

import heapq
import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable, Iterator, Sequence

from .config import Config
from .model import FileRecord, Stage
from .stages import HANG, StagePlan, api_upload, s3_copy
from .workload import generate_files



@dataclass(frozen=True)
class TimerModel:
    """How long a runtime really waits when asked for ``d`` seconds.

    ``actual(d) = ceil(d / quantum) * quantum + offset`` when ``quantum`` > 0 (a timer that rounds
    up, like asyncio's millisecond selector timeout), else ``d + offset``.  A zero wait is not a
    timer at all and stays zero.
    """

    quantum: float = 0.0
    offset: float = 0.0

    def actual(self, delay: float) -> float:
        if delay <= 0 or delay == HANG:
            return delay
        base = delay
        if self.quantum > 0:
            base = math.ceil(delay / self.quantum - 1e-9) * self.quantum
        return base + self.offset

    @classmethod
    def fit(cls, samples: Iterable[tuple[float, float]], quanta: Sequence[float] = (0.0, 0.001)) -> "TimerModel":
        """Fit (requested, measured) sleep pairs: pick the rounding quantum that explains them best
        (least spread of the residual), offset = median residual."""
        pairs = [(d, a) for d, a in samples if d > 0]
        if not pairs:
            return cls()
        best: tuple[float, float, float] | None = None
        for q in quanta:
            probe = cls(q, 0.0)
            residuals = [a - probe.actual(d) for d, a in pairs]
            median = statistics.median(residuals)
            spread = statistics.median(abs(r - median) for r in residuals)
            if median < -1e-5:  # the timer fired before the rounded-up time: it does not round
                spread = math.inf
            if best is None or spread < best[0] - 1e-7:
                best = (spread, q, median)
        assert best is not None
        return cls(best[1], max(0.0, best[2]))

    def to_dict(self) -> dict[str, float]:
        return {"quantum_s": self.quantum, "offset_s": self.offset}


@dataclass
class Simulation:
    """The ideal run.  Times are seconds from the start; ``None`` for a file that never finished."""

    makespan: float
    completed: dict[int, float]  # file id -> when it was verified
    s3: dict[int, tuple[float, float]] = field(default_factory=dict)  # file id -> (start, end)
    api: dict[int, tuple[float, float]] = field(default_factory=dict)

    def latencies(self) -> list[float]:
        """Per file: from its S3 copy starting to its verification (the same measure the harness takes)."""
        return [done - self.s3[fid][0] for fid, done in self.completed.items() if fid in self.s3]


def stage_waits(stage: Stage, record: FileRecord, plan: StagePlan,
                timer: Callable[[float], float] | None = None) -> float:
    """Total time one file's stage waits, from the shared stage generator (retries, backoff,
    timeouts and faults included); the record is advanced exactly as a worker would."""
    step = s3_copy if stage is Stage.S3 else api_upload
    total = 0.0
    for delay in step(record, plan, "").waits():
        total += timer(delay) if timer is not None else delay
    return total


def simulate(config: Config, records: Iterable[FileRecord] | None = None,
             timer: TimerModel | Callable[[float], float] | None = None) -> Simulation:
    """The ideal makespan for ``config``'s workload (generated files unless ``records`` given)."""
    plan = config.stage_plan()
    fn = timer.actual if isinstance(timer, TimerModel) else timer
    files = generate_files(config.files) if records is None else iter(records)

    def work() -> Iterator[tuple[FileRecord, Callable[[Stage], float]]]:
        for record in files:
            yield record, partial(stage_waits, record=record, plan=plan, timer=fn)

    return run_pipeline(work(), (config.s3_workers, config.api_workers), config.queue_size)


_Item = tuple[FileRecord, Callable[[Stage], float]]  # a file and its ``waits``


def run_pipeline(items: Iterator[tuple[FileRecord, Callable[[Stage], float]]], workers: tuple[int, int],
                 capacity: int) -> Simulation:
    """Dispatcher -> q0 -> S3 workers -> q1 -> API workers -> q2 -> verifier, every hand-off free.

    ``items`` yields (record, waits) where ``waits(stage)`` is called once per stage, in pipeline
    order, when a worker starts the file (so the stage logic runs in the same order as for real).
    A queue of ``capacity`` > 0 holds at most that many items; a producer finding it full blocks,
    and blocked producers are served first come, first served.
    """
    stages = (Stage.S3, Stage.API)
    queues: list[deque[_Item]] = [deque(), deque()]  # items waiting for an S3 / API worker
    blocked: list[deque[tuple[str, _Item]]] = [deque(), deque()]  # (producer, item) waiting for room in queue k
    idle = list(workers)
    events: list[tuple[float, int, int, _Item]] = []  # (time, seq, stage index, item)
    seq = 0
    spans: list[dict[int, tuple[float, float]]] = [{}, {}]
    completed: dict[int, float] = {}
    source = iter(items)
    dispatcher_blocked = False
    exhausted = False
    now = 0.0

    def full(k: int) -> bool:
        return capacity > 0 and len(queues[k]) >= capacity

    def settle() -> None:
        nonlocal seq, dispatcher_blocked, exhausted
        moved = True
        while moved:
            moved = False
            for k in (1, 0):  # downstream first: what frees room propagates upstream in the same instant
                while idle[k] and queues[k]:
                    item = queues[k].popleft()
                    idle[k] -= 1
                    record, waits = item
                    duration = waits(stages[k])
                    spans[k][record.id] = (now, now + duration)
                    seq += 1
                    heapq.heappush(events, (now + duration, seq, k, item))
                    moved = True
                while blocked[k] and not full(k):
                    producer, item = blocked[k].popleft()
                    queues[k].append(item)
                    if producer == "dispatcher":
                        dispatcher_blocked = False
                    else:
                        idle[k - 1] += 1  # an S3 worker whose put just went through
                    moved = True
            while not dispatcher_blocked and not exhausted:
                try:
                    item = next(source)
                except StopIteration:
                    exhausted = True
                    break
                if full(0):
                    blocked[0].append(("dispatcher", item))
                    dispatcher_blocked = True
                else:
                    queues[0].append(item)
                moved = True

    settle()
    while events:
        now = events[0][0]
        while events and events[0][0] == now:
            _, _, k, item = heapq.heappop(events)
            if k == 1:  # the API upload is done; the verifier takes it at once
                completed[item[0].id] = now
                idle[1] += 1
            elif full(1):
                blocked[1].append(("s3", item))
            else:
                queues[1].append(item)
                idle[0] += 1
        settle()
    makespan = max(completed.values(), default=0.0)
    return Simulation(makespan, completed, spans[0], spans[1])
