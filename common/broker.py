"""The broker's shared core: what does not block when the queues between stages live in Redis.

The variants' ``broker`` modules own the blocking client calls (``redis.Redis`` in threads,
``redis.asyncio`` in coroutines); everything they share lives here, once: the URL check, the key
names of a run, how a record and the pill travel as bytes, the Lua scripts (as text), the lease
rules and the rows of the Redis ledger.  Nothing here imports a client library.

Key layout of one run (``{RUN}`` is a Redis hash tag: every key of a run lands in one slot)::

    pillpipe:{RUN}:queue:STAGE            list  producers LPUSH; consumers take from the right
    pillpipe:{RUN}:processing:STAGE:W     list  what worker W has taken and not yet acked (<= 1 item)
    pillpipe:{RUN}:workers:STAGE          zset  worker id -> lease deadline (ms, by the broker's clock)
    pillpipe:{RUN}:ledger:rows            hash  row key -> JSON row (first write wins)
    pillpipe:{RUN}:ledger:counts          hash  outcome -> count, "processed" -> count
    pillpipe:{RUN}:config                 string the run's workload as JSON, written once by its coordinator
    pillpipe:{RUN}:ended:STAGE            string set once STAGE's stream has ended (a late joiner reads a pill)
    pillpipe:{RUN}:errors                 list  what went wrong in any process (a dead worker), for the report
    pillpipe:{RUN}:coordinator            string the coordinating process's lease (expires TTL after its last beat)
    pillpipe:{RUN}:aborted                string set once the run aborted: every worker process's heartbeat reads it

The reliable queue: a consumer takes an item with an atomic move into its own processing list
(``LMOVE``/``BLMOVE queue processing RIGHT LEFT``) and removes it (``LREM``) only once the file has
been passed on.  If it dies meanwhile, its lease runs out and any live process moves what it held
back to the consuming end of the queue (``reclaim``): the file is worked again (at-least-once),
and the ledger, first write wins per file, keeps exactly one terminal state.

Lease rules: a worker registers with a deadline ``now + ttl`` (the broker's ``TIME``, never a
worker's clock, so machines need not agree on the time); its process renews it every
``ttl / 3``.  A worker is live while its deadline has not passed.  ``reclaim`` takes every
registered worker whose deadline has passed, pushes the records it held back onto its stage's
queue (the pills it held are dropped: the count of pills follows the live consumers), and
unregisters it.  A worker that finds itself unregistered (it stalled longer than its lease and was
reclaimed) has lost its lease: it must stop, since its file went to a sibling.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import socket
from typing import Any, Iterable
from urllib.parse import urlsplit

from .config import SetupError, UsageError
from .ledger import outcome_line, outcome_term, rejected_line
from .model import PILL, FileRecord, Message, Outcome, Rejected, Stage, Status
from .stop import ABORT_BOUND

SCHEMES = ("redis", "rediss", "unix")
STAGES = (Stage.S3, Stage.API, Stage.VERIFY)  # the stages with an input queue
TTL = 5.0  # seconds: a worker's lease; renewed every TTL / 3
BLOCK = 1.0  # seconds one BLMOVE blocks before the client looks again (and checks the run)
MARGIN = 2.0  # seconds the socket waits beyond a blocking call before it calls the broker gone
RETRIES = 3  # reconnection attempts per call before the broker counts as gone (backoff <= 0.5 s) ...
CONNECTIONS = 100_000  # a client's pool: one connection per worker blocked in a take (redis-py 8's default
# of 100 made the 101st blocked worker of a process fail "Too many connections"); the server's maxclients
# (10,000 by default) is the real bound, over every process of a run
RETRY_EVERY = 0.375  # ... mid-run, as many more as --broker-wait allows, about this far apart (0.25-0.5 s)
ORPHAN_LOOKS = 3  # a worker process's heartbeats that found no coordinator's lease, in a row, before it leaves
PILL_BYTES = b"PILL"  # never valid JSON for a record, which is an object: no record can collide
_RUN_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MOD = 1 << 256


class BrokerError(SetupError):
    """The broker cannot be reached, went away, or holds what is not ours: one line, no traceback
    (a ``SetupError``: the command line says it in one line and exits 69)."""

    exit_code = 69  # EX_UNAVAILABLE (sysexits.h): for the command line when it wires a broker in


def coordinator_gone(run: str, ttl: float) -> str:
    """Why the workers of a process leave when their run's coordinator is gone (one line)."""
    return (f"the coordinator of run {run} is gone (its lease ran out {ttl:g} s after its last heartbeat, the run "
            "never ended): these workers left")


