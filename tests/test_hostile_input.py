"""Hostile edges on the input side (issue 10: classes 1, 2, 3, 6, 10; issue 9: the fault grammar and
input that explains itself).

- every record ends in exactly one state, with its line number: a campaign of hostile records
  (random bytes, huge numbers, deep nesting, encodings, lone surrogates, control characters, CSV
  dialects, long lines, NULs, BOMs, mixed line endings) with a known answer per line, checked on
  the reader alone (hypothesis), through every model and the sequential reference (seeded), and
  through the real command line (exit 0 or 1, never 70, never a traceback);
- memory stays bounded whatever the input: ``/dev/zero`` under an address-space limit, a line
  longer than the limit, duplicate detection on dense ids;
- streams the process itself is about: a FIFO, a closed stdin;
- every flag has a range, and the extremes it accepts behave the same in every model;
- a fault that can never fire is a usage error that says why.
"""
from __future__ import annotations

import errno
import io
import json
import os
import resource
import signal
import subprocess
import sys
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pillpipe.common.config import LIMITS, Config, UsageError
from pillpipe.common.faults import FaultPlan
from pillpipe.common.model import FileRecord, Rejected, Stage
from pillpipe.common.source import MAX_LINE, MAX_SKIP, InputError, _Seen, records

from . import hostile
from .conftest import MODULES, ROOT, cli, fast, run_sequential
from .test_signals import child_of

pytestmark = pytest.mark.timeout(120)


def parse(data: bytes, fmt: str, chunk: int | None = None) -> dict[int, str]:
    """``line -> state`` as the reader decides it (each line at most once)."""
    stream = _Trickle(data, chunk) if chunk else io.BytesIO(data)
    states: dict[int, str] = {}
    for item in records(0, stream, fmt):
        line = item._line if isinstance(item, FileRecord) else item.line  # type: ignore[attr-defined]
        assert line not in states, f"line {line} twice"
        states[line] = "success" if isinstance(item, FileRecord) else item.outcome.value
    return states


class _Trickle(io.RawIOBase):
    """A pipe that gives a few bytes per read: every line end lands on a read boundary somewhere."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self.data, self.chunk = data, chunk

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        out, self.data = self.data[:min(n, self.chunk)], self.data[min(n, self.chunk):]
        return out


def write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def check(report, hostile_file: hostile.Hostile) -> None:
    """The report says, line by line, what the file's construction says."""
    expected = hostile_file.expected
    assert report.expected == report.terminal_total == len(expected)
    assert report.errors == [] and report.stopped_by is None
    rejected = {f["line"]: f["outcome"] for f in report.files if "line" in f}
    assert rejected == {line: state for line, state in expected.items() if state != "success"}
    succeeded = sorted(f["id"] for f in report.files if f["outcome"] == "success")
    assert succeeded == sorted(hostile_file.ids.values())
    assert report.success == report.processed == len(succeeded)


# The reader: every record in exactly one state, with its line -----------------------------------------------------
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), fmt=st.sampled_from(["jsonl", "csv"]), rnd=st.randoms(use_true_random=False))
def test_every_hostile_record_ends_in_its_state_on_its_line(data, fmt, rnd):
    builders = hostile.CSV if fmt == "csv" else hostile.JSONL
    kinds = data.draw(st.lists(st.sampled_from(sorted(builders)), max_size=25))
    built = hostile.build(fmt, kinds, rnd, builders)
    chunk = data.draw(st.sampled_from([None, 1, 2, 3, 7]))
    assert parse(built.data, fmt, chunk) == built.expected


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=3000), fmt=st.sampled_from(["jsonl", "csv"]), chunk=st.sampled_from([None, 1, 5]))
def test_arbitrary_bytes_never_raise_and_each_record_keeps_its_line(data, fmt, chunk):
    states = parse(data, fmt, chunk)
    lines = data.splitlines()  # bytes: \n, \r\n and a lone \r, as the reader splits them
    assert all(1 <= line <= len(lines) for line in states)
    if fmt == "jsonl":  # every line that is not blank is exactly one record
        def blank(number: int, line: bytes) -> bool:
            try:
                text = line.decode()
            except UnicodeDecodeError:
                return False
            return not (text[1:] if number == 1 and text.startswith("\ufeff") else text).strip(" \t")
        assert set(states) == {n for n, line in enumerate(lines, 1) if not blank(n, line)}


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("seed", range(4))
def test_seeded_campaigns_with_long_lines(fmt, seed):
    built = hostile.campaign(fmt, seed)
    assert parse(built.data, fmt) == built.expected


