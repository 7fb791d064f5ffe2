"""Real I/O as data: the calls a stage makes, the hints that keep the workload deterministic, the
errors every client reports the same way.  Nothing here does I/O.

A stage in real mode yields a call description (``S3Copy``, ``ApiPost``; the verifier's
``S3Head`` and ``ApiGet``) instead of a number of seconds; each variant's client performs it
(``threaded/clients.py``, ``asyncio_version/clients.py``, ``anyio_version/clients.py``) and sends
back a result (``Copied``, ``Posted``, ``ObjectInfo``, ``Record``) or raises a ``CallError``.

Every call carries a ``Hint`` computed here from the shared workload, exactly as the simulation
computes its waits: the server sleeps ``delay`` before it answers, answers 503 for an injected
``raise`` or a ``--fail-rate`` failure, and never answers a ``hang``.  Hints travel as S3 user
metadata (``x-amz-meta-pillpipe-hint-*``) and as API headers (``X-Pillpipe-Hint-*``); a server
that is not ours ignores them.

Reports must compare equal across models and libraries, so a ``CallError``'s text is built here
from the call and a small vocabulary (status, error code, timeout, refused, lost), never from a
library's message, a port, a request id, an ETag or a date.
"""
from __future__ import annotations

import errno
import http
import math
import ssl
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Union
from urllib.parse import quote

from .faults import FaultPlan
from .model import FileRecord, Stage
from .workload import DEST_BUCKET, SOURCE_BUCKET, Workload, dest_key, file_name

HINT_PREFIX = "pillpipe-hint-"  # S3 user metadata keys the services read (and never store)
DELAY_KEY, FAULT_KEY = HINT_PREFIX + "delay", HINT_PREFIX + "fault"
HEADER_PREFIX = "X-Pillpipe-Hint-"  # the same hints as API request headers
DELAY_HEADER, FAULT_HEADER = HEADER_PREFIX + "Delay", HEADER_PREFIX + "Fault"
UNAVAILABLE, HANG = "unavailable", "hang"  # what a hint can ask for besides a delay
INJECTED, TRANSIENT = "injected", "transient"  # why a 503 was asked for (the simulation's words)
ID_KEY, NAME_KEY = "pillpipe-file-id", "pillpipe-file-name"  # metadata a copied object carries
RECORDS_PATH = "/records"  # the metadata API: POST /records, GET /records/{id}
STATS_PATH = "/_pillpipe/stats"  # our services' counters (requests, connections); not on other servers
DEFAULT_REGION = "us-east-1"


# The hints ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Hint:
    """What the server should do with one attempt: sleep ``delay`` seconds, then answer (or 503, or never)."""

    delay: float = 0.0
    fault: str | None = None  # None, UNAVAILABLE or HANG
    reason: str = ""  # for UNAVAILABLE: INJECTED or TRANSIENT

    def metadata(self) -> dict[str, str]:
        """As S3 user metadata (boto3 sends ``Metadata={k: v}`` as ``x-amz-meta-k: v``)."""
        return _encode(self, DELAY_KEY, FAULT_KEY)

    def headers(self) -> dict[str, str]:
        """As HTTP request headers for the metadata API."""
        return _encode(self, DELAY_HEADER, FAULT_HEADER)

    @classmethod
    def parse(cls, get: Callable[[str], str | None], delay_name: str, fault_name: str) -> "Hint":
        """The server side: read a hint back; raises ``ValueError`` with a clear message if malformed."""
        delay_text, fault_text = get(delay_name), get(fault_name)
        delay = 0.0
        if delay_text:
            try:
                delay = float(delay_text)
            except ValueError:
                raise ValueError(f"{delay_name}: not a number: {delay_text!r}") from None
            if not (math.isfinite(delay) and delay >= 0):
                raise ValueError(f"{delay_name}: needs a finite number >= 0, got {delay_text!r}")
        if not fault_text:
            return cls(delay)
        fault, _, reason = fault_text.partition(":")
        if fault == HANG and not reason:
            return cls(delay, HANG)
        if fault == UNAVAILABLE and reason in (INJECTED, TRANSIENT):
            return cls(delay, UNAVAILABLE, reason)
        raise ValueError(f"{fault_name}: expected {HANG!r} or '{UNAVAILABLE}:{INJECTED}|{TRANSIENT}', got {fault_text!r}")


NO_HINT = Hint()


def _encode(hint: Hint, delay_name: str, fault_name: str) -> dict[str, str]:
    out = {}
    if hint.delay:
        out[delay_name] = f"{hint.delay:.6f}"
    if hint.fault is not None:
        out[fault_name] = f"{hint.fault}:{hint.reason}" if hint.reason else hint.fault
    return out


