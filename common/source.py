"""Where files come from: the generated workload, or records read from JSON Lines / CSV.

Both are streamed (generators): the dispatcher never holds the whole list.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
from typing import IO, Iterator, TextIO

from .model import FileRecord, Outcome, Rejected
from .workload import generate_files

Item = FileRecord | Rejected


class InputError(Exception):
    """The input stopped being readable part-way; what was read before it stands."""


def open_input(path: str, fmt: str | None) -> tuple[TextIO, str]:
    """Open ``path`` (``-`` = stdin) for reading; raises ``OSError`` with a clear message."""
    if fmt is None:
        fmt = "csv" if path.lower().endswith(".csv") else "jsonl"
    if path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", newline=""), fmt
    if os.path.isdir(path):
        raise IsADirectoryError(f"--input {path}: is a directory")
    try:
        return open(path, encoding="utf-8", newline=""), fmt
    except OSError as exc:
        raise OSError(f"--input {path}: {exc.strerror or exc}") from None


def records(files: int, stream: IO[str] | None = None, fmt: str = "jsonl") -> Iterator[Item]:
    """The dispatcher's stream: generated files, or parsed input records in order."""
    if stream is None:
        return generate_files(files)
    return _deduplicated(_read_csv(stream) if fmt == "csv" else _read_jsonl(stream))


def _deduplicated(items: Iterator[Item]) -> Iterator[Item]:
    seen: set[int] = set()
    for item in items:
        if isinstance(item, FileRecord):
            if item.id in seen:
                yield Rejected(item._line, Outcome.DUPLICATE, f"id {item.id} seen before", item.id, item.name)  # type: ignore[attr-defined]
                continue
            seen.add(item.id)
        yield item


class _Line(FileRecord):
    """A parsed record that remembers its line number (for duplicates)."""

    __slots__ = ("_line",)
    _line: int


def _build(line: int, data: object) -> Item:
    if not isinstance(data, dict):
        kind = "null" if data is None else type(data).__name__
        return Rejected(line, Outcome.INVALID, f"line {line}: expected an object, got {kind}")
    file_id, name = data.get("id"), data.get("name")
    if isinstance(file_id, bool) or not isinstance(file_id, int):
        return Rejected(line, Outcome.INVALID, f"line {line}: 'id' must be an integer", None, _str(name))
    if not isinstance(name, str) or not name:
        return Rejected(line, Outcome.INVALID, f"line {line}: 'name' must be a non-empty string", file_id)
    size = data.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
        return Rejected(line, Outcome.INVALID, f"line {line}: 'size' must be an integer", file_id, name)
    bucket, key = data.get("source_bucket"), data.get("source_key")
    for field_name, value in (("source_bucket", bucket), ("source_key", key)):
        if value is not None and not isinstance(value, str):
            return Rejected(line, Outcome.INVALID, f"line {line}: '{field_name}' must be a string", file_id, name)
    record = _Line(file_id, name, size, bucket, key)
    record._line = line
    return record


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _lines(stream: IO[str]) -> Iterator[tuple[int, str]]:
    """Number and decode the input line by line.

    A text stream decodes ahead in chunks, so one bad byte at line 11 would lose lines 1-10
    with it; reading the underlying bytes and decoding each line keeps every line before
    the bad one.  A UTF-8 byte-order mark on the first line is dropped."""
    raw = getattr(stream, "buffer", None)
    encoding = getattr(stream, "encoding", None) or "utf-8"
    source = stream if raw is None else raw
    number = 0
    try:
        for number, chunk in enumerate(source, start=1):
            text = chunk.decode(encoding) if isinstance(chunk, bytes) else chunk
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield number, text
    except UnicodeDecodeError as exc:
        raise InputError(f"input unreadable at line {number} ({exc.reason}): {_kept(number - 1)}") from None
    except OSError as exc:
        raise InputError(f"input failed at line {number + 1} ({exc}): {_kept(number)}") from None


def _kept(lines: int) -> str:
    read = "no line was read" if lines == 0 else f"line{'s 1-' if lines > 1 else ' '}{lines} {'were' if lines > 1 else 'was'} read"
    return f"{read}, the rest is unknown"


def _read_jsonl(stream: IO[str]) -> Iterator[Item]:
    for number, text in _lines(stream):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except ValueError as exc:
            yield Rejected(number, Outcome.INVALID, f"line {number}: bad JSON ({exc.msg if isinstance(exc, json.JSONDecodeError) else exc})")
            continue
        yield _build(number, data)


def _read_csv(stream: IO[str]) -> Iterator[Item]:
    lines = _lines(stream)
    numbers: list[int] = []

    def texts() -> Iterator[str]:
        for number, text in lines:
            if text.strip():
                numbers.append(number)
                yield text

    reader = csv.DictReader(texts())
    for row in reader:
        number = numbers[-1] if numbers else 0
        if None in row or any(v is None for v in row.values()):
            yield Rejected(number, Outcome.INVALID, f"line {number}: wrong number of columns")
            continue
        data: dict[str, object] = {k: (v if v != "" else None) for k, v in row.items()}
        for key in ("id", "size"):
            value = data.get(key)
            if isinstance(value, str):
                try:
                    data[key] = int(value)
                except ValueError:
                    pass
        yield _build(number, data)