def coordinator_aborted(run: str) -> str:
    """Why the workers of a process abort when their run's coordinator aborted it (one line)."""
    return f"the coordinator of run {run} aborted it"


def run_lost(url: str, run: str) -> str:
    """Why a coordinator stops when its run's workload is no longer on the broker (one line)."""
    return (f"the broker {shown(url)} no longer holds run {run}: it restarted without persistence (or the run's "
            "keys were deleted), and the queues and outcomes went with it")


class LeaseLost(BrokerError):
    """This worker's lease ran out and its items went to its siblings: it must stop."""


# The URL and the run's keys ---------------------------------------------------------------
def check_url(url: str) -> str:
    """``url`` if it names a Redis server (``redis://HOST:PORT/DB``, ``rediss://``, ``unix://``),
    else a one-line UsageError."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"--broker {url!r}: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise UsageError(f"--broker {url!r}: not a Redis URL (expected redis://HOST:PORT/DB)")
    if parts.scheme == "unix":
        if not parts.path:
            raise UsageError(f"--broker {url!r}: a unix:// URL needs the socket's path")
        return url
    if not parts.hostname:
        raise UsageError(f"--broker {url!r}: no host (expected redis://HOST:PORT/DB)")
    if port == 0:
        raise UsageError(f"--broker {url!r}: port 0 is not a server's port")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise UsageError(f"--broker {url!r}: the database must be a number, not {db!r}")
    return url


def shown(url: str) -> str:
    """The URL as messages show it: without a password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def worker_id(name: str) -> str:
    """A worker's id across machines: ``HOST/PID/NAME`` (``S3-Worker-1`` runs in many processes)."""
    return f"{socket.gethostname()}/{os.getpid()}/{name}"


@dataclasses.dataclass(frozen=True)
class Keys:
    """Every key of one run, under ``prefix``; a run id is 1-64 of ``[A-Za-z0-9._-]``."""

    run: str
    prefix: str = "pillpipe"

    def __post_init__(self) -> None:
        if not _RUN_ID.fullmatch(self.run):
            raise UsageError(f"--run {self.run!r}: a run id is 1-64 letters, digits, '.', '_' or '-'")

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.run}}}"

    def queue(self, stage: Stage) -> str:
        return f"{self.base}:queue:{stage.value}"

    def processing(self, stage: Stage, worker: str = "") -> str:
        """Worker ``worker``'s processing list; with no worker, the prefix the scripts append one to."""
        return f"{self.base}:processing:{stage.value}:{worker}"

    def workers(self, stage: Stage) -> str:
        return f"{self.base}:workers:{stage.value}"

    @property
    def rows(self) -> str:
        return f"{self.base}:ledger:rows"

    @property
    def counts(self) -> str:
        return f"{self.base}:ledger:counts"

    @property
    def config(self) -> str:
        return f"{self.base}:config"

    def ended(self, stage: Stage) -> str:
        return f"{self.base}:ended:{stage.value}"

    @property
    def errors(self) -> str:
        return f"{self.base}:errors"

    @property
    def coordinator(self) -> str:
        """The coordinating process's lease: set with a TTL, renewed by its heartbeat."""
        return f"{self.base}:coordinator"

    @property
    def aborted(self) -> str:
        """Set once the coordinator aborted the run: the worker processes abort too."""
        return f"{self.base}:aborted"

    @property
    def pattern(self) -> str:
        """Matches every key of the run (for ``SCAN``), and nothing of another run."""
        return f"{self.base}:*"