def hint_for(workload: Workload, faults: FaultPlan, stage: Stage, file_id: int, attempt: int) -> Hint:
    """The hint for one attempt: the same latency and failure the simulation derives (``stages._attempt``)."""
    delay = workload.latency(stage, file_id, attempt)
    fault = faults.for_attempt(stage, file_id, attempt)
    if fault is not None:
        if fault.kind == "raise":
            return Hint(delay, UNAVAILABLE, INJECTED)
        if fault.kind == "hang":
            return Hint(0.0, HANG)
        return Hint(delay * fault.factor)
    if workload.fails(stage, file_id, attempt):
        return Hint(delay, UNAVAILABLE, TRANSIENT)
    return Hint(delay)


# The objects ------------------------------------------------------------------------------
def source_size(file_id: int) -> int:
    """Bytes of a generated file's source object: 1-4 KiB, a pure function of its id."""
    return 1024 + (file_id * 7919) % 3072


def expected_size(record: FileRecord) -> int:
    return record.size if record.size is not None else source_size(record.id)


def source_objects(count: int) -> Iterator[tuple[str, int]]:
    """(key, size) of the generated files' source objects, ids 1..count, streamed."""
    for file_id in range(1, count + 1):
        yield file_name(file_id), source_size(file_id)


def source_body(key: str, size: int) -> bytes:
    """The deterministic content of a seeded source object."""
    unit = (key.encode("utf-8", "surrogatepass") + b"\n") or b"\n"
    return (unit * (size // len(unit) + 1))[:size]


def object_metadata(record: FileRecord) -> dict[str, str]:
    """User metadata a copied object carries (ASCII only: S3 sends metadata as headers)."""
    return {ID_KEY: str(record.id), NAME_KEY: quote(record.name, safe="")}


def record_fields(record: FileRecord, key: str) -> dict[str, object]:
    """The JSON the API stage posts, and the verifier expects back."""
    return {"id": record.id, "name": record.name, "bucket": DEST_BUCKET, "key": key, "size": expected_size(record)}


# The calls --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class S3Copy:
    """CopyObject from the source bucket to the destination bucket, replacing the metadata."""

    source_bucket: str
    source_key: str
    bucket: str
    key: str
    metadata: dict[str, str]
    hint: Hint = NO_HINT
    stage: Stage = field(default=Stage.S3, init=False)
    service, op = "s3", "copy"


@dataclass(frozen=True, slots=True)
class ApiPost:
    """POST /records with the file's metadata as JSON (an upsert by id: a retried post is harmless)."""

    body: dict[str, object]
    hint: Hint = NO_HINT
    path: str = RECORDS_PATH
    stage: Stage = field(default=Stage.API, init=False)
    service, op = "api", "post"


@dataclass(frozen=True, slots=True)
class S3Head:
    """HeadObject on the destination: the verifier's check that the copy landed."""

    bucket: str
    key: str
    size: int | None = None  # expected size; None: any
    metadata: dict[str, str] = field(default_factory=dict)  # expected user metadata (a subset)
    stage: Stage = field(default=Stage.VERIFY, init=False)
    service, op, hint = "s3", "head", NO_HINT  # the verifier's checks take no latency

    def problem(self, info: "ObjectInfo") -> str | None:
        """Why the object found does not match, or None."""
        if self.size is not None and info.size != self.size:
            return f"s3 head: size {info.size}, expected {self.size}"
        for name, value in self.metadata.items():
            if info.metadata.get(name) != value:
                return f"s3 head: metadata {name} is {info.metadata.get(name)!r}, expected {value!r}"
        return None


@dataclass(frozen=True, slots=True)
class ApiGet:
    """GET /records/{id}: the verifier's check that the API has the record."""

    path: str
    expected: dict[str, object] = field(default_factory=dict)  # fields the record must have (a subset)
    stage: Stage = field(default=Stage.VERIFY, init=False)
    service, op, hint = "api", "get", NO_HINT

    def problem(self, record: "Record") -> str | None:
        for name, value in self.expected.items():
            if record.fields.get(name) != value:
                return f"api get: {name} is {record.fields.get(name)!r}, expected {value!r}"
        return None


Call = Union[S3Copy, ApiPost, S3Head, ApiGet]


def call_for(stage: Stage, record: FileRecord, seed: int, hint: Hint = NO_HINT) -> "S3Copy | ApiPost":
    """The S3 stage's copy or the API stage's post for ``record``, carrying ``hint`` (what the core
    builds for each attempt; ``NO_HINT`` for servers that are not ours)."""
    key = record.dest_key or dest_key(seed, record.name)
    if stage is Stage.S3:
        return S3Copy(record.source_bucket or SOURCE_BUCKET, record.source_key or record.name, DEST_BUCKET,
                      dest_key(seed, record.name), object_metadata(record), hint)
    return ApiPost(record_fields(record, key), hint)


def copy_call(record: FileRecord, workload: Workload, faults: FaultPlan, attempt: int, hints: bool = True) -> S3Copy:
    """The S3 stage's call for one attempt (``hints=False`` for servers that are not ours)."""
    hint = hint_for(workload, faults, Stage.S3, record.id, attempt) if hints else NO_HINT
    return call_for(Stage.S3, record, workload.seed, hint)  # type: ignore[return-value]


def post_call(record: FileRecord, workload: Workload, faults: FaultPlan, attempt: int, hints: bool = True) -> ApiPost:
    """The API stage's call for one attempt; the record already has its destination key."""
    hint = hint_for(workload, faults, Stage.API, record.id, attempt) if hints else NO_HINT
    return call_for(Stage.API, record, workload.seed, hint)  # type: ignore[return-value]


def verify_calls(record: FileRecord, seed: int) -> tuple[S3Head, ApiGet]:
    """The verifier's two checks for a file that reached API_UPLOADED."""
    key = record.dest_key or dest_key(seed, record.name)
    return (S3Head(DEST_BUCKET, key, expected_size(record), object_metadata(record)),
            ApiGet(f"{RECORDS_PATH}/{record.id}", record_fields(record, key)))


# The results ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Copied:
    bucket: str
    key: str


@dataclass(frozen=True, slots=True)
class Posted:
    id: object


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size: int
    metadata: dict[str, str]  # user metadata, lower-case names, hints removed


@dataclass(frozen=True, slots=True)
class Record:
    fields: dict[str, object]


Result = Union[Copied, Posted, ObjectInfo, Record]


def user_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """User metadata as the verifier compares it: lower-case names, the hints left out."""
    return {k.lower(): v for k, v in metadata.items() if not k.lower().startswith(HINT_PREFIX)}


# The errors -------------------------------------------------------------------------------
class CallError(Exception):
    """A real call failed.  ``kind`` is the error's class; ``str()`` is the same in every model and
    library (it is part of the report's digest)."""

    kind = "transport"

    def __init__(self, message: str, call: Call | None = None) -> None:
        super().__init__(message)
        self.call = call


class ServiceUnavailable(CallError):
    """HTTP 503: an injected fault, a ``--fail-rate`` failure, or a real server shedding load."""

    kind = "unavailable"


class HttpError(CallError):
    """Any other error status (404 for a missing source object, 403 for bad credentials...)."""

    kind = "http"


class CallTimeout(CallError):
    """No answer within the client's timeout (a hung call)."""

    kind = "timeout"


class ConnectionFailed(CallError):
    """The transport failed: nothing listens, the peer went away, TLS did not verify."""

    kind = "connection"


class ConnectionRefused(ConnectionFailed):
    kind = "refused"


class ConnectionLost(ConnectionFailed):
    kind = "lost"


class TlsError(ConnectionFailed):
    kind = "tls"


def status_error(call: Call, status: int, code: str | None = None) -> CallError:
    """The error for an HTTP error status; ``code`` is the S3 error code when the body had one."""
    if status == 503 and call.hint.fault == UNAVAILABLE:  # the simulation's words, so reports compare equal
        return ServiceUnavailable(f"{call.hint.reason} {call.stage.value} error", call)
    if not code or code.isdigit():
        code = _PHRASES.get(status, "")
    text = f"{call.service} {call.op}: HTTP {status}" + (f" {code}" if code else "")
    return (ServiceUnavailable if status == 503 else HttpError)(text, call)


_PHRASES = {s.value: s.phrase.replace(" ", "").replace("-", "") for s in http.HTTPStatus}


def timeout_error(call: Call, timeout: float | None) -> CallTimeout:
    """A timed-out call: the simulation's words when the client's timeout is known."""
    return CallTimeout(f"timeout after {timeout:g}s" if timeout else f"{call.service} {call.op}: timed out", call)


_CONNECTION = {
    ConnectionRefused: "connection refused",
    ConnectionLost: "connection lost",
    TlsError: "TLS error",
    ConnectionFailed: "connection failed",
}


def connection_error(call: Call, cls: type[ConnectionFailed]) -> ConnectionFailed:
    return cls(f"{call.service} {call.op}: {_CONNECTION[cls]}", call)


_LOST = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED}


def transport_class(exc: BaseException) -> type[CallError]:
    """Classify a library's transport exception by what its cause chain holds: the OS error or
    the ssl error under the library's own wrappers.  Libraries name these differently; the kernel
    does not."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    found: type[CallError] = ConnectionFailed
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLError) and not isinstance(e, (ssl.SSLZeroReturnError, ssl.SSLEOFError)):
            return TlsError
        code = getattr(e, "errno", None)
        if isinstance(e, ConnectionRefusedError) or code == errno.ECONNREFUSED:
            return ConnectionRefused
        if isinstance(e, TimeoutError) or code == errno.ETIMEDOUT:
            found = CallTimeout
        elif found is ConnectionFailed and (code in _LOST or isinstance(e, (
                ConnectionResetError, BrokenPipeError, ConnectionAbortedError, EOFError, ssl.SSLEOFError))):
            found = ConnectionLost
        stack.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        stack.extend(getattr(e, "exceptions", ()))  # ExceptionGroup (anyio's happy eyeballs)
        stack.extend(x for x in getattr(e, "kwargs", {}).values() if isinstance(x, BaseException))  # botocore
        for attr in ("error", "reason", "original_error", "os_error", "certificate_error"):  # wrappers that keep the cause as an attribute
            inner = getattr(e, attr, None)
            if isinstance(inner, BaseException):
                stack.append(inner)
    return found


def transport_error(call: Call, exc: BaseException, timeout: float | None,
                    timeouts: tuple[type[BaseException], ...] = (), lost: tuple[type[BaseException], ...] = (),
                    tls: tuple[type[BaseException], ...] = ()) -> CallError:
    """The ``CallError`` for a library's transport exception: what its cause chain says first (the
    kernel's word), else the library's own classes for a timeout, a lost connection, a TLS failure."""
    cls = transport_class(exc)
    if cls is ConnectionFailed:
        for classes, kind in ((tls, TlsError), (timeouts, CallTimeout), (lost, ConnectionLost)):
            if isinstance(exc, classes):
                cls = kind
                break
    if cls is CallTimeout:
        return timeout_error(call, timeout)
    return connection_error(call, cls)  # type: ignore[arg-type]


def botocore_options(pool: int | None, timeout: float | None) -> dict[str, object]:
    """botocore's ``Config`` for every model (boto3 and aiobotocore alike): path-style addressing
    (a local server has no DNS name per bucket), no retries of its own (the core retries), no
    checksums nobody asked for, the caller's pool size (None: botocore's 10) and timeout."""
    options: dict[str, object] = {
        "s3": {"addressing_style": "path"}, "retries": {"total_max_attempts": 1},
        "request_checksum_calculation": "when_required", "response_checksum_validation": "when_required",
        "connect_timeout": timeout, "read_timeout": timeout}
    if pool is not None:
        options["max_pool_connections"] = pool
    return options


# Where the services are -------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoints:
    """Where the S3 API and the metadata API are, and how to reach them.  The credentials never
    appear in a repr (they are dummy values for our services, or None: the default AWS chain)."""

    s3_url: str
    api_url: str
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    region: str = DEFAULT_REGION
    ca_file: str | None = None  # PEM of the CA to trust for https URLs (a local test CA)
    hints: bool = True  # the servers honour the hints (ours do; any other server ignores them)


# How each model calls them ----------------------------------------------------------------
# The metadata API's client library in each model, its default first (each model's clients.py reads
# its row; the command line checks --http-client against it without importing a model).
HTTP_CLIENTS: dict[str, tuple[str, ...]] = {
    "threaded": ("urllib3", "httpx"),
    "asyncio": ("aiohttp", "httpx"),  # httpx also puts aiobotocore on its httpx session: the same-library control
    "anyio": ("httpx",),  # what runs on trio too
}
CALL_TIMEOUT = 10.0  # seconds a real call may wait for its server, beyond the longest hinted delay


def call_timeout(workload: Workload, faults: FaultPlan, stage_timeout: float | None) -> float:
    """How long one real call may take before it fails with ``timeout``: ``--stage-timeout`` when
    given, else ``CALL_TIMEOUT`` past the longest delay a hint can ask for.  Always finite: a thread
    blocked in a socket read cannot be woken by anything else, so an abort waits for it this long."""
    if stage_timeout is not None:
        return stage_timeout
    slowest = max((f.factor for f in faults.files.values() if f.kind == "slow"), default=1.0)
    longest = max(workload.s3_latency[1], workload.api_latency[1]) * workload.time_scale * max(1.0, slowest)
    return CALL_TIMEOUT + longest
