"""Configuration, its validation, and the one argument parser every variant uses."""
from __future__ import annotations

import argparse
import difflib
import importlib.util
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, NoReturn, Sequence
from urllib.parse import urlsplit

from .calls import HTTP_CLIENTS, Endpoints
from .events import Events, say
from .faults import FaultPlan, FaultSpecError
from .handoff import MAX_BATCH
from .model import Stage
from .shutdown import DEFAULT as DEFAULT_SHUTDOWN, STRATEGIES, unsupported
from .source import FORMATS, InputFormatError, input_format
from .stages import StagePlan
from .workload import Workload

if TYPE_CHECKING:
    from .realio import RealIO


class UsageError(ValueError):
    """Bad input from the user: reported as one line, exit code 2."""


class SetupError(RuntimeError):
    """What a run needs could not be set up (the embedded services did not start): one line, exit 69."""


@dataclass(frozen=True)
class Config:
    files: int = 8
    s3_workers: int = 3
    api_workers: int = 2
    s3_latency: tuple[float, float] = (0.2, 0.5)
    api_latency: tuple[float, float] = (1.0, 2.0)
    time_scale: float = 1.0
    queue_size: int = 0  # 0: unbounded
    batch: int = 1  # records per hand-off: 1 is the tutorial's one at a time (common/handoff.py)
    seed: int = 0
    fail_rate: float = 0.0
    retries: int = 0
    retry_backoff: float = 0.0
    stage_timeout: float | None = None
    shutdown_grace: float | None = None
    faults: tuple[str, ...] = ()
    input: str | None = None
    input_format: str | None = None
    json: bool = False
    details: bool = False
    quiet: bool = False
    trace: bool = False  # record a span per file per stage (benchmarks, timelines)
    backend: str = "asyncio"  # the anyio variant's event loop: asyncio or trio (the other variants ignore it)
    shutdown: str = DEFAULT_SHUTDOWN  # how each stage's input stream ends: see common/shutdown.py
    loop: str = "asyncio"  # the asyncio variant's event loop: asyncio or uvloop
    io: str = "sim"  # sim: every copy and upload is a wait; real: real calls (common/realio.py)
    s3_endpoint: str | None = None  # real I/O against servers that are not ours; None: the embedded ones
    api_url: str | None = None
    http_client: str | None = None  # the metadata API's client library (calls.HTTP_CLIENTS); None: the model's default
    pool: int | None = None  # connections per client; None: the workers that share it
    tls: bool = False  # the embedded services serve https (a certificate made for the run)
    ca_file: str | None = None  # a CA to trust for https endpoints of yours
    endpoints: Endpoints | None = field(default=None, repr=False, compare=False)  # set by a launcher, not a flag
    progress: str = "auto"  # the live progress view on stderr: auto, on, off (common/progress.py)
    state: str | None = None  # --state PATH: keep the ledger in a SQLite file too (docs/resume.md)
    resume: bool = False  # continue the run --state holds: skip what it settled
    retry_failed: bool = False  # with --resume: work failed, invalid and duplicate files again
    inline_commit: str | None = None  # benchmarks only: commit where files settle, "batched" or "naive" (INLINE)
    broker: str | None = None  # --broker URL: the queues and the ledger live in Redis (docs/redis.md)
    run_id: str | None = None  # --run ID: the run's name on the broker (a new one when None)
    processes: int = 0  # --processes K: worker processes per stage that ``pillpipe run`` starts
    broker_wait: float = 30.0  # seconds a stage may hold files with no live consumer before it is dead;
    # also how long a client retries reconnecting to a broker that went away
    role: str = "all"  # this process's part in a run across processes (ROLES; set by a command, not a flag)
    fault_plan: FaultPlan = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``UsageError`` with one clear sentence for the first bad value.

        Every value has a range (``LIMITS``, stated in ``--help``): whatever is accepted runs the
        same in every model - no wait a thread cannot make, no float overflow, no NaN."""
        for name in ("files", "seed", "s3_workers", "api_workers", "queue_size", "batch", "retries"):
            _whole_in(name, getattr(self, name))
        for name in ("s3_latency", "api_latency"):
            low, high = getattr(self, name)
            flag, top = _flag(name), LIMITS[name][1]
            if not (_finite(low) and _finite(high) and 0 <= low <= top and 0 <= high <= top):
                raise UsageError(f"{flag} needs two numbers from 0 to {top:g} seconds (got {low:g} {high:g})")
            if low > high:
                raise UsageError(f"{flag} MIN must not exceed MAX (got {low:g} > {high:g})")
        for name in ("time_scale", "retry_backoff", "fail_rate"):
            _number_in(name, getattr(self, name))
        for name in ("stage_timeout", "shutdown_grace"):
            if getattr(self, name) is not None:
                _number_in(name, getattr(self, name), above_zero=True)
        longest = self.retry_backoff * 2.0 ** max(self.retries - 1, 0) * self.time_scale if self.retries else 0.0
        if longest > MAX_WAIT:
            raise UsageError(f"--retry-backoff {self.retry_backoff:g} doubles to {longest:.3g} s before the last retry "
                             f"(--retries {self.retries}, --time-scale {self.time_scale:g}); the longest wait allowed "
                             "is 1e9 s: lower one of them")
        if self.input_format not in (None, *FORMATS):
            raise UsageError(f"--input-format must be jsonl or csv (got {self.input_format})")
        if self.input is not None:
            try:
                input_format(self.input, self.input_format)
            except InputFormatError as exc:
                raise UsageError(str(exc)) from None
        if self.shutdown not in STRATEGIES:
            raise UsageError(f"--shutdown must be one of {', '.join(STRATEGIES)} (got {self.shutdown})")
        if self.loop not in LOOPS:
            raise UsageError(f"--loop must be one of {', '.join(LOOPS)} (got {self.loop})")
        if self.progress not in PROGRESS:
            raise UsageError(f"--progress must be one of {', '.join(PROGRESS)} (got {self.progress})")
        if self.backend not in BACKENDS:
            raise UsageError(f"--backend must be one of {', '.join(BACKENDS)} (got {self.backend})")
        if self.state == "":
            raise UsageError("--state needs a path (a file the run creates, or resumes with --resume)")
        if self.resume and self.state is None:
            raise UsageError("--resume needs --state PATH: the state file of the run to continue")
        if self.inline_commit not in (None, *INLINE):
            raise UsageError(f"--inline-commit must be one of {', '.join(INLINE)} (got {self.inline_commit})")
        if self.inline_commit is not None and self.state is None:
            raise UsageError("--inline-commit needs --state PATH")
        if self.retry_failed and not self.resume:
            raise UsageError("--retry-failed goes with --resume: it works the failed files of an earlier run again")
        if self.backend == "trio" and importlib.util.find_spec("trio") is None:
            raise UsageError("--backend trio needs trio installed: pip install 'pillpipe[trio]'")
        self._validate_io()
        self._validate_broker()
        try:
            plan = FaultPlan.parse(self.faults, generated=self.input is None)
            plan.check(self.files if self.input is None else None,
                       {Stage.S3: self.s3_workers, Stage.API: self.api_workers})
        except FaultSpecError as exc:
            raise UsageError(str(exc)) from None
        object.__setattr__(self, "fault_plan", plan)

    def _validate_io(self) -> None:
        if self.io not in IO_MODES:
            raise UsageError(f"--io must be one of {', '.join(IO_MODES)} (got {self.io})")
        given = [name for name in REAL_ONLY if getattr(self, name) not in (None, False)]
        if self.io != "real":
            if given:
                raise UsageError(f"--{given[0].replace('_', '-')} applies to --io real only")
            return
        for name in ("s3_endpoint", "api_url"):
            url = getattr(self, name)
            if url is not None:
                object.__setattr__(self, name, _url(f"--{name.replace('_', '-')}", url))
        if self.http_client is not None and self.http_client not in ALL_HTTP_CLIENTS:
            raise UsageError(f"--http-client must be one of {', '.join(ALL_HTTP_CLIENTS)} (got {self.http_client})")
        if self.pool is not None and (isinstance(self.pool, bool) or not isinstance(self.pool, int)
                                      or not 1 <= self.pool <= MAX_POOL):
            raise UsageError(f"--pool must be a whole number from 1 to {MAX_POOL:_} (got {self.pool!r})")
        if self.tls and self.s3_endpoint and self.api_url:
            raise UsageError("--tls makes the embedded services serve https: with --s3-endpoint and --api-url "
                             "both given none is started (give https:// URLs, and --ca-file for a private CA)")
        if self.ca_file is not None:
            if not any((url or "").startswith("https:") for url in (self.s3_endpoint, self.api_url)):
                raise UsageError("--ca-file applies to https:// endpoints given with --s3-endpoint or --api-url")
            if not os.path.isfile(self.ca_file):
                raise UsageError(f"--ca-file {self.ca_file}: no such file")
        missing = [name for name in REAL_MODULES if importlib.util.find_spec(name) is None]
        if missing:
            raise UsageError(f"--io real needs the real extra (missing: {', '.join(missing)}): "
                             "pip install 'pillpipe[real]'")

    def _validate_broker(self) -> None:
        """``--broker`` and its companions; what a run across processes cannot do yet is refused here."""
        if self.role not in ROLES:
            raise UsageError(f"role must be one of {', '.join(ROLES)} (got {self.role})")
        _whole_in("processes", self.processes)
        _number_in("broker_wait", self.broker_wait, above_zero=True)
        if self.broker is None:
            for name in ("run_id", "processes"):
                if getattr(self, name) not in (None, 0):
                    raise UsageError(f"{_flag(name).replace('-id', '')} goes with --broker URL")
            if self.role != "all":
                raise UsageError(f"the {self.role} role needs --broker URL")
            return
        from .broker import Keys, check_url  # the broker's core imports this module

        check_url(self.broker)
        if self.run_id is not None:
            Keys(self.run_id)
        if self.backend != "asyncio":
            raise UsageError(f"--broker does not go with --backend {self.backend}: redis.asyncio runs on asyncio only")
        for name, why in BROKER_REFUSES.items():
            value = getattr(self, name)
            if value != Config.__dataclass_fields__[name].default:
                shown = "" if isinstance(value, bool) else f" {value}"
                raise UsageError(f"--broker does not go with {_flag(name)}{shown}: {why}")

    def workers(self) -> dict[Stage, int]:
        """How many workers each stage runs, in pipeline order (one dispatcher, one verifier)."""
        return {Stage.DISPATCH: 1, Stage.S3: self.s3_workers, Stage.API: self.api_workers, Stage.VERIFY: 1}

    def stage_plan(self, events: Events | None = None, io: "RealIO | None" = None) -> StagePlan:
        workload = Workload(self.seed, (*self.s3_latency,), (*self.api_latency,), self.time_scale, self.fail_rate)
        return StagePlan(workload, self.fault_plan, self.retries, self.retry_backoff, self.stage_timeout,
                         events if events is not None else Events(None), io)

    def for_variant(self, variant: str) -> "Config":
        """This config, checked for what ``variant`` can run here (``applicable``)."""
        problem = applicable(self, variant)
        if problem is not None:
            raise UsageError(problem)
        return self


IO_MODES = ("sim", "real")
ROLES = ("all", "dispatch", "s3", "api", "verify")  # all: every worker here; dispatch: dispatcher and coordinator
BROKER_REFUSES = {  # what a run across processes (--broker) does not do yet: flag -> why, said in one line
    "shutdown": "across processes the coordinator ends each stream with pills, one per live consumer",
    "state": "the run's ledger lives on the broker",
    "resume": "the run's ledger lives on the broker",
    "io": "workers in other processes only simulate (real I/O across processes is not built yet)",
    "batch": "records travel one at a time on the broker",
    "input": "the workers' processes generate the files (reading --input across processes is not built yet)",
}
REAL_ONLY = ("s3_endpoint", "api_url", "http_client", "pool", "tls", "ca_file")  # flags of --io real
ALL_HTTP_CLIENTS = tuple(dict.fromkeys(name for names in HTTP_CLIENTS.values() for name in names))
REAL_MODULES = ("boto3", "aiobotocore", "aiohttp", "httpx2")  # what the real extra brings, as imported
MAX_POOL = 1_000_000  # --pool, like the workers
BACKENDS = ("asyncio", "trio")  # event loops the anyio variant runs on
# The benchmarks' blocking commits (--inline-commit, not a user flag): "batched", the state's own batches
# committed by the worker where a file settles; "naive", one durable transaction (an fsync) per file there.
INLINE = ("batched", "naive")
LOOPS = ("asyncio", "uvloop")  # event loops the asyncio variant runs on
PROGRESS = ("auto", "on", "off")  # --progress (common/progress.py)

# The flags that shape one concurrency model only: flag -> the variants it applies to.  A value other
# than the default on any other variant is a usage error (``applicable``): one rule for all of them.
MODEL_FLAGS: dict[str, tuple[str, ...]] = {
    "shutdown": ("threaded", "asyncio"),
    "loop": ("asyncio",),
    "backend": ("anyio",),
    "io": ("threaded", "asyncio", "anyio"),
    "broker": ("threaded", "asyncio", "anyio"),
}
_WHY_NOT = {  # what a variant does instead, said after the rule
    ("io", "sequential"): "the sequential reference only simulates",
    ("shutdown", "anyio"): "anyio ends a stream by closing its last send clone",
    ("shutdown", "sequential"): "the sequential reference has no streams to end",
    ("broker", "sequential"): "the sequential reference has no queues",
}


def applicable(config: Config, variant: str) -> str | None:
    """Why ``config`` cannot run on ``variant`` as one sentence - a model's flag given to another
    model, or a strategy this variant or interpreter cannot run - or None when it can.  The command
    line checks it before a run starts, for every variant alike."""
    base = variant.partition("-")[0]  # "anyio-trio" is the anyio variant
    for name, variants in MODEL_FLAGS.items():
        value = getattr(config, name)
        if base not in variants and value != Config.__dataclass_fields__[name].default:
            why = _WHY_NOT.get((name, base))
            return (f"--{name} {value} applies to the {' and '.join(variants)} "
                    f"variant{'s' if len(variants) > 1 else ''} only{f': {why}' if why else ''}")
    clients = HTTP_CLIENTS.get(base, ())
    if config.http_client is not None and config.http_client not in clients:
        return (f"--http-client {config.http_client} is not a client of the {base} model "
                f"(choose {' or '.join(clients)})")
    return unsupported(config.shutdown, base, config.loop)


def suggestion(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'threaded'?)`` for a close misspelling of one of ``choices``, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _url(flag: str, url: str) -> str:
    """``url`` without a trailing slash, if it is an http(s) URL of a server; else ``UsageError``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise UsageError(f"{flag} {url}: not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{flag} {url}: needs http:// or https:// and a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError(f"{flag} {url}: give the server only (scheme://host[:port]), no path")
    return url.rstrip("/")


# The accepted range of every number (inclusive; --stage-timeout and --shutdown-grace must also be
# above 0).  Together they keep every single wait below MAX_WAIT - a thread's wait refuses a
# timeout past ~9.2e9 s ("timestamp out of range") where a coroutine's would not - and every
# product finite: the longest call is 3600 s x --time-scale 100 x slow=1000 = 3.6e8 s.
LIMITS: dict[str, tuple[float, float]] = {
    "files": (0, 10**9),
    "seed": (0, 2**64 - 1),
    "s3_workers": (1, 1_000_000),
    "api_workers": (1, 1_000_000),
    "queue_size": (0, 10**9),
    "batch": (1, MAX_BATCH),
    "retries": (0, 100),
    "s3_latency": (0, 3600.0),
    "api_latency": (0, 3600.0),
    "time_scale": (0, 100.0),
    "retry_backoff": (0, 3600.0),
    "fail_rate": (0, 1.0),
    "stage_timeout": (0, 86400.0),
    "shutdown_grace": (0, 86400.0),
    "processes": (0, 64),
    "broker_wait": (0, 86400.0),
}
MAX_WAIT = 1e9  # seconds: --retry-backoff x 2^(--retries - 1) x --time-scale may not exceed it


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole_in(name: str, value: object) -> None:
    low, high = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        top = {2**64 - 1: "2^64-1"}.get(int(high), f"{int(high):_}")
        got = repr(value) if len(repr(value)) <= 30 else f"{repr(value)[:20]}... ({len(repr(value))} characters)"
        raise UsageError(f"{_flag(name)} must be a whole number from {int(low)} to {top} (got {got})")


def _number_in(name: str, value: object, above_zero: bool = False) -> None:
    low, high = LIMITS[name]
    fits = isinstance(value, (int, float)) and _finite(value) and low <= value <= high
    if not fits or (above_zero and value == 0):
        what = f"above 0 and at most {high:g}" if above_zero else f"from {low:g} to {high:g}"
        raise UsageError(f"{_flag(name)} must be a number {what} (got {value})")


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _one_of(choices: Sequence[str]) -> Callable[[str], str]:
    """argparse ``choices``, but a wrong value gets a suggestion when it is a close misspelling."""

    def check(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}{suggestion(text, choices)}")
        return text

    return check


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (no usage dump) and exit code 2, and an
    unknown flag that is a close misspelling of a known one gets a suggestion."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_args(self, args: Sequence[str] | None = None, namespace: None = None) -> argparse.Namespace:  # type: ignore[override]
        ns, unknown = self.parse_known_args(args, namespace)
        if unknown:
            flags = [option for option in self._option_string_actions if option.startswith("--")]
            hints = [f"{arg}{suggestion(arg.partition('=')[0], flags) if arg.startswith('-') else ''}"
                     for arg in unknown]
            self.error(f"unrecognized arguments: {' '.join(hints)}")
        return ns


Parser = _Parser  # for the top floor's own commands (pillpipe worker): the same one-line usage errors
one_of = _one_of

EPILOG = """\
input records (--input PATH, - for stdin; in full: docs/input.md):
  the format comes from the extension - .jsonl or .ndjson (or none, or stdin): JSON Lines;
  .csv: CSV - or from --input-format jsonl|csv; any other extension is refused.  UTF-8;
  a line ends at \\n, \\r\\n or \\r; blank lines are skipped; a line over 1 MiB is invalid.
  JSON Lines, one object per line:   {"id": 1, "name": "a.pdf", "size": 10}
  CSV, a header naming the columns:  id,name,size   then one row per record
  required: id    a whole number 0..2^63-1 (CSV: the digits 0-9 only, no sign or spaces)
            name  non-empty text, no control characters
  optional: size (a whole number), source_bucket, source_key (text); others are ignored
  a record breaking a rule is 'invalid', a repeated id 'duplicate': the report lists the
  first 10 with their line and reason (all of them: --details); the rest goes on.

fault specs (--fault, repeatable; deterministic):
  s3|api:FILE:raise[:times=K]     the file's copy/upload raises (first K attempts; default every attempt)
  s3|api:FILE:hang[:times=K]      the call never returns on its own (bounded by --stage-timeout)
  s3|api:FILE:slow=F[:times=K]    the call takes F times the file's latency (F from 0 to 1000)
  s3|api:FILE:die                 the worker taking the file dies, the file fails (deterministic)
  s3|api:worker=W|*:after=N:die   worker W (or every worker) of the stage dies after N files
  verifier:after=N:crash          the verifier dies after verifying N files
  FILE is id=N (generated files are ids 1..--files) or name=file_100.pdf (generated files).
  A fault that can never fire (no such file or worker, after= not below --files) is refused;
  with --input the ids and the count are unknown before reading, so only workers are checked.

ranges (a value outside is a usage error): --files 0..10^9, --seed 0..2^64-1,
  --s3-workers/--api-workers 1..10^6, --queue-size 0..10^9, --batch 1..1024,
  --retries 0..100, --s3-latency/--api-latency 0..3600 s, --time-scale 0..100, --retry-backoff 0..3600 s
  (and backoff x 2^(retries-1) x time-scale at most 1e9 s), --fail-rate 0..1,
  --stage-timeout/--shutdown-grace above 0, at most 86400 s, --processes 0..64,
  --broker-wait above 0, at most 86400 s.

exit codes: 0 every file succeeded, 1 some file did not, 2 bad usage, 69 the embedded services
for real I/O did not start, or the broker (--broker) cannot be reached or went away, 70 internal error (a stage died, no worker of a stage could start,
or the --state file could not be written), 74 the report could not be written to stdout (said
on stderr, with the run's own code), 130 SIGINT, 143 SIGTERM.

stopping: the first SIGINT/SIGTERM drains (files already started finish, the rest are
cancelled); a second one aborts (files in flight end aborted).  A SIGTERM drains for at most
30 s (--shutdown-grace S sets the grace of both), then aborts.  While it waits, a line every
3 s says for which files, in which worker, for how long; a worker still stuck 5 s after an
abort is given up.  Always a report.

output: event lines use emoji markers; plain ASCII ones where stdout cannot encode them, or with
NO_COLOR set (or TERM=dumb on a terminal).  Nothing depends on stdout being a terminal.
"""


def build_parser(prog: str, description: str, variant: str | None = None) -> argparse.ArgumentParser:
    """The flags of a run.  For one ``variant``, the help leaves out the flags of other models (they
    are still parsed, and ``applicable`` rejects them in one line)."""
    p = _Parser(prog=prog, description=description, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Config()

    def model_help(name: str, text: str) -> str:
        if variant is not None and variant.partition("-")[0] not in MODEL_FLAGS[name]:
            return argparse.SUPPRESS
        return text

    w = p.add_argument_group("workload")
    w.add_argument("--files", type=int, default=d.files, metavar="N", help="files to migrate (default %(default)s)")
    w.add_argument("--seed", type=int, default=d.seed, metavar="N",
                   help="seed every latency and failure derives from (default %(default)s)")
    w.add_argument("--input", metavar="PATH", help="read file records from PATH (JSON Lines or CSV; - for stdin) "
                                                   "instead of generating --files")
    w.add_argument("--input-format", choices=("jsonl", "csv"), help="format of --input (default: by extension)")
    s = p.add_argument_group("pipeline")
    s.add_argument("--s3-workers", type=int, default=d.s3_workers, metavar="N", help="S3 uploaders (default %(default)s)")
    s.add_argument("--api-workers", type=int, default=d.api_workers, metavar="N",
                   help="API uploaders (default %(default)s)")
    s.add_argument("--queue-size", type=int, default=d.queue_size, metavar="N",
                   help="capacity of each queue; 0 = unbounded, N > 0 gives backpressure (default %(default)s)")
    s.add_argument("--batch", type=int, default=d.batch, metavar="N",
                   help="hand records on up to N at a time (flushed early before a worker waits or when the next "
                        "stage is idle): fewer wake-ups at zero latency; 1 = one at a time, as the tutorial "
                        "(default %(default)s)")
    s.add_argument("--s3-latency", type=_number, nargs=2, default=d.s3_latency, metavar=("MIN", "MAX"),
                   help="seconds per S3 copy (default 0.2 0.5)")
    s.add_argument("--api-latency", type=_number, nargs=2, default=d.api_latency, metavar=("MIN", "MAX"),
                   help="seconds per API upload (default 1 2)")
    s.add_argument("--time-scale", type=_number, default=d.time_scale, metavar="F",
                   help="multiplies every latency and backoff; 0 = no waiting (default %(default)s)")
    s.add_argument("--shutdown", type=_one_of(STRATEGIES), default=d.shutdown, metavar="STRATEGY",
                   help=model_help("shutdown", "how a stage learns its input has ended: pills (the tutorial's "
                                   "coordinator), relay, last-out, queue-shutdown (Python 3.13+), cancel (asyncio "
                                   "only); threaded and asyncio variants only (default %(default)s)"))
    s.add_argument("--loop", type=_one_of(LOOPS), default=d.loop, metavar="{asyncio,uvloop}",
                   help=model_help("loop", "event loop of the asyncio variant only; uvloop needs the uvloop "
                                   "extra: pip install 'pillpipe[uvloop]' (default %(default)s)"))
    s.add_argument("--backend", type=_one_of(BACKENDS), default=d.backend, metavar="{asyncio,trio}",
                   help=model_help("backend", "event loop of the anyio variant only; trio needs the trio "
                                   "extra: pip install 'pillpipe[trio]' (default %(default)s)"))
    f = p.add_argument_group("failures")
    f.add_argument("--fail-rate", type=_number, default=d.fail_rate, metavar="P",
                   help="probability that one copy or upload attempt fails (default %(default)s)")
    f.add_argument("--retries", type=int, default=d.retries, metavar="N", help="attempts after the first (default %(default)s)")
    f.add_argument("--retry-backoff", type=_number, default=d.retry_backoff, metavar="S",
                   help="wait before the 2nd attempt, doubling after; scaled by --time-scale (default %(default)s)")
    f.add_argument("--stage-timeout", type=_number, metavar="S",
                   help="real seconds one copy or upload may take before it fails with 'timeout'")
    f.add_argument("--shutdown-grace", type=_number, metavar="S",
                   help="after the first signal, real seconds to drain before aborting (default: 30 for "
                        "SIGTERM; SIGINT waits for a second press)")
    f.add_argument("--fault", action="append", default=[], metavar="SPEC", dest="faults",
                   help="inject a fault (see below); repeatable")
    r = p.add_argument_group("real I/O")
    r.add_argument("--io", type=_one_of(IO_MODES), default=d.io, metavar="{sim,real}",
                   help=model_help("io", "sim: every copy and upload is a simulated wait (default); real: a real S3 "
                                   "CopyObject and HTTP POST per file, checked by the verifier, against our services "
                                   "started for the run on 127.0.0.1 unless --s3-endpoint/--api-url say otherwise "
                                   "(pip install 'pillpipe[real]')"))
    r.add_argument("--s3-endpoint", metavar="URL",
                   help=model_help("io", "an S3-compatible server of yours (credentials and region from the usual "
                                   "AWS environment); the pipeline then plays injected faults itself (unless both "
                                   "URLs are our own services, from pillpipe serve)"))
    r.add_argument("--api-url", metavar="URL",
                   help=model_help("io", "a metadata API of yours (POST /records, GET /records/ID)"))
    r.add_argument("--http-client", type=_one_of(ALL_HTTP_CLIENTS), metavar="NAME",
                   help=model_help("io", "the API's client library: threaded urllib3 (default) or httpx; asyncio "
                                   "aiohttp (default) or httpx, which also puts aiobotocore on httpx (the "
                                   "same-library control); anyio httpx"))
    r.add_argument("--pool", type=int, metavar="N",
                   help=model_help("io", "connections each client keeps, 1..10^6 (default: the workers that share "
                                   "it, + 1 for the verifier; botocore's own default is 10)"))
    r.add_argument("--tls", action="store_true",
                   help=model_help("io", "the embedded services serve https, with a CA made for the run"))
    r.add_argument("--ca-file", metavar="PEM", help=model_help("io", "trust this CA for https:// endpoints of yours"))
    r = p.add_argument_group("durable runs (docs/resume.md)")
    r.add_argument("--state", metavar="PATH", help="keep the run's ledger in this SQLite file as well; after a "
                                                   "crash, the same command with --resume works only the rest")
    r.add_argument("--resume", action="store_true", help="continue the run --state holds: files it settled are "
                                                        "not worked again (a --state that does not exist yet "
                                                        "starts a new run there)")
    r.add_argument("--retry-failed", action="store_true", help="with --resume: also work the files that ended "
                                                              "failed, invalid or duplicate again")
    r.add_argument("--inline-commit", choices=INLINE, help=argparse.SUPPRESS)  # benchmarks: a commit that blocks
    b = p.add_argument_group("across processes (docs/redis.md; the redis extra and a redis-server)")
    b.add_argument("--broker", metavar="URL",
                   help=model_help("broker", "redis://HOST:PORT/DB: the queues between stages and the ledger live "
                                   "in Redis, so workers in other processes (pillpipe worker) take part; not on "
                                   "anyio's trio backend"))
    b.add_argument("--run", dest="run_id", metavar="ID",
                   help=model_help("broker", "the run's name on the broker, 1-64 of A-Z a-z 0-9 . _ - "
                                   "(default: a new one); workers join it with the same --run"))
    b.add_argument("--processes", type=int, default=d.processes, metavar="K",
                   help=model_help("broker", "with --broker: start K worker processes per stage on this machine "
                                   "(each with --s3-workers / --api-workers workers, one verifier) and coordinate "
                                   "them; 0: every worker in this process (default %(default)s)"))
    b.add_argument("--broker-wait", type=_number, default=d.broker_wait, metavar="S",
                   help=model_help("broker", "seconds a stage may hold files with no live consumer before the run "
                                   "calls it dead, cancels them and exits 70; also how long a client retries "
                                   "reconnecting to a broker that went away (a restart) before the run exits 69 "
                                   "(default %(default)s)"))
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout "
                                                      "(event lines go to stderr)")
    o.add_argument("--details", action="store_true", help="per-file outcomes: a table after the text report, "
                                                         "or a 'files' list in the JSON one")
    o.add_argument("--quiet", action="store_true", help="no event lines (what happens to the run itself - draining, aborting, a dead worker - still goes to stderr)")
    o.add_argument("--progress", type=_one_of(PROGRESS), default=d.progress, metavar="{auto,on,off}",
                   help="a live view on stderr (files done/total, files/s, ETA, queues, busy workers, the "
                        "shutdown phase) when stderr is a terminal; auto: for a long run - more than 200 "
                        "files, or an --input over 16 KiB or streamed - unless --quiet; it replaces the event "
                        "lines; richer with the progress extra (default %(default)s)")
    o.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    return p


def config_from_args(ns: argparse.Namespace) -> Config:
    fields = {k: v for k, v in vars(ns).items() if k in Config.__dataclass_fields__ and k != "fault_plan"}
    for name in ("s3_latency", "api_latency"):
        fields[name] = tuple(fields[name])
    fields["faults"] = tuple(fields["faults"])
    return Config(**fields)


def parse_config(argv: Sequence[str] | None, prog: str, description: str = "", variant: str | None = None) -> Config:
    """Parse a run's flags; with ``variant``, also reject (one line, exit 2) a flag that does not
    apply to it."""
    parser = build_parser(prog, description, variant)
    ns = parser.parse_args(argv)
    try:
        config = config_from_args(ns)
    except UsageError as exc:
        parser.error(str(exc))
    problem = applicable(config, variant) if variant is not None else None
    if problem is not None:
        parser.error(problem)
    return config


def usage_exit(prog: str, message: str) -> NoReturn:
    say(f"{prog}: error: {message}")
    raise SystemExit(2)