# Every model and the sequential reference --------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_hostile_campaign_in_every_model_equals_the_sequential_reference(run, fmt, tmp_path):
    for seed in (11, 12):
        built = hostile.campaign(fmt, seed, count=40)
        config = fast(input=write(tmp_path, f"in{seed}.{fmt}", built.data), details=True, queue_size=seed % 3)
        report = run(config)
        check(report, built)
        assert report == run_sequential(config)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_the_command_line_never_dies_on_hostile_input(variant, fmt, tmp_path):
    """The real process: exit 1 (some records are invalid), never 70, no traceback; the text report
    names the first rejected records with their lines and counts the rest."""
    built = hostile.campaign(fmt, 5)
    path = write(tmp_path, f"in.{fmt}", built.data)
    done = cli(MODULES[variant], "--input", path, "--time-scale", "0", "--quiet")
    assert done.returncode == 1 and done.stderr == "", done.stderr
    bad = sorted(line for line, state in built.expected.items() if state != "success")
    assert f"\nExpected: {len(built.expected)}\n" in done.stdout
    shown = [line.strip() for line in done.stdout.split("Rejected:\n")[1].splitlines()[:10]]
    assert [int(s.split()[1]) for s in shown] == bad[:10]
    assert f"  ... and {len(bad) - 10} more (every one: --details)" in done.stdout


def test_the_sequential_command_line_never_dies_on_hostile_input(tmp_path):
    built = hostile.campaign("jsonl", 6)
    done = cli("pillpipe", "run", "sequential", "--input", write(tmp_path, "in.jsonl", built.data),
               "--time-scale", "0", "--quiet", "--json")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert json.loads(done.stdout)["expected"] == len(built.expected)


def test_the_reproducers_of_issue_10(run, tmp_path):
    """Class 1 and 2, one record each: a 5,000-digit id, nesting past the recursion limit, a CSV field
    over the csv module's limit, a CSV with CR-only line endings, a lone surrogate in a name."""
    jsonl = (b'{"id": ' + b"9" * 5000 + b', "name": "a"}\n' + b"[" * 100_000 + b"\n"
             b'{"id": 3, "name": "\\ud800"}\n{"id": 4, "name": "ok.pdf"}\n')
    report = run(fast(input=write(tmp_path, "in.jsonl", jsonl), details=True))
    assert (report.expected, report.invalid, report.success) == (4, 3, 1)
    assert sorted(f["error"] for f in report.files if f["outcome"] == "invalid") == [
        "line 1: 'id' must be a whole number from 0 to 2^63-1",
        "line 2: bad JSON (nested too deeply)",
        "line 3: 'name' is not valid Unicode (a lone surrogate): '\\ud800'"]
    assert json.dumps(report.to_dict()).encode("utf-8")  # nothing unencodable reaches the report
    big = b"id,name\r1," + b"n" * 200_000 + b"\r2,b.pdf\r\r3,c.pdf"
    report = run(fast(input=write(tmp_path, "cr.csv", big), details=True))
    assert (report.expected, report.invalid, report.success) == (3, 1, 2)
    assert [f["error"] for f in report.files if f["outcome"] == "invalid"] == [
        "line 2: bad CSV (field larger than field limit (131072))"]


# CSV decisions (class 10) -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["1_000", "٣", "۳", "١٠", "１", " +3 ", "+3", " 3", "3 ", "-3", "3.0", "0x3", "3e0",
                                  "", "9" * 20, str(2**63)])
def test_csv_ids_are_plain_ascii_digits(text):
    states = parse(b"id,name\n" + f"{text},a.pdf\n".encode(), "csv")
    assert states == {2: "invalid"}


