"""The state store on SQLite (stdlib ``sqlite3``, WAL mode): one file a run writes and resumes.

WAL mode lets other processes read the file while the run writes it (``pillpipe status``), and
a process killed at any instant leaves every committed transaction intact: the next open
replays the WAL.  ``synchronous=NORMAL`` (the default here) makes a commit durable against the
process dying; only a power loss or an OS crash may roll back the last commits, and then those
files are simply worked again on resume.  ``synchronous=FULL`` also survives those, at the cost
of an fsync per commit.

Every method blocks; the store has no lock of its own and must be called by one caller at a
time (the run's single writer), possibly from different threads (``asyncio.to_thread``).
"""
from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from .model import Outcome
from .store import SCHEMA, FileRow, RejectedRow, Row, StateError, StateWriteError, check_identity, kept_outcomes

APPLICATION_ID = 0x70696C6C  # "pill" in the file's header: tells a pillpipe state from any other SQLite file
_I64 = 1 << 63

# ``id`` has no declared type, so SQLite keeps what it is given: an integer, or the decimal text of
# an input id beyond 64 bits (which SQLite cannot hold as an integer).  WITHOUT ROWID makes that
# key the table's own B-tree instead of a second index beside the rowid.  The one CHECK is the
# ledger's rule that only the verifier's verdicts count in ``processed``; checks of the outcome
# and stage names (``IN (...)`` lists) cost 2.5x in rows/s, so those are checked on restore instead.
SCHEMA_SQL = """
CREATE TABLE run (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE files (
    id PRIMARY KEY,
    name TEXT NOT NULL,
    outcome TEXT NOT NULL,
    dest_key TEXT,
    failed_stage TEXT,
    error TEXT,
    s3_attempts INTEGER NOT NULL,
    api_attempts INTEGER NOT NULL,
    last_stage TEXT NOT NULL,
    verified INTEGER NOT NULL CHECK (verified = 0 OR (verified = 1 AND outcome IN ('success', 'failed')))
) WITHOUT ROWID;
CREATE TABLE rejected (
    line INTEGER PRIMARY KEY,
    outcome TEXT NOT NULL,
    id,
    name TEXT,
    error TEXT NOT NULL
);
"""
_INSERT = {"files": "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
           "rejected": "INSERT INTO rejected VALUES (?, ?, ?, ?, ?) ON CONFLICT (line) DO NOTHING"}
# A batch is one statement: its rows travel as one JSON array that SQLite unpacks itself
# (``json_each``), so the whole insert is one ``sqlite3_step``, which Python runs without the GIL.
# The committing thread takes the GIL back once per batch, where ``executemany`` takes it back after
# every row's step: beside a busy event loop (or busy worker threads) each of those waits its turn
# (up to the 5 ms switch interval), and that writer fell tens of thousands of rows behind at zero
# latency.  (Statements of 100 rows each, a multi-row VALUES, cost less CPU - 1.5 us a row against
# 4 - but still take the GIL back once per 100 rows: a writer behind a busy event loop never
# caught up, 75,000 rows pending at a million files.  Measured: docs/resume.md.)
# ``->>`` needs SQLite 3.38+; before, and for a batch holding a NUL (where SQLite's JSON text
# ends), row by row.
_ONE_STEP = sqlite3.sqlite_version_info >= (3, 38, 0)
_INSERT_JSON = {table: f"INSERT INTO {table} SELECT {', '.join(f'value ->> {i}' for i in range(width))} "
                       f"FROM json_each(?) WHERE true ON CONFLICT ({key}) DO NOTHING"
                for table, width, key in (("files", 10, "id"), ("rejected", 5, "line"))}
_WHY = {"SQLITE_FULL": "cannot be written, the disk is full", "SQLITE_READONLY": "cannot be written, it is read-only",
        "SQLITE_IOERR": "cannot be written, an I/O error", "SQLITE_CANTOPEN": "cannot be opened for writing",
        "SQLITE_BUSY": "cannot be written, another process holds it locked", "SQLITE_CORRUPT": "is damaged",
        "SQLITE_NOTADB": "is damaged"}