# Messages as bytes ----------------------------------------------------------------------
_FIELDS = tuple(f.name for f in dataclasses.fields(FileRecord))


def encode(message: Message) -> bytes:
    """A record as compact JSON (ASCII, so any name survives), the pill as ``PILL_BYTES``.

    JSON, never pickle: whatever reads the broker must not run what it finds there."""
    if message is PILL:
        return PILL_BYTES
    record: FileRecord = message
    fields = {name: getattr(record, name) for name in _FIELDS}
    for name in ("status", "failed_stage", "last_stage"):
        if fields[name] is not None:
            fields[name] = fields[name].value
    return json.dumps(fields, separators=(",", ":")).encode()


def decode(raw: bytes, where: str = "the broker") -> Message:
    """The inverse of ``encode``; anything else on a queue is a BrokerError naming the key."""
    if raw == PILL_BYTES:
        return PILL
    try:
        values = json.loads(raw)
        values["status"] = Status(values["status"])
        values["last_stage"] = Stage(values["last_stage"])
        if values["failed_stage"] is not None:
            values["failed_stage"] = Stage(values["failed_stage"])
        return FileRecord(**values)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BrokerError(f"{where} holds {bytes(raw[:40])!r}, which is not a pillpipe message ({exc})") from None


# Waiting rules (the variants do the waiting) ------------------------------------------------
def block_for(remaining: float | None) -> float:
    """How long the next BLMOVE may block: ``BLOCK``, or less when the caller's timeout is near."""
    return BLOCK if remaining is None else max(0.01, min(BLOCK, remaining))


def full_backoff(attempt: int) -> float:
    """A bounded queue is full: Redis cannot block a push, so wait 1 ms, 2 ms, ... at most 50 ms."""
    return min(0.001 * (1 << min(attempt, 6)), 0.05)


def socket_timeout() -> float:
    """A reply may take a BLMOVE's ``BLOCK`` plus ``MARGIN``; no reply by then: the broker is gone."""
    return BLOCK + MARGIN


def retries_for(wait: float) -> int:
    """Reconnection attempts that span about ``wait`` seconds (``--broker-wait``): a broker restarted
    within it - with persistence, its keys intact - lets the run go on.  At the start a client checks
    the broker with ``RETRIES`` only (a broker that is not there is said in about a second)."""
    return RETRIES + math.ceil(wait / RETRY_EVERY)


def backoff() -> Any:
    """The clients' wait between reconnection attempts (redis-py's equal-jitter backoff, 50 ms up to
    0.5 s): one policy for both models and the ledger's client."""
    from redis.backoff import EqualJitterBackoff

    return EqualJitterBackoff(cap=0.5, base=0.05)


def heartbeat_every(ttl: float) -> float:
    return ttl / 3


ABORT_LOOK = 0.05  # seconds between two looks of an aborting coordinator at the worker processes


def abort_reach(ttl: float) -> float:
    """How long a coordinating process waits, once it has aborted its run, for the worker processes
    to abort too and leave the queues: a heartbeat for each to read the run's aborted key,
    ``ABORT_BOUND`` for its workers to stop (it gives up the stuck ones), a heartbeat more for its
    rows and acks.  Longer than a lease: a killed worker process's files come back meanwhile."""
    return 2 * heartbeat_every(ttl) + ABORT_BOUND


def lease_lost(error: Exception) -> bool:
    """True if a script refused a worker because its lease was gone."""
    return str(error).startswith("LEASE_LOST")


