"""``--input``: JSON Lines and CSV records, bad lines as data, unreadable input, in every variant.

The schema and its decisions are in docs/input.md; the hostile campaign is test_hostile_input.py."""
from __future__ import annotations

import io
import json

import pytest

from pillpipe.common.config import Config, UsageError
from pillpipe.common.model import FileRecord, Outcome
from pillpipe.common.source import InputError, records

from .conftest import MODULES, cli, fast

pytestmark = pytest.mark.timeout(60)

JSONL = "\n".join([
    '{"id": 1, "name": "a.pdf", "size": 10}',
    "",
    "null",
    '{"id": 2, "name": "b.pdf", "source_bucket": "src", "source_key": "k/b.pdf"}',
    "{bad json",
    '{"id": 1, "name": "again.pdf"}',
    '{"id": "3", "name": "c.pdf"}',
    "   ",
    '{"name": "no-id.pdf"}',
    '{"id": 4, "name": ""}',
    '{"id": 5, "name": "e.pdf", "size": "big"}',
    "[1, 2]",
    '{"id": 6, "name": "f.pdf"}',
]) + "\n"

CSV = "\ufeffid,name,size\n1,a.pdf,10\n\n2,b.pdf,\n1,again.pdf,3\nx,c.pdf,1\n7\n3,\"d,quoted.pdf\",4\n"


def write(tmp_path, name: str, text: str | bytes):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def rejected(report) -> dict[int, tuple[str, str]]:
    return {f["line"]: (f["outcome"], f["error"]) for f in report.files if "line" in f}


def test_malformed_null_duplicate_and_blank_jsonl_lines(run, tmp_path):
    report = run(fast(input=write(tmp_path, "in.jsonl", JSONL), details=True))
    assert (report.expected, report.success, report.invalid, report.duplicate) == (11, 3, 7, 1)
    assert report.terminal_total == report.expected and report.processed == 3
    bad = rejected(report)
    assert set(bad) == {3, 5, 6, 7, 9, 10, 11, 12}  # blank lines 2 and 8 are skipped, not counted
    assert bad[3] == ("invalid", "line 3: expected an object, got null")
    assert bad[5] == ("invalid", "line 5: bad JSON (Expecting property name enclosed in double quotes at column 2)")
    assert bad[6] == ("duplicate", "line 6: id 1 seen before")
    assert bad[7] == ("invalid", "line 7: 'id' must be a whole number from 0 to 2^63-1 (got '3')")
    assert bad[9] == ("invalid", "line 9: 'id' must be a whole number from 0 to 2^63-1")
    assert bad[10] == ("invalid", "line 10: 'name' must be a non-empty string")
    assert bad[11] == ("invalid", "line 11: 'size' must be a whole number from 0 to 2^63-1 (got 'big')")
    assert bad[12] == ("invalid", "line 12: expected an object, got an array")
    assert bad[9][0] == bad[10][0] == bad[11][0] == bad[12][0] == "invalid"
    assert sorted(f["id"] for f in report.files if f.get("outcome") == "success") == [1, 2, 6]
    assert report.errors == []


def test_csv_with_a_header_a_bom_and_bad_rows(run, tmp_path):
    report = run(fast(input=write(tmp_path, "in.csv", CSV), details=True))
    assert (report.expected, report.success, report.invalid, report.duplicate) == (6, 3, 2, 1)
    bad = rejected(report)
    assert bad[5] == ("duplicate", "line 5: id 1 seen before")
    assert bad[6] == ("invalid", "line 6: 'id' must be a whole number from 0 to 2^63-1 written with the digits 0-9 "
                                 "(got 'x')")
    assert bad[7] == ("invalid", "line 7: expected 3 fields, got 1")
    assert {f["name"] for f in report.files if f.get("outcome") == "success"} == {"a.pdf", "b.pdf", "d,quoted.pdf"}


def test_input_format_flag_overrides_the_extension(run, tmp_path):
    path = write(tmp_path, "records.txt", "id,name\n1,a.pdf\n2,b.pdf\n")
    assert run(fast(input=path, input_format="csv")).success == 2
    assert run(fast(input=path, input_format="jsonl")).invalid == 3  # read as JSON Lines: three bad lines
    csv_named = write(tmp_path, "records.jsonl", "id,name\n1,a.pdf\n")
    assert run(fast(input=csv_named, input_format="csv")).success == 1


@pytest.mark.parametrize("name, fmt", [("a.jsonl", "jsonl"), ("a.NDJSON", "jsonl"), ("a.csv", "csv"), ("A.CSV", "csv"),
                                       ("records", "jsonl"), ("-", "jsonl"), ("dir.v2/records", "jsonl")])
def test_the_format_comes_from_the_extension(name, fmt):
    from pillpipe.common.source import input_format
    assert input_format(name, None) == fmt
    Config(input=name)  # accepted


@pytest.mark.parametrize("name", ["a.tsv", "a.json", "a.txt", "a.jsonl.gz", "a.csv.bak"])
def test_an_unknown_extension_is_a_usage_error(name):
    with pytest.raises(UsageError, match="unknown extension.*--input-format"):
        Config(input=name)
    Config(input=name, input_format="csv")  # naming the format is enough