def _why(exc: sqlite3.Error, default: str) -> str:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return next((text for code, text in _WHY.items() if name.startswith(code)), default)


class SqliteStore:
    """A run's state file.  ``open`` for a run (new or resumed), ``read`` for ``pillpipe status``."""

    def __init__(self, path: str, conn: sqlite3.Connection, lock_fd: int | None = None) -> None:
        self.path, self._conn, self._lock_fd = path, conn, lock_fd

    # Opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str, identity: dict[str, Any], *, resume: bool = False, retry_failed: bool = False,
             synchronous: str = "NORMAL") -> "SqliteStore":
        """Create the state of a new run, or check and reopen an earlier run's (``resume``).

        A new run refuses a file that already holds a run; a resume of a file that does not
        exist (or is empty) starts a new run, so one command can be repeated until it is done.
        Raises ``StateError`` (the file cannot serve this run) or ``StateWriteError`` (it cannot
        be written)."""
        where = f"state {path}"
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA (got {synchronous!r})")
        _writable(path, where)
        lock_fd = _lock(path, where)
        try:
            conn = _connect(path, where)
            store = cls(path, conn, lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise
        try:
            store._prepare(identity, resume, retry_failed, synchronous)
        except StateWriteError as exc:  # before any work: the state cannot serve this run
            store.close()
            raise StateError(str(exc)) from None
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def read(cls, path: str) -> "SqliteStore":
        """Open read-only, beside a run that may be writing it (WAL readers never block it)."""
        where = f"state {path}"
        if not os.path.isfile(path):
            raise StateError(f"{where}: {'is a directory' if os.path.isdir(path) else 'no such file'}")
        uri = Path(path).absolute().as_uri()
        store = cls(path, _connect(uri + "?mode=ro", where, uri=True))
        if not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK) and not _wal_pending(path):
            # On read-only media a WAL reader cannot create the ``-shm`` index it needs; with no WAL
            # content left to replay, the database file alone is the whole state: read it as immutable.
            store.close()
            store = cls(path, _connect(uri + "?immutable=1", where, uri=True))
        try:
            if store._header() == (0, 0) and not store._has_tables():
                raise StateError(f"{where}: an empty file, not a pillpipe state (yet)")
            store._check_header()
        except BaseException:
            store.close()
            raise
        return store

    def _prepare(self, identity: dict[str, Any], resume: bool, retry_failed: bool, synchronous: str) -> None:
        where = f"state {self.path}"
        conn = self._conn
        fresh = self._header() == (0, 0) and not self._has_tables()
        if not fresh:
            self._check_header()
            if not resume:
                raise StateError(f"{where} already holds a run: add --resume to continue it, or choose a new path")
            check_identity(where, self.identity(), identity)
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        with self._writing("the run cannot start"):
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
                raise StateWriteError(f"{where}: cannot switch it to WAL mode (is it on a read-only file system?)")
            conn.execute("BEGIN IMMEDIATE")
            if fresh:
                for statement in SCHEMA_SQL.split(";"):  # not executescript: it would commit first
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO run VALUES ('identity', ?), ('opened', '0')", (json.dumps(identity),))
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA}")
            else:  # what will be worked again is not settled any more: the first write wins again
                keep = ", ".join(f"'{o.value}'" for o in kept_outcomes(retry_failed))
                conn.execute(f"DELETE FROM files WHERE outcome NOT IN ({keep})")
                conn.execute(f"DELETE FROM rejected WHERE outcome NOT IN ({keep})")
            conn.execute("UPDATE run SET value = CAST(value AS INTEGER) + 1 WHERE key = 'opened'")
            conn.execute("COMMIT")

    def _header(self) -> tuple[int, int]:
        try:
            return (self._conn.execute("PRAGMA application_id").fetchone()[0],
                    self._conn.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorname", "") == "SQLITE_NOTADB":
                raise StateError(f"state {self.path}: not a SQLite database ({exc})") from None
            raise StateError(f"state {self.path} {_why(exc, 'cannot be read')} ({exc})") from None

    def _has_tables(self) -> bool:
        with self._reading():
            tables: int = self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            return tables > 0

    def _check_header(self) -> None:
        where = f"state {self.path}"
        application_id, schema = self._header()
        if application_id != APPLICATION_ID:
            raise StateError(f"{where}: a SQLite database, but not a pillpipe state")
        if schema > SCHEMA:
            raise StateError(f"{where}: written by a newer pillpipe (state schema {schema}; this one reads "
                             f"{SCHEMA}): upgrade pillpipe to resume it")
        if schema != SCHEMA:
            raise StateError(f"{where}: state schema {schema} is not supported (this pillpipe reads {SCHEMA})")

    # Writing -----------------------------------------------------------------------------
    def commit(self, rows: Sequence[Row]) -> int:
        """One transaction: every row or none.  A file's first committed row wins."""
        # An id beyond SQLite's 64-bit INTEGER goes in as text (the rows' types say int: hence the ignores).
        files = [row if -_I64 <= row.id < _I64 else row._replace(id=str(row.id))  # type: ignore[arg-type]
                 for row in rows if type(row) is FileRow]
        rejected = [row if row.id is None or -_I64 <= row.id < _I64 else row._replace(id=str(row.id))  # type: ignore[arg-type]
                    for row in rows if type(row) is RejectedRow]
        if len(files) + len(rejected) != len(rows):
            raise TypeError("commit takes FileRow and RejectedRow rows only")
        conn = self._conn
        before = conn.total_changes
        with self._writing("this batch was not committed"):
            try:
                self._insert(files, rejected, _ONE_STEP)
            except UnicodeEncodeError:  # a lone surrogate (a hostile name): SQLite text must be UTF-8
                conn.execute("ROLLBACK")
                self._insert([_storable(row) for row in files], [_storable(row) for row in rejected], False)
        return conn.total_changes - before

    def _insert(self, files: Sequence[Row], rejected: Sequence[Row], one_step: bool) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        for table, batch in (("files", files), ("rejected", rejected)):
            if not batch:
                continue
            text = json.dumps(batch, ensure_ascii=False) if one_step else ""
            if one_step and "\\u0000" not in text:
                conn.execute(_INSERT_JSON[table], (text,))
            else:
                conn.executemany(_INSERT[table], batch)
        conn.execute("COMMIT")

    @contextmanager
    def _writing(self, consequence: str) -> Iterator[None]:
        """Around a write: a SQLite error rolls the transaction back and becomes one clear
        ``StateWriteError`` (what was committed before it stands)."""
        try:
            yield
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:  # SQLite has rolled back on its own (it does on a full disk)
                    pass
            why = _why(exc, "cannot be written")
            kept = "" if why == "is damaged" else "; everything committed before it stands"
            raise StateWriteError(f"state {self.path} {why} ({exc}): {consequence}{kept}") from None

    # Reading -----------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        try:
            ident = json.loads(self._meta("identity"))
        except ValueError:
            ident = None
        if not isinstance(ident, dict):
            raise StateError(f"state {self.path} is damaged: its workload does not parse")
        return ident

    def rows(self) -> Iterator[Row]:
        with self._reading():
            make = FileRow._make
            for values in self._conn.execute("SELECT * FROM files ORDER BY id"):
                if type(values[1]) is bytes or type(values[5]) is bytes or type(values[3]) is bytes:
                    values = _text(values)
                yield make(values) if type(values[0]) is int else make((int(values[0]), *values[1:]))
            for values in self._conn.execute("SELECT * FROM rejected ORDER BY line"):
                values = _text(values)
                if type(values[2]) is str:
                    values = (*values[:2], int(values[2]), *values[3:])
                yield RejectedRow(*values)

    def summary(self) -> dict[str, Any]:
        """One consistent snapshot, even while a run commits: the workload, how many runs opened
        the state, the committed rows per terminal state, and how many reached the verifier."""
        conn = self._conn
        with self._reading():
            conn.execute("BEGIN")  # one read transaction: every number from the same commit
            try:
                counts = dict.fromkeys((o.value for o in Outcome), 0)
                for outcome, count in conn.execute("SELECT outcome, count(*) FROM files GROUP BY outcome UNION ALL "
                                                   "SELECT outcome, count(*) FROM rejected GROUP BY outcome"):
                    counts[outcome] = counts.get(outcome, 0) + count
                processed = conn.execute("SELECT count(*) FROM files WHERE verified = 1").fetchone()[0]
                return {"workload": self.identity(), "runs": int(self._meta("opened")),
                        "recorded": sum(counts.values()), "processed": processed, **counts}
            finally:
                conn.execute("COMMIT")

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """A damaged file (``database disk image is malformed``) is one clear ``StateError``."""
        try:
            yield
        except sqlite3.Error as exc:
            raise StateError(f"state {self.path} {_why(exc, 'cannot be read')} ({exc})") from None

    def _meta(self, key: str) -> str:
        with self._reading():
            row = self._conn.execute("SELECT value FROM run WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise StateError(f"state {self.path} is damaged: no {key} recorded")
        value: str = row[0]  # the column is TEXT: SQLite stores every value as text
        return value

    # Closing -----------------------------------------------------------------------------
    def close(self) -> None:
        """Close; idempotent.  The run's lock goes last, once SQLite holds no lock on the file."""
        conn, self._conn = self._conn, None  # type: ignore[assignment]  # a closed store has no connection
        fd, self._lock_fd = self._lock_fd, None
        try:
            if conn is not None:
                conn.close()
        finally:
            if fd is not None:
                os.close(fd)

    def __enter__(self) -> "SqliteStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _storable(row: Row) -> Row:
    """``row`` with each text SQLite cannot hold (a lone surrogate: not UTF-8) as its
    ``surrogatepass`` bytes, a BLOB that ``rows`` turns back into the same text."""
    values = [_bytes(value) if type(value) is str and not _utf8(value) else value for value in row]
    return FileRow._make(values) if type(row) is FileRow else RejectedRow._make(values)


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(values: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(v.decode("utf-8", "surrogatepass") if type(v) is bytes else v for v in values)


def _writable(path: str, where: str) -> None:
    """A state on read-only media or without write permission: say so before anything else.
    (SQLite writes the file and, for WAL, creates ``-wal`` and ``-shm`` beside it.)"""
    folder = os.path.dirname(os.path.abspath(path))
    for what, target in (("file", path), ("directory", folder)):
        if os.path.exists(target) and not os.access(target, os.W_OK):
            raise StateError(f"{where} cannot be written: its {what} is read-only (a run must write its state; "
                             "pillpipe status can still read it)")


def _wal_pending(path: str) -> bool:
    try:
        return os.path.getsize(path + "-wal") > 0
    except OSError:
        return False


def _lock(path: str, where: str) -> int:
    """One run per state file: an exclusive ``flock`` on the file, held until ``close``.

    It is taken on a descriptor of its own, which stays open until SQLite has closed the file
    (closing any descriptor of a file drops the process's POSIX locks on it, SQLite's included).
    ``flock`` locks are independent of SQLite's POSIX locks, and die with the process."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:  # no such directory, a directory, no permission
        raise StateError(f"{where}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StateError(f"{where} is in use by another run (wait for it to end, or choose another path)") from None
    return fd


def _connect(target: str, where: str, uri: bool = False) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(target, uri=uri, isolation_level=None, check_same_thread=False, timeout=5)
    except sqlite3.Error as exc:
        raise StateError(f"{where}: {exc}") from None
    return conn