# The Lua scripts --------------------------------------------------------------------------
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: queue, processing, workers; ARGV: worker id.  What the worker already holds first (a reply
# lost on the way, or the same worker back), else the oldest item, moved into its processing list.
TAKE = """
if not redis.call('ZSCORE', KEYS[3], ARGV[1]) then
  return redis.error_reply('LEASE_LOST ' .. ARGV[1] .. ' is not registered (it left, or its lease ran out)')
end
local held = redis.call('LINDEX', KEYS[2], -1)
if held then return held end
return redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
"""

# KEYS: queue; ARGV: maxsize, item.  1 if pushed, 0 if the queue is full.
PUT = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[2])
return 1
"""

# KEYS: workers; ARGV: ttl ms, worker ids.  Registers (or renews) every worker.
REGISTER = _NOW + """
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i]) end
return #ARGV - 1
"""

# KEYS: workers; ARGV: ttl ms, worker ids.  Renews the workers still registered; returns the others.
RENEW = _NOW + """
local lost = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
"""

# Shared by RECLAIM and LEAVE: give the records in list `key` back to the consuming end of
# queue `q`, the oldest nearest that end; drop pills; delete the list.  Returns how many went back.
_GIVE_BACK = """
local function give_back(key, q, pill)
  local items = redis.call('LRANGE', key, 0, -1)
  local n = 0
  for _, item in ipairs(items) do
    if item ~= pill then
      redis.call('RPUSH', q, item)
      n = n + 1
    end
  end
  redis.call('DEL', key)
  return n
end
"""

# KEYS: workers, queue; ARGV: processing prefix, pill.  Every worker whose deadline has passed:
# its records back to the queue, unregistered.  Returns {workers reclaimed, records given back}.
RECLAIM = _NOW + _GIVE_BACK + """
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
local n = 0
for _, w in ipairs(dead) do
  n = n + give_back(ARGV[1] .. w, KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[1], w)