@pytest.mark.parametrize("text, value", [("0", 0), ("007", 7), (str(2**63 - 1), 2**63 - 1), ("0" * 30 + "5", 5)])
def test_csv_ids_in_range_with_leading_zeros_are_accepted(text, value):
    [item] = records(0, io.BytesIO(f"id,name\n{text},a.pdf\n".encode()), "csv")
    assert isinstance(item, FileRecord) and item.id == value


def test_blank_lines_inside_quoted_csv_fields_are_kept(run, tmp_path):
    """A quoted field may hold line ends, blank lines included: they belong to the field (here an
    ignored 'note' column), and every later record keeps its own line number."""
    text = ('id,note,name\n1,"first\n\nthird\n",a.pdf\n\n2,"",b.pdf\n3,"x\n\n",c.pdf\n\n'
            '4,ok,"two\n\nlines"\n5,ok,e.pdf\n').encode()
    assert parse(text, "csv") == {2: "success", 7: "success", 8: "success", 12: "invalid", 15: "success"}
    report = run(fast(input=write(tmp_path, "in.csv", text), details=True))
    assert (report.expected, report.success, report.invalid) == (5, 4, 1)
    assert [f["error"] for f in report.files if f["outcome"] == "invalid"] == [
        "line 12: 'name' contains a control character: 'two\\n\\nlines' (the record spans lines 12-14)"]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_csv_and_jsonl_read_every_line_ending(ending):
    csv_data = ending.join([b"id,name", b"1,a", b'2,"b', b'c"', b"3,d"]) + ending
    assert parse(csv_data, "csv") == {2: "success", 3: "invalid", 5: "success"}  # 3: a name with a line end
    jsonl_data = ending.join([b'{"id": 1, "name": "a"}', b"", b'{"id": 2, "name": "b"}'])
    assert parse(jsonl_data, "jsonl") == {1: "success", 3: "success"}


@pytest.mark.parametrize("header, reason", [
    ("id;name", "line 1 has no 'id' column - the delimiter must be a comma"),
    ("id\tname", "line 1 has no 'id' column - the delimiter must be a comma"),
    ("name,size", "line 1 has no 'id' column"),
    ("id,size", "line 1 has no 'name' column"),
    ("id,name,ID", "line 1 repeats column 'id'"),
])
def test_a_csv_header_that_cannot_be_used_says_why_on_every_row(header, reason):
    items = list(records(0, io.BytesIO(f"{header}\n1;a\n2;b\n".encode()), "csv"))
    assert [i.error for i in items] == [f"line 2: no usable header ({reason})", f"line 3: no usable header ({reason})"]


def test_csv_header_names_are_trimmed_and_case_blind_and_unknown_columns_ignored():
    [item] = records(0, io.BytesIO(b"\xef\xbb\xbf ID , Name ,Comment\n5,e.pdf,whatever\n"), "csv")
    assert (item.id, item.name) == (5, "e.pdf")


# Bounded memory (class 3, input side; class 10) --------------------------------------------------------------------
class _Endless(io.RawIOBase):
    """``size`` bytes of one line (no line end for a while), then a short valid line."""

    def __init__(self, size: int, tail: bytes = b'\n{"id": 1, "name": "after.pdf"}\n') -> None:
        self.left, self.tail = size, tail

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.left > 0:
            chunk = b"z" * min(n, self.left)
            self.left -= len(chunk)
            return chunk
        out, self.tail = self.tail[:n], self.tail[n:]
        return out


