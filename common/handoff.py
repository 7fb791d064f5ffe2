"""Hand-offs in batches (``--batch N``): the rules every model's ``_get`` and ``_put`` follow.

With ``--batch 1`` (the default) a worker passes each record on as soon as it has finished it and
takes its input one record at a time: the tutorial's pattern.  With ``--batch N`` each worker
keeps two small buffers, its ``Hands`` (the ``hands`` of its ``me``):

- an **outbox** of records it has finished, handed on together: when it holds ``N``, before the
  worker would wait for input, when the next stage has an idle consumer (one waiting on an empty
  queue), and before the worker checks out - so nothing finished ever sits behind a worker that
  waits, and an idle consumer is never kept waiting;
- an **inbox** (threads only: coroutines take from their queue without a lock, so one at a time
  costs nothing to batch) of records taken in one lock round trip: at most ``N`` and at most its
  fair share of what is queued (``share``), and never past a pill: a batch stops after a pill, so
  a worker never takes a sibling's pill.

What a worker that dies still has in its hands goes back (``Hands.leftovers``): its unread inbox
to the front of its queue (without the pill it took for itself: the dead need none), its outbox on
to the next stage - so a death loses nothing that one-at-a-time hand-offs would not.  An abort
drops both: those files are in flight and the ledger settles them as it settles any other.

Batching changes when records move, never what happens to them: the report is the same for
every ``N`` (only ``timing`` differs).
"""
from __future__ import annotations

from typing import Any

from .model import PILL, FileRecord, Message

MAX_BATCH = 1024  # a bound for --batch: past a few dozen nothing is left to save (docs/performance.md)


class Hands:
    """One worker's hand-off buffers.  Only that worker touches them, so no lock is needed."""

    __slots__ = ("size", "inbox", "outbox", "source", "target")

    def __init__(self, size: int) -> None:
        self.size = size
        self.inbox: list[Message] = []  # taken, not read yet; the next one last (``pop()``)
        self.outbox: list[FileRecord] = []  # finished, not handed on yet; in order
        self.source: Any = None  # the queue the inbox came from
        self.target: Any = None  # the queue (or send end) the outbox goes to

    def hold(self, target: Any, record: FileRecord) -> bool:
        """Keep ``record`` for ``target``; True when the outbox is full and must be handed on now."""
        self.target = target
        self.outbox.append(record)
        return len(self.outbox) >= self.size

    def handed(self) -> list[FileRecord]:
        """Empty the outbox: what the worker hands on now, in order."""
        out, self.outbox = self.outbox, []
        return out

    def took(self, source: Any, batch: list[Message]) -> Message:
        """A batch taken from ``source`` (never empty): keep the rest, read the first."""
        self.source = source
        if len(batch) > 1:
            batch.reverse()
            self.inbox = batch
            return batch.pop()
        return batch[0]

    def leftovers(self) -> tuple[list[Message], list[FileRecord]]:
        """A worker died: (its unread records, first first, without its own pill; its unsent ones)."""
        unread: list[Message] = [m for m in reversed(self.inbox) if m is not PILL]
        self.inbox = []
        return unread, self.handed()


def share(size: int, queued: int, consumers: int) -> int:
    """How many records one consumer takes at once: its fair share of what is queued (so a sibling
    that asks next still finds work), at most ``size``, at least one."""
    return max(1, min(size, -(-queued // max(1, consumers))))


def hands_for(batch: int) -> Hands | None:
    """A worker's buffers under ``--batch batch``; None for one-at-a-time hand-offs (the tutorial's)."""
    return Hands(batch) if batch > 1 else None