end
return {#dead, n}
"""

# KEYS: workers, processing, queue; ARGV: worker id, pill.  A worker leaves: any record it still
# holds goes back, its pill is dropped, it is unregistered.  Returns how many records went back.
LEAVE = _GIVE_BACK + """
local n = give_back(KEYS[2], KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return n
"""

# KEYS: workers, processing list, queue; ARGV: worker id, pill.  The list of a worker that is not
# registered (its lease was reclaimed while it was blocked in BLMOVE, then it died before its ack):
# its records back to the queue.  Returns how many went back (0 for a registered worker's list).
SWEEP = _GIVE_BACK + """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
return give_back(KEYS[2], KEYS[3], ARGV[2])
"""

# KEYS: workers.  How many consumers are live.
LIVE = _NOW + """
return redis.call('ZCOUNT', KEYS[1], now, '+inf')
"""

# KEYS: workers, queue; ARGV: processing prefix, pill.  {live consumers, items queued, pills
# queued, live consumers holding a pill, items held by live consumers}.
_BACKLOG = _NOW + """
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
local pills = #redis.call('LPOS', KEYS[2], ARGV[2], 'COUNT', 0)
local holding, held = 0, 0
for _, w in ipairs(live) do
  local key = ARGV[1] .. w
  held = held + redis.call('LLEN', key)
  if redis.call('LPOS', key, ARGV[2]) then holding = holding + 1 end
end
"""
BACKLOG = _BACKLOG + """
return {#live, redis.call('LLEN', KEYS[2]), pills, holding, held}
"""

# Same keys and arguments.  The end of a stage's stream: one pill per live consumer that has
# none coming (queued) or in hand; call it again while consumers remain, and a late joiner gets
# its pill too.  Returns how many pills it pushed.
END_STREAM = _BACKLOG + """
local wanted = #live - pills - holding
for i = 1, wanted do redis.call('LPUSH', KEYS[2], ARGV[2]) end
return math.max(wanted, 0)
"""

# KEYS: rows, counts; ARGV: per row, its key, JSON, outcome and "1" if the file reached the
# verifier.  First write wins; returns 1 per row written, 0 per row refused.
COMMIT = """
local won = {}
for i = 1, #ARGV, 4 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('HINCRBY', KEYS[2], ARGV[i + 2], 1)
    if ARGV[i + 3] == '1' then redis.call('HINCRBY', KEYS[2], 'processed', 1) end
    won[#won + 1] = 1
  else
    won[#won + 1] = 0
  end
end
return won
"""

SCRIPTS = {"take": TAKE, "put": PUT, "register": REGISTER, "renew": RENEW, "reclaim": RECLAIM,
           "leave": LEAVE, "sweep": SWEEP, "live": LIVE, "backlog": BACKLOG, "end_stream": END_STREAM, "commit": COMMIT}


@dataclasses.dataclass(frozen=True)
class Backlog:
    """A stage's state on the broker, read atomically (what a coordinator decides on)."""

    live: int  # consumers whose lease has not run out
    queued: int  # items on the queue, pills included
    pills: int  # pills on the queue
    holding_pill: int  # live consumers with a pill in hand (about to check out)
    held: int  # items in live consumers' processing lists

    @property
    def files(self) -> int:
        """Records not yet passed on: queued or in a live consumer's hands."""
        return self.queued - self.pills + self.held - self.holding_pill


# The Redis ledger's rows -----------------------------------------------------------------
ROW_FIELDS = ("id", "name", "outcome", "dest_key", "failed_stage", "error", "s3_attempts", "api_attempts",
              "last_stage")  # a --details entry of a file (common/ledger.py); a rejected line has "line"
REJECTED_FIELDS = ("line", "id", "name", "outcome", "error")


def row_key(row: dict[str, Any]) -> str:
    """A file's row is keyed by its id; a rejected input line (no id, or a duplicate's) by its line."""
    return f"line:{row['line']}" if "line" in row else str(row["id"])


def commit_args(rows: Iterable[dict[str, Any]]) -> list[str]:
    """COMMIT's arguments for a batch of rows (each a --details entry plus ``verified``)."""
    args: list[str] = []
    for row in rows:
        missing = [name for name in (REJECTED_FIELDS if "line" in row else ROW_FIELDS) if name not in row]
        if missing:
            raise ValueError(f"a ledger row needs {', '.join(missing)}: {row!r}")
        verified = "1" if row.get("verified") else "0"
        args += [row_key(row), json.dumps(row, separators=(",", ":")), row["outcome"], verified]
    return args


def row_of(raw: bytes | str) -> dict[str, Any]:
    row: dict[str, Any] = json.loads(raw)
    return row


def sorted_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """In the report's order (common/ledger.py): files by id, then rejected lines by line."""
    return sorted(rows, key=lambda d: (d.get("id") is None, d.get("id") or 0, d.get("line") or 0))


def counts_of(raw: dict[Any, Any]) -> dict[str, int]:
    """Every outcome (zero when absent) and ``processed``, from the counts hash."""
    got = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
    return {**{o.value: got.get(o.value, 0) for o in Outcome}, "processed": got.get("processed", 0)}


def line_of(row: dict[str, Any]) -> str:
    """The canonical outcome line a row stands for (what the report's digest is made of)."""
    if "line" in row:
        return rejected_line(Rejected(line=row["line"], outcome=Outcome(row["outcome"]), error=row["error"],
                                      id=row["id"], name=row["name"]))
    return outcome_line(_record_of(row), Outcome(row["outcome"]))


def _record_of(row: dict[str, Any]) -> FileRecord:
    return FileRecord(id=row["id"], name=row["name"], dest_key=row["dest_key"],
                      failed_stage=Stage(row["failed_stage"]) if row["failed_stage"] else None,
                      error=row["error"], s3_attempts=row["s3_attempts"], api_attempts=row["api_attempts"],
                      last_stage=Stage(row["last_stage"]))


def digest(rows: Iterable[dict[str, Any]]) -> str:
    """The report's digest of these rows: equal to an in-process run's for the same outcomes (a file
    row adds what the ledger adds for it: ``outcome_term``)."""
    total = sum(int.from_bytes(hashlib.sha256(line_of(row).encode()).digest(), "big") if "line" in row
                else outcome_term(_record_of(row), Outcome(row["outcome"])) for row in rows)
    return f"{total % _MOD:064x}"