def test_a_line_over_the_limit_is_invalid_and_never_held():
    tracemalloc.start()
    try:
        items = list(records(0, _Endless(40 * MAX_LINE), "jsonl"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [i.error if isinstance(i, Rejected) else i.name for i in items] == [
        "line 1: longer than 1 MiB (1048576 bytes)", "after.pdf"]
    assert peak < 4 * MAX_LINE  # 40 MiB went through; at most the limit (plus a chunk) was held


def test_a_line_of_exactly_the_limit_is_read():
    line = b'{"id": 1, "name": "a", "pad": "' + b"p" * (MAX_LINE - 33) + b'"}'
    assert len(line) == MAX_LINE
    assert parse(line + b"\n" + line[:-2] + b'p"}', "jsonl") == {1: "success", 2: "invalid"}


def test_an_input_with_no_line_end_is_given_up_after_max_skip():
    items = []
    with pytest.raises(InputError, match=r"input unreadable at line 1 \(no line end within 64 MiB\)"):
        for item in records(0, _Endless(MAX_SKIP + 2 * MAX_LINE, tail=b""), "csv"):
            items.append(item)
    assert items == []  # CSV: the first line is the header, and it was never read


def _limit_memory() -> None:
    limit = 512 << 20  # address space: a run needs ~200 MiB; reading a growing line would need more
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_dev_zero_ends_in_bounded_memory_and_time(variant):
    """No line end, ever: line 1 is invalid, the input is given up after 64 MiB, exit 1 - under a
    512 MiB address-space limit (before: memory grew by hundreds of MB/s, then exit 70)."""
    started = time.monotonic()
    done = cli(MODULES[variant], "--input", "/dev/zero", "--time-scale", "0", "--json", preexec_fn=_limit_memory)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert (report["expected"], report["invalid"]) == (1, 1)
    assert report["rejected"] == ["line 1 (invalid): longer than 1 MiB (1048576 bytes)"]
    assert report["errors"] == ["input unreadable at line 1 (no line end within 64 MiB): line 1 was read, "
                                "the rest is unknown"]
    assert "Traceback" not in done.stderr and time.monotonic() - started < 60


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.one_of(st.integers(0, 3000), st.integers(0, 2**63 - 1)), max_size=400))
def test_duplicate_detection_is_exact_for_any_ids(ids):
    seen, reference = _Seen(), set()
    for value in ids:
        assert seen.add(value) == (value not in reference)
        reference.add(value)


