"""How a stage learns that its stream has ended: the termination strategies, as rules.

Each variant supplies the primitives (put a pill, shut a queue down, cancel a task); the rules
of every strategy - who ends a stream, with how many markers, what a worker does on one - live
here once, so the threaded and asyncio variants cannot drift apart.

=================  ==========================================  ==================================
strategy           who ends a stage's input stream              breaks when
=================  ==========================================  ==================================
pills              the coordinator joins every producer, then  a pill count is wrong; a consumer
                   puts one pill per live consumer (tutorial)   dies and its pill is never taken
relay              the coordinator puts ONE pill; each worker   a worker dies before putting the
                   puts it back before it exits (the stdlib     pill back (its siblings wait on)
                   ThreadPoolExecutor's trick)
last-out           the last producer of a stage to exit puts    the "last one out" count is wrong
                   the next stage's pills (pyper); nobody       (a dead worker never checks out:
                   waits on a join to do it                     here the coordinator notices)
queue-shutdown     the coordinator calls ``Queue.shutdown()``    Python < 3.13; ``immediate=True``
                   once the producers are gone; getters raise   would drop what is queued
                   ``ShutDown`` when the queue is empty (3.13+)
cancel             asyncio only: ``await queue.join()`` (every   a worker dies holding an item
                   item marked done), then cancel the idle      (its ``task_done`` never comes)
                   workers: the asyncio docs' own recipe
=================  ==========================================  ==================================
"""
from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from .model import Stage

STRATEGIES = ("pills", "relay", "last-out", "queue-shutdown", "cancel")
DEFAULT = "pills"
NEXT = {Stage.DISPATCH: Stage.S3, Stage.S3: Stage.API, Stage.API: Stage.VERIFY}


def unsupported(strategy: str, variant: str, loop: str = "asyncio") -> str | None:
    """Why ``variant`` cannot run ``strategy`` (or event ``loop``) here, or None when it can."""
    if loop != "asyncio" and variant != "asyncio":
        return f"--loop {loop} applies to the asyncio variant only"
    if strategy != DEFAULT and variant.startswith("anyio"):
        return "--shutdown applies to the threaded and asyncio variants: anyio ends a stream by closing its last send clone"
    if strategy == "queue-shutdown" and sys.version_info < (3, 13):
        return f"--shutdown queue-shutdown needs Python 3.13+ (Queue.shutdown); this is {sys.version.split()[0]}"
    if strategy == "cancel" and variant != "asyncio":
        return f"--shutdown cancel is asyncio only: {variant} workers cannot be cancelled"
    return None


class Shutdown:
    """One run's termination strategy: the rules, and the last-out bookkeeping."""

    def __init__(self, strategy: str, members: dict[Stage, int], lock: AbstractContextManager[Any] | None) -> None:
        self.strategy = strategy
        self.relay = strategy == "relay"
        self.last_out = strategy == "last-out"
        self.marks_done = strategy == "cancel"  # consumers call task_done() for queue.join()
        self._inside = dict(members)
        self._ended: set[Stage] = set()
        self._lock = lock if lock is not None else nullcontext()

    def pills_for(self, alive: int) -> int:
        """How many pills the one who ends a stream puts for ``alive`` live consumers (``cancel``
        only puts pills as its fallback, when a consumer died and ``queue.join()`` never ends)."""
        if self.strategy == "queue-shutdown":
            return 0
        return min(alive, 1) if self.relay else alive

    def check_out(self, stage: Stage) -> Stage | None:
        """A producer of ``stage`` leaves.  Under last-out, the last one to leave gets back the
        stage whose stream it must end; otherwise None."""
        if not self.last_out:
            return None
        with self._lock:
            self._inside[stage] -= 1
            if self._inside[stage] > 0:
                return None
            self._ended.add(NEXT[stage])
            return NEXT[stage]

    def coordinator_ends(self, stage: Stage) -> bool:
        """Whether the coordinator ends ``stage``'s input stream after joining its producers:
        always, except under last-out when the last producer already did (if it died instead,
        the coordinator steps in, so a dead worker never hangs the run)."""
        return stage not in self._ended