def test_an_unknown_extension_on_the_command_line(variant, tmp_path):
    path = write(tmp_path, "in.tsv", "id\tname\n1\ta.pdf\n")
    done = cli(MODULES[variant], "--input", path, "--time-scale", "0")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "unknown extension '.tsv'" in done.stderr and "--input-format" in done.stderr
    done = cli(MODULES[variant], "--input", path, "--input-format", "csv", "--time-scale", "0", "--json", "--details")
    report = json.loads(done.stdout)  # read as CSV: the header is one column, so every row says why
    assert done.returncode == 1 and report["invalid"] == 1
    assert report["files"][0]["error"] == ("line 2: no usable header (line 1 has no 'id' column - the delimiter "
                                           "must be a comma)")


@pytest.mark.parametrize("text", ["", "\n\n   \n"])
def test_empty_input(variant, tmp_path, text):
    done = cli(MODULES[variant], "--input", write(tmp_path, "empty.jsonl", text), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["expected"] == report["processed"] == 0 and report["errors"] == []


@pytest.mark.parametrize("path, message", [("missing.jsonl", "No such file or directory"), (".", "is a directory")])
def test_a_missing_or_unreadable_path_is_a_usage_error(variant, tmp_path, path, message):
    done = cli(MODULES[variant], "--input", str(tmp_path / path))
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1 and message in done.stderr
    assert "Traceback" not in done.stderr


def test_input_from_stdin(variant):
    done = cli(MODULES[variant], "--input", "-", "--time-scale", "0", "--json",
               stdin='{"id": 1, "name": "a.pdf"}\nnull\n{"id": 2, "name": "b.pdf"}\n')
    assert done.returncode == 1, done.stderr  # one invalid record: not every file succeeded
    report = json.loads(done.stdout)
    assert (report["expected"], report["success"], report["invalid"]) == (3, 2, 1)


def test_a_line_that_is_not_utf8_is_invalid_and_its_neighbours_stand(variant, tmp_path):
    """Invalid UTF-8 at line 11: that record is invalid, lines 1-10 and 12 succeed, exit 1, and the
    text report says which line and why."""
    lines = [json.dumps({"id": i, "name": f"f{i}.pdf"}).encode() for i in range(1, 11)]
    lines += [b'{"id": 11, "name": "\xff\xfe.pdf"}', b'{"id": 12, "name": "l.pdf"}']
    path = write(tmp_path, "broken.jsonl", b"\n".join(lines) + b"\n")
    done = cli(MODULES[variant], "--input", path, "--time-scale", "0", "--quiet")
    assert done.returncode == 1 and done.stderr == ""
    assert "Expected: 12\nProcessed: 11\nSuccess: 11\nFailed: 0\nInvalid: 1\n" in done.stdout
    assert "Rejected:\n  line 11 (invalid): not UTF-8 (invalid start byte at byte 21)\n" in done.stdout


def test_input_failing_mid_read_keeps_what_was_read(run):
    """A read error (EIO here: /proc/self/mem at offset 0) ends the input: what was read stands, the
    error says where, exit 1."""
    report = run(fast(input="/proc/self/mem"))
    assert report.expected == 0 and report.stopped_by is None
    assert report.errors == ["input failed at line 1 ([Errno 5] Input/output error): no line was read, "
                             "the rest is unknown"]


class _Failing(io.RawIOBase):
    """A stream that gives ``data`` and then fails, as a disk or a network mount can."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if not self.data:
            raise OSError(5, "Input/output error")
        chunk, self.data = self.data[:7], self.data[7:]
        return chunk


def test_a_read_error_mid_stream_keeps_every_line_before_it():
    items = []
    with pytest.raises(InputError, match=r"input failed at line 4 \(.*\): lines 1-3 were read, the rest is unknown"):
        for item in records(0, _Failing(b'{"id": 1, "name": "a"}\nnull\n{"id": 2, "name": "b"}\n{"id": 3,'), "jsonl"):
            items.append(item)
    assert [i.outcome if not isinstance(i, FileRecord) else i.id for i in items] == [1, Outcome.INVALID, 2]


def test_input_reports_are_equal_across_variants(tmp_path):
    from pillpipe import asyncio_version
    from pillpipe import threaded
    config = fast(input=write(tmp_path, "in.jsonl", JSONL), details=True, fail_rate=0.3, seed=3)
    assert threaded.run(config) == asyncio_version.run(config)


def test_a_json_number_too_big_for_int_is_an_invalid_line(run, tmp_path):
    """json.loads raises a plain ValueError (no ``.msg``) past int's digit limit: still one bad line
    (the reader never converts a number that long: no id can have so many digits)."""
    text = '{"id": ' + "1" * 5000 + ', "name": "huge.pdf"}\n{"id": 2, "name": "b.pdf"}\n'
    report = run(fast(input=write(tmp_path, "in.jsonl", text), details=True))
    assert (report.expected, report.success, report.invalid) == (2, 1, 1)
    outcome, error = rejected(report)[1]
    assert (outcome, error) == ("invalid", "line 1: 'id' must be a whole number from 0 to 2^63-1")
