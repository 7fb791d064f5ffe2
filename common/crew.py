"""Which workers are alive, per stage, and which stages have died (every worker of it dead)."""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from .model import Stage


class Crew:
    """Live counts per stage, changed under the run's lock: a worker thread that dies decrements
    its stage's count and learns, in the same critical section, whether it was the last one."""

    def __init__(self, sizes: dict[Stage, int], lock: AbstractContextManager[Any] | None = None) -> None:
        self._alive = dict(sizes)
        self._lock = lock if lock is not None else nullcontext()
        self.dead: set[Stage] = set()
        self.crashes: list[BaseException] = []

    def alive(self, stage: Stage) -> int:
        return self._alive[stage]

    def died(self, stage: Stage, exc: BaseException) -> bool:
        """A worker of ``stage`` died of ``exc``: True when it was the stage's last live worker."""
        with self._lock:
            self.crashes.append(exc)
            self._alive[stage] -= 1
            if self._alive[stage] > 0:
                return False
            self.dead.add(stage)
            return True

    def declare_dead(self, stage: Stage) -> bool:
        """``stage`` is dead though no worker of it died here (``--broker``: no live consumer
        anywhere): True the first time it is said."""
        with self._lock:
            if stage in self.dead:
                return False
            self.dead.add(stage)
            return True

    def dead_after(self, stage: Stage) -> Stage | None:
        """The first dead stage after ``stage``, if any: a file held at ``stage`` can never finish."""
        if not self.dead:
            return None
        order = list(Stage)
        return next((later for later in order[order.index(stage) + 1:] if later in self.dead), None)
