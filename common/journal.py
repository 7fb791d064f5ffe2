"""One run's durable state (``--state``): the ledger's rows, batched and committed while it runs.

The ledger hands every terminal state to ``Journal.sink`` (under its lock); the rows wait in a
``Batcher`` until a batch is due (``BATCH_ROWS`` rows, or ``BATCH_SECONDS`` after the oldest one),
and a writer commits it through the store.  The writer is the variant's, like every other blocking
wait: a thread in threads; a task that hands each commit to a thread (``asyncio.to_thread``,
``anyio.to_thread.run_sync``) in asyncio and anyio, so a commit never blocks the event loop.  It
asks ``batch()`` for the rows due, commits them with ``commit()`` (the only blocking call), and
sleeps ``idle()`` seconds or until the sink wakes it (the first row of a batch, a full batch, the
run's end).  It ends by its own flag (``stop``) once it has committed what is pending: a commit is
never cancelled half-way, so nothing runs on after the writer.

Without a writer (the sequential reference, or the benchmarks' ``--inline-commit``), the sink
commits a due batch itself, in the worker that settled the file: the naive way, which in an event
loop stalls every coroutine for the length of the commit (``naive``: one durable transaction, an
fsync, per file, as SQLite's defaults would have it; ``batched``: the same batches as the
writer's).  Whatever is pending when the run ends is committed by ``close``, after the event
loop is gone.

On a broker (``--broker``, ``acks``) a worker acks a record only once the row of the file it
settled is committed: it asks ``after`` to be woken, the writer calls ``written`` after each
commit (on its own thread or loop), and a row still ``pending`` then was not committed.

A commit that fails (a full disk, an I/O error) is kept, not raised: the run stops like a drain
(``on_failure``), the rows settled from then on are not written, and every batch committed before
it stands.  A file counts as settled for a resume only once its row is committed.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable, Iterator

from .config import Config
from .events import Events
from .sqlite_store import SqliteStore
from .store import Batcher, FileRow, Item, Row, Settled, StateWriteError, Store, identity, restore_all

BEHIND = 16  # batches pending at once: the writer commits holding the ledger's lock (threads wait).
# Not fewer: at zero latency the writer is always a few batches behind, and a commit under the lock
# runs SQLite's insert (off the GIL, on the other core) while every worker waits for it.


class Journal:
    """The state of one run, or nothing (no ``--state``: every method is then a no-op)."""

    def __init__(self, store: Store | None = None, lock: AbstractContextManager[Any] | None = None,
                 on_failure: Callable[[str], None] | None = None, inline: bool = False,
                 batcher: Batcher | None = None, acks: bool = False) -> None:
        self.store = store
        self.settled = Settled()  # what earlier runs settled: a resumed run skips it
        self.failure: str | None = None  # why the state could not be written (then nothing more is)
        self._lock = lock if lock is not None else nullcontext()
        self._on_failure = on_failure
        self._inline = inline
        self._batcher = batcher if batcher is not None else Batcher()
        self._behind = BEHIND * self._batcher.size  # a batch this big: the writer fell behind
        self._wake: Callable[[], None] | None = None  # the writer's, while it runs
        self._had_writer = False  # once a writer ran, only it and ``close`` commit
        self._stopping = False
        self._failed: str | None = None  # set by ``commit`` on whatever thread ran it; announced by ``_check``
        self._acks = acks  # a worker waits for its file's row before it acks the record (``after``; --broker)
        self._unwritten: dict[int, int] = {}  # file id -> its rows taken by the sink and not yet committed
        self._waiting: dict[int, list[Callable[[], None]]] = {}  # file id -> who waits for its row (``after``)

    @classmethod
    def open(cls, config: Config, ledger: Any, lock: AbstractContextManager[Any] | None = None,
             on_failure: Callable[[str], None] | None = None, events: Events | None = None) -> "Journal":
        """The journal of a run with ``config``: opens (or resumes) ``config.state`` and, on a
        resume, counts every committed row into ``ledger`` first; then the ledger's rows flow to
        it.  Blocks (it reads the state); raises ``StateError`` before any work."""
        if config.state is None:
            return cls()
        naive = config.inline_commit == "naive"  # the benchmarks' naive commit: a durable transaction per file
        store = SqliteStore.open(config.state, identity(config), resume=config.resume, retry_failed=config.retry_failed,
                                 synchronous="FULL" if naive else "NORMAL")
        journal = cls(store, lock, on_failure, inline=config.inline_commit is not None,
                      batcher=Batcher(size=1) if naive else None)
        try:
            if config.resume:
                journal.settled = restore_all(store, ledger)
        except BaseException:
            store.close()
            raise
        if len(journal.settled) and events is not None and events.enabled:
            events.notice(f"Resuming {config.state}: {len(journal.settled):,} files settled by earlier runs are "
                          "kept; working the rest")
        ledger.keep(journal.sink)
        return journal

    # The dispatcher's side --------------------------------------------------------------
    def unsettled(self, items: Iterator[Item]) -> Iterator[Item]:
        """The dispatcher's stream minus what earlier runs settled (unchanged for a new run)."""
        return self.settled.unsettled(items) if len(self.settled) else items

    def unsettled_ranges(self, first: int, last: int) -> Iterator[tuple[int, int]]:
        """Generated ids ``first..last`` minus what earlier runs settled, as ranges (a drain cancels
        the never-dispatched rest in ranges; a kept file must not be counted again)."""
        return self.settled.gaps(first, last) if len(self.settled) else iter([(first, last)])

    # The ledger's side (called under the ledger's lock) ----------------------------------
    def sink(self, row: Row) -> None:
        """A file (or rejected line) reached its terminal state: queue its row for the next commit."""
        if self._acks and isinstance(row, FileRow):  # its worker waits for it before the ack (``after``)
            self._unwritten[row.id] = self._unwritten.get(row.id, 0) + 1
        if self._failed is not None or self.failure is not None:
            return  # the state cannot be written any more: the run is stopping
        batcher = self._batcher
        full = batcher.add(row)
        wake = self._wake
        if wake is not None:
            if full or len(batcher) == 1:  # the row that fills a batch, or the first of one (its interval starts)
                wake()
        elif not self._had_writer and (full or batcher.due()):
            self._write(batcher.take())  # no writer: commit here, blocking this worker (and its loop)
            self._check()

    # The writer's side -------------------------------------------------------------------
    def attach(self, wake: Callable[[], None]) -> "Journal | None":
        """A writer starts: from now on the sink calls ``wake`` when a batch may be due.  Returns
        the journal it writes, or None when there is nothing for a writer to do."""
        if self.store is None or self._inline:
            return None
        self._wake, self._had_writer = wake, True
        return self

    def batch(self) -> list[Row] | None:
        """The writer's next step: the rows due for a commit now ([] when none is due yet), or
        None when it is done (stopped with nothing pending, or the state failed)."""
        if not self._check():
            return None
        with self._lock:
            stopping = self._stopping
            rows = self._batcher.take() if stopping or self._batcher.due() else []
        return None if stopping and not rows else rows

    def idle(self) -> float | None:
        """How long the writer may sleep before asking again (None: until the sink wakes it)."""
        with self._lock:
            return 0.0 if self._stopping else self._batcher.wait()

    def commit(self, rows: list[Row]) -> None:
        """Commit one batch: the one blocking call (a writer thread, or a thread an event loop
        hands it to).  A failure is kept for the run to stop on, never raised.

        A batch of ``BEHIND`` batches' rows or more means the writer fell behind the workers: it commits
        it holding the ledger's lock, so the threads that settle files wait until it is written
        (backpressure: memory stays flat).  One event loop has no lock to hold, and its loop must
        never wait on the disk: there the one-statement commit (sqlite_store.py) keeps up."""
        if len(rows) >= self._behind:
            with self._lock:
                self._write(rows)
        else:
            self._write(rows)

    def written(self, rows: list[Row]) -> None:
        """The writer committed ``rows`` (called on the writer's own thread or event loop, after
        ``commit``): whoever waits for one of their files (``after``) goes on.  A commit that
        failed releases every waiter: it finds its row still unwritten (``pending``)."""
        if not self._acks:
            return
        with self._lock:
            if self._failed is None:
                for row in rows:
                    if isinstance(row, FileRow) and (left := self._unwritten.get(row.id, 0) - 1) >= 0:
                        if left:
                            self._unwritten[row.id] = left
                        else:
                            del self._unwritten[row.id]
            ready = [i for i in self._waiting if self._failed is not None or i not in self._unwritten]
            wakes = [wake for i in ready for wake in self._waiting.pop(i)]
        for wake in wakes:
            wake()

    def after(self, file_id: int, wake: Callable[[], None]) -> bool:
        """Call ``wake`` once file ``file_id``'s row is committed (by the writer, from its thread
        or loop): True when it waits for that, False (``wake`` dropped) when no row of it is pending."""
        with self._lock:
            if file_id not in self._unwritten:
                return False
            if self._failed is not None:
                return False
            self._waiting.setdefault(file_id, []).append(wake)
            return True

    def pending(self, file_id: int) -> bool:
        """Whether a row of file ``file_id`` was settled here and is not committed (a failed commit)."""
        with self._lock:
            return file_id in self._unwritten

    def _write(self, rows: list[Row]) -> None:
        if self._failed is not None or self.store is None:
            return
        try:
            self.store.commit(rows)
        except StateWriteError as exc:
            self._failed = str(exc)

    def stop(self) -> None:
        """The run's workers are done: the writer commits what is pending, then ends."""
        with self._lock:
            self._stopping = True
            wake, self._wake = self._wake, None
        if wake is not None:
            wake()

    # The end of the run --------------------------------------------------------------------
    def close(self) -> None:
        """Commit what is left (the rows settled at the end of the run) and close the state.
        Called once every worker and the event loop are gone, so it blocks nobody."""
        if self.store is None:
            return
        try:
            with self._lock:
                rows = self._batcher.take()
            if rows:
                self._write(rows)
            self._check()
        finally:
            self.store.close()

    def _check(self) -> bool:
        """Announce a failed commit once (on the caller's thread); False once the state failed."""
        if self._failed is not None and self.failure is None:
            self.failure = self._failed
            if self._on_failure is not None:
                self._on_failure(self.failure)
        return self.failure is None

