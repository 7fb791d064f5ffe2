"""``--input``: JSON Lines and CSV records, bad lines as data, unreadable input, in both variants."""
from __future__ import annotations

import json

import pytest

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
    assert bad[5][0] == "invalid" and bad[5][1].startswith("line 5: bad JSON")
    assert bad[6] == ("duplicate", "id 1 seen before")
    assert bad[7] == ("invalid", "line 7: 'id' must be an integer")
    assert bad[9][0] == bad[10][0] == bad[11][0] == bad[12][0] == "invalid"
    assert sorted(f["id"] for f in report.files if f.get("outcome") == "success") == [1, 2, 6]
    assert report.errors == []


def test_csv_with_a_header_a_bom_and_bad_rows(run, tmp_path):
    report = run(fast(input=write(tmp_path, "in.csv", CSV), details=True))
    assert (report.expected, report.success, report.invalid, report.duplicate) == (6, 3, 2, 1)
    bad = rejected(report)
    assert bad[5] == ("duplicate", "id 1 seen before")
    assert bad[6] == ("invalid", "line 6: 'id' must be an integer")
    assert bad[7] == ("invalid", "line 7: wrong number of columns")
    assert {f["name"] for f in report.files if f.get("outcome") == "success"} == {"a.pdf", "b.pdf", "d,quoted.pdf"}


def test_input_format_flag_overrides_the_extension(run, tmp_path):
    path = write(tmp_path, "records.txt", "id,name\n1,a.pdf\n2,b.pdf\n")
    assert run(fast(input=path, input_format="csv")).success == 2
    assert run(fast(input=path)).invalid == 3  # read as JSON Lines: three bad lines


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


def test_input_failing_mid_stream_keeps_what_was_read(variant, tmp_path):
    """Invalid UTF-8 at line 11: lines 1-10 stand, the rest is unknown, exit 1."""
    lines = [json.dumps({"id": i, "name": f"f{i}.pdf"}).encode() for i in range(1, 11)]
    lines += [b'{"id": 11, "name": "\xff\xfe.pdf"}', b'{"id": 12, "name": "l.pdf"}']
    path = write(tmp_path, "broken.jsonl", b"\n".join(lines) + b"\n")
    done = cli(MODULES[variant], "--input", path, "--time-scale", "0", "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["expected"] == report["success"] == 10
    assert report["errors"] == ["input unreadable at line 11 (invalid start byte): lines 1-10 were read, "
                                "the rest is unknown"]
    assert "line 11" in done.stderr and "Traceback" not in done.stderr


def test_input_reports_are_equal_across_variants(tmp_path):
    from pillpipe import asyncio_version
    from pillpipe import threaded
    config = fast(input=write(tmp_path, "in.jsonl", JSONL), details=True, fail_rate=0.3, seed=3)
    assert threaded.run(config) == asyncio_version.run(config)


def test_a_json_number_too_big_for_int_is_an_invalid_line(run, tmp_path):
    """json.loads raises a plain ValueError (no ``.msg``) past int's digit limit: still one bad line."""
    text = '{"id": ' + "1" * 5000 + ', "name": "huge.pdf"}\n{"id": 2, "name": "b.pdf"}\n'
    report = run(fast(input=write(tmp_path, "in.jsonl", text), details=True))
    assert (report.expected, report.success, report.invalid) == (2, 1, 1)
    outcome, error = rejected(report)[1]
    assert outcome == "invalid" and error.startswith("line 1: bad JSON (Exceeds the limit")