def test_dense_ids_cost_a_bit_each():
    seen = _Seen()
    count = 2_000_000
    assert all(seen.add(i) for i in range(1, count + 1))
    assert not seen.add(count // 2) and not seen.sparse
    assert len(seen.bits) <= count // 8 + _Seen.BASE  # ~250 KB for 2M ids (a set of them: ~100 MB)


# Streams the process is about: a FIFO, a closed stdin (class 3, input side) -----------------------------------------
def _open_fifo_for_writing(path: str, proc: subprocess.Popen, timeout: float = 20) -> int:
    """Open the FIFO's write end once the run has opened its read end (never blocks: a run that
    never opens it fails the test instead of hanging it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO or proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
            continue
        os.set_blocking(fd, True)
        return fd


def test_a_fifo_as_input_is_opened_once_by_the_run(variant, tmp_path):
    """The command line checks a FIFO without opening it: the run is its only reader, so a writer that
    takes its time (here 0.3 s before its first line) loses nothing."""
    fifo = str(tmp_path / "records")
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.Popen([sys.executable, "-m", MODULES[variant], "--input", fifo, "--time-scale", "0", "--json",
                             "--quiet"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        fd = _open_fifo_for_writing(fifo, proc)
        time.sleep(0.3)
        with os.fdopen(fd, "w") as writer:
            for i in range(1, 6):
                writer.write(json.dumps({"id": i, "name": f"f{i}.pdf"}) + "\n")
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert json.loads(out)["success"] == 5


def test_stdin_closed_is_one_clean_line(variant):
    done = cli(MODULES[variant], "--input", "-", preexec_fn=lambda: os.close(0))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.endswith("error: --input -: stdin is closed\n") and done.stderr.count("\n") == 1


def test_stdin_at_its_end_at_once_is_an_empty_input(variant):
    done = cli(MODULES[variant], "--input", "-", "--time-scale", "0", "--json", stdin="")
    assert done.returncode == 0 and json.loads(done.stdout)["expected"] == 0


# Every flag has a range; the extremes it accepts behave the same in every model (class 6) --------------------------
OUT_OF_RANGE = [
    dict(files=10**9 + 1), dict(files=-1), dict(seed=-1), dict(seed=2**64), dict(s3_workers=0),
    dict(api_workers=1_000_001), dict(queue_size=-1), dict(queue_size=10**9 + 1), dict(retries=101),
    dict(retries=1100), dict(s3_latency=(0, 3601)), dict(api_latency=(1e10, 1e10)), dict(api_latency=(-1, 1)),
    dict(time_scale=101), dict(time_scale=float("inf")), dict(retry_backoff=1e300), dict(retry_backoff=-0.1),
    dict(fail_rate=1.01), dict(fail_rate=float("nan")), dict(stage_timeout=1e10), dict(stage_timeout=0),
    dict(shutdown_grace=86400.5), dict(shutdown_grace=-1),
    dict(retries=40, retry_backoff=1), dict(retries=31, retry_backoff=1, time_scale=1),
    dict(retries=20, retry_backoff=3600, time_scale=100),
    dict(faults=("s3:id=1:slow=inf",)), dict(faults=("s3:id=1:slow=nan",)), dict(faults=("s3:id=1:slow=1001",)),
    dict(faults=("s3:id=1:slow=-1",)), dict(faults=("s3:id=1:raise:times=0",)),
    dict(faults=("s3:worker=0:after=1:die",)), dict(faults=(f"s3:id={2**63}:raise",)),
]


@pytest.mark.parametrize("values", OUT_OF_RANGE, ids=[repr(v)[:60] for v in OUT_OF_RANGE])
def test_every_value_outside_its_range_is_a_usage_error(values):
    with pytest.raises(UsageError) as caught:
        Config(**values)
    assert "\n" not in str(caught.value)


HELP_RANGES = {  # how --help states each range in LIMITS
    "files": ("--files 0..10^9", 0, 10**9), "seed": ("--seed 0..2^64-1", 0, 2**64 - 1),
    "s3_workers": ("--s3-workers/--api-workers 1..10^6", 1, 10**6),
    "api_workers": ("--s3-workers/--api-workers 1..10^6", 1, 10**6),
    "queue_size": ("--queue-size 0..10^9", 0, 10**9), "batch": ("--batch 1..1024", 1, 1024),
    "retries": ("--retries 0..100", 0, 100),
    "s3_latency": ("--s3-latency/--api-latency 0..3600 s", 0, 3600), "api_latency": ("--api-latency 0..3600 s", 0, 3600),
    "time_scale": ("--time-scale 0..100", 0, 100), "retry_backoff": ("--retry-backoff 0..3600 s", 0, 3600),
    "fail_rate": ("--fail-rate 0..1", 0, 1), "stage_timeout": ("--stage-timeout/--shutdown-grace", 0, 86400),
    "shutdown_grace": ("--shutdown-grace above 0, at most 86400 s", 0, 86400),
    "processes": ("--processes 0..64", 0, 64), "broker_wait": ("--broker-wait above 0, at most 86400 s", 0, 86400),
}


def test_every_range_is_stated_in_help():
    ranges = " ".join(cli("threaded", "--help").stdout.split("ranges (a value outside is a usage error):")[1]
                      .split("exit codes")[0].split())
    assert set(HELP_RANGES) == set(LIMITS)
    for name, (words, low, high) in HELP_RANGES.items():
        assert LIMITS[name] == (low, high), name
        assert words in ranges or words.replace("--api-latency", "--s3-latency/--api-latency") in ranges or \
            words.replace("--shutdown-grace", "--stage-timeout/--shutdown-grace") in ranges, words


@pytest.mark.parametrize("args, message", [
    (["--retries", "1100"], "--retries must be a whole number from 0 to 100 (got 1100)"),
    (["--stage-timeout", "1e10"], "--stage-timeout must be a number above 0 and at most 86400"),
    (["--api-latency", "1e10", "1e10"], "--api-latency needs two numbers from 0 to 3600 seconds"),
    (["--retry-backoff", "1e300"], "--retry-backoff must be a number from 0 to 3600"),
    (["--fault", "s3:id=1:slow=inf"], "slow=F needs a number from 0 to 1000 (got 'inf')"),
    (["--retries", "40", "--retry-backoff", "1"], "the longest wait allowed is 1e9 s"),
])
def test_the_reproducers_of_class_6_are_usage_errors(variant, args, message):
    done = cli(MODULES[variant], *args)
    assert done.returncode == 2 and done.stdout == "" and done.stderr.count("\n") == 1
    assert message in done.stderr and "Traceback" not in done.stderr


def test_the_most_retries_with_the_longest_backoff_at_scale_0_run_the_same_everywhere(run):
    """100 retries of a 3600 s backoff doubling (2^99 x 3600 s before the last one) at --time-scale 0:
    no float overflow, 101 attempts per file, the sequential reference's report."""
    config = fast(files=4, retries=100, retry_backoff=3600, fail_rate=1, details=True)
    report = run(config)
    assert report.failed == 4 and {f["s3_attempts"] for f in report.files} == {101}
    assert report == run_sequential(config)


def test_the_longest_accepted_waits_are_real_waits_in_every_model():
    """The longest call the ranges allow (3600 s x time scale 100 x slow=1000 = 3.6e8 s), a 3.6e5 s
    backoff and a hang are each waited on - a thread's wait takes them, no "timestamp out of range" -
    and an abort ends them: the same report in every model."""
    reports = []
    for variant in MODULES:
        child = child_of(variant, "--files", "3", "--s3-latency", "0", "0", "--api-latency", "3600", "3600",
                      "--time-scale", "100", "--fault", "api:id=1:slow=1000", "--fault", "s3:id=2:hang",
                      "--fault", "s3:id=3:raise", "--retries", "1", "--retry-backoff", "3600")
        for marker in ("attempt 1/2 for [file_102.pdf] failed", "stored file [file_100.pdf]"):
            if not any(marker in line for line in child.seen):  # file 1 in its upload, file 3 in its backoff
                child.wait_for(marker)
        time.sleep(0.3)
        child.send(signal.SIGINT)
        child.wait_for("draining")
        child.send(signal.SIGINT)
        code, report, err, _ = child.finish()
        assert code == 130 and report["aborted"] == report["expected"] == 3, err
        states = {f["id"]: (f["last_stage"], f["s3_attempts"], f["api_attempts"]) for f in report["files"]}
        assert states == {1: ("s3", 1, 1), 2: ("dispatch", 1, 0), 3: ("dispatch", 1, 0)}
        reports.append({k: v for k, v in report.items() if k not in ("variant", "timing")})
    assert all(r == reports[0] for r in reports)


# Faults that can never fire (issue 9) -------------------------------------------------------------------------------
@pytest.mark.parametrize("config, message", [
    (dict(faults=("s3:id=100:raise",)), "can never fire: the generated files are ids 1..8 (file_100.pdf..file_107.pdf)"),
    (dict(faults=("api:id=0:hang",)), "can never fire: the generated files are ids 1..8"),
    (dict(files=0, faults=("s3:id=1:raise",)), "can never fire: --files 0 generates no file"),
    (dict(faults=("s3:worker=4:after=0:die",)), "can never fire: the s3 stage has 3 workers, numbered 1..3"),
    (dict(api_workers=1, faults=("api:worker=2:after=0:die",)), "can never fire: the api stage has 1 worker"),
    (dict(faults=("s3:worker=*:after=8:die",)), "can never fire: a worker takes at most 8 files (--files 8)"),
    (dict(files=3, faults=("verifier:after=3:crash",)), "can never fire: the verifier sees at most 3 files"),
    (dict(faults=("s3:name=file_99.pdf:raise",)), "generated files are named file_100.pdf, file_101.pdf, ..."),
    (dict(faults=("s3:name=a.pdf:raise",)), "generated files are named file_100.pdf"),
    (dict(faults=("s3:name=file_108.pdf:raise",)), "can never fire: the generated files are ids 1..8"),
    (dict(input="in.jsonl", faults=("s3:name=a.pdf:raise",)), "with --input, give the record's id (id=N)"),
    (dict(input="in.jsonl", faults=("s3:worker=9:after=1:die",)), "the s3 stage has 3 workers"),
    (dict(faults=("s3:id=1:raise", "s3:name=file_100.pdf:hang")), "a second fault for the same file and stage"),
    (dict(faults=("s3:id=1_0:raise",)), "id= needs a whole number written with the digits 0-9"),
    (dict(faults=("s3:id=٣:raise",)), "id= needs a whole number written with the digits 0-9"),
    (dict(faults=("s3:id=1:name=file_100.pdf:raise",)), "id= or name=, not both"),
])
def test_a_fault_that_can_never_fire_is_a_usage_error_that_says_why(config, message):
    with pytest.raises(UsageError, match="fault '.*'") as caught:
        Config(**config)
    assert message in str(caught.value)


def test_a_fault_names_a_generated_file_by_its_name(run):
    report = run(fast(faults=("s3:name=file_100.pdf:raise", "api:name=file_107.pdf:raise"), details=True))
    failed = {f["id"]: f["failed_stage"] for f in report.files if f["outcome"] == "failed"}
    assert failed == {1: "s3", 8: "api"}
    assert FaultPlan.parse(["s3:name=file_100.pdf:raise"]).files == FaultPlan.parse(["s3:id=1:raise"]).files


def test_with_input_a_fault_names_any_id_the_input_may_hold(run, tmp_path):
    """The ids are not known before the input is read: id=100 is accepted, and fires on the record
    whose id is 100."""
    path = write(tmp_path, "in.jsonl", b'{"id": 100, "name": "x.pdf"}\n{"id": 7, "name": "y.pdf"}\n')
    report = run(fast(input=path, faults=("s3:id=100:raise", "api:id=5:raise"), details=True))
    assert {f["id"]: f["outcome"] for f in report.files} == {100: "failed", 7: "success"}


def test_the_issue_9_reproducer_on_the_command_line(variant):
    done = cli(MODULES[variant], "--fault", "s3:id=100:raise")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "can never fire" in done.stderr and "name=file_N.pdf" in done.stderr
    done = cli(MODULES[variant], "--fault", "s3:name=file_100.pdf:raise", "--time-scale", "0", "--quiet")
    assert done.returncode == 1 and "Failed: 1" in done.stdout


def test_the_worker_checks_hold_for_the_flags_given():
    assert Config(s3_workers=5, faults=("s3:worker=5:after=7:die",)).fault_plan.workers[Stage.S3]
    assert Config(files=9, faults=("verifier:after=8:crash",)).fault_plan.verifier_after == 8


# Input that explains itself (issue 9, item 5) -----------------------------------------------------------------------
def test_the_text_report_lists_the_first_ten_rejected_records_and_counts_the_rest(variant, tmp_path):
    lines = [b"null"] * 12 + [b'{"id": 1, "name": "a.pdf"}'] * 3 + [b'{"name": "b.pdf"}']
    done = cli(MODULES[variant], "--input", write(tmp_path, "in.jsonl", b"\n".join(lines)), "--time-scale", "0",
               "--quiet")
    assert done.returncode == 1
    assert "Invalid: 13\nDuplicate: 2\nRejected:\n" + "".join(
        f"  line {n} (invalid): expected an object, got null\n" for n in range(1, 11)) + \
        "  ... and 5 more (every one: --details)\n" in done.stdout


def test_the_record_schema_is_in_help(variant):
    done = cli(MODULES[variant], "--help")
    for words in ("input records", "JSON Lines", "CSV", "required: id", "name", "optional: size", "source_bucket",
                  "source_key", "--input-format", "docs/input.md", "1 MiB", "name=file_100.pdf"):
        assert words in done.stdout, words


def test_docs_input_states_the_limits_the_code_uses():
    text = (ROOT / "docs" / "input.md").read_text()
    from pillpipe.common import source
    for fact in (f"{source.MAX_LINE:,}", f"{source.MAX_SKIP >> 20} MiB", "2^63-1", "131,072", ".ndjson", ".csv"):
        assert fact in text, fact


def test_rejected_reasons_never_carry_text_that_cannot_be_written(tmp_path, run):
    path = write(tmp_path, "in.jsonl", '{"id": 1, "name": "\\ud800\\udc00\\ud800"}\n{"id": 2, "name": "\\u001b[31m"}\n'
                 .encode())
    report = run(fast(input=path, details=True))
    assert report.invalid == 2
    report.format().encode("utf-8")
    report.to_json().encode("utf-8")
    assert all("\x1b" not in r for r in report.rejected)
