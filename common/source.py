"""Where files come from: the generated workload, or records read from JSON Lines / CSV.

Both are streamed (generators): the dispatcher never holds the whole list.  No input can stop
the reading or grow its memory (the schema and every limit are in ``docs/input.md``):

- the input is split into lines here, in bounded chunks: a line ends at ``\\n``, ``\\r\\n`` or a
  lone ``\\r``; a line longer than ``MAX_LINE`` bytes is one ``invalid`` record and is skipped
  to its end without being held, and an input with no line end within ``MAX_SKIP`` bytes is
  given up (``InputError``), so memory stays bounded and ``/dev/zero`` ends;
- each line is decoded on its own (UTF-8), so a bad byte costs its own record, never the
  lines around it;
- every way a record can be malformed - not UTF-8, not JSON, nested too deeply, a number too
  big, a CSV field over the csv module's limit, a wrong type or range, text that cannot be
  encoded - makes that record ``invalid`` with its line number and the reason, and reading
  goes on.  Nothing a record contains can raise out of here;
- ids already seen are kept in a bitmap while they are dense (one bit per id), so a
  10-million-line input costs about a megabyte of duplicate detection.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
import sys
from typing import IO, Callable, Iterator, TextIO, cast

from .model import FileRecord, Outcome, Rejected
from .workload import generate_files

Item = FileRecord | Rejected

MAX_LINE = 1 << 20  # bytes in one line, or in one CSV record over several lines (line ends not counted)
MAX_SKIP = 64 << 20  # a line longer than MAX_LINE is skipped to its end, but not past this many bytes
MAX_ID = (1 << 63) - 1  # ids and sizes: whole numbers 0..2^63-1 (a signed 64-bit column's range)
CHUNK = 1 << 16  # bytes read at a time
FORMATS = ("jsonl", "csv")
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}  # no extension (or stdin): jsonl
FIELDS = ("id", "name", "size", "source_bucket", "source_key")

_DIGITS = re.compile(r"[0-9]+\Z")  # ASCII digits only: no sign, no spaces, no '_', no other scripts' digits
_UNFIT = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # control characters; lone surrogates (never UTF-8)
_LIMIT = f"{MAX_LINE >> 20} MiB ({MAX_LINE} bytes)"
_HUGE = object()  # a JSON integer with more digits than any id can have (never converted)


class InputError(Exception):
    """The input stopped being readable part-way; what was read before it stands."""


class InputFormatError(ValueError):
    """The input's format cannot be told from its name (a usage error)."""


# Opening ---------------------------------------------------------------------------------
def input_format(path: str, fmt: str | None) -> str:
    """The format of ``path``: ``fmt`` if given, else from the extension (none, or ``-``: jsonl)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise InputFormatError(f"--input-format must be jsonl or csv (got {fmt})")
        return fmt
    if path == "-":
        return "jsonl"
    extension = os.path.splitext(os.path.basename(path))[1].lower()
    if extension in EXTENSIONS or not extension:
        return EXTENSIONS.get(extension, "jsonl")
    known = ", ".join(EXTENSIONS)
    raise InputFormatError(f"--input {path}: unknown extension {extension!r} (known: {known}, or none for "
                           "JSON Lines); name the format with --input-format jsonl|csv")


def check_input(path: str) -> None:
    """Raise ``OSError`` (with a one-line message) unless ``path`` can be read.

    Never consumes anything: a FIFO, a terminal or stdin is checked without being opened or
    read (opening a FIFO and closing it again would use up its writer)."""
    if path == "-":
        try:
            if sys.stdin is None:
                raise OSError
            os.fstat(sys.stdin.fileno())
        except (OSError, ValueError, AttributeError):
            raise OSError("--input -: stdin is closed") from None
        return
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise OSError(f"--input {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"--input {path}: is a directory")
    if not stat.S_ISREG(mode):  # a FIFO, a device, a socket: opening may block or consume
        if not os.access(path, os.R_OK):
            raise PermissionError(f"--input {path}: Permission denied")
        return
    try:
        open(path, "rb").close()
    except OSError as exc:
        raise OSError(f"--input {path}: {exc.strerror or exc}") from None


def open_input(path: str, fmt: str | None) -> tuple[TextIO, str]:
    """Open ``path`` (``-`` = stdin) for reading; raises ``OSError`` with a clear message.

    The reader reads its ``.buffer`` (bytes, split and decoded here line by line).  Stdin is
    read through a duplicate of its descriptor, so closing the returned stream leaves the
    process's own stdin alone."""
    fmt = input_format(path, fmt)
    if path == "-":
        try:
            if sys.stdin is None:
                raise OSError
            binary = os.fdopen(os.dup(sys.stdin.fileno()), "rb")
        except (OSError, ValueError, AttributeError):
            raise OSError("--input -: stdin is closed") from None
    else:
        if os.path.isdir(path):
            raise IsADirectoryError(f"--input {path}: is a directory")
        try:
            binary = open(path, "rb")
        except OSError as exc:
            raise OSError(f"--input {path}: {exc.strerror or exc}") from None
    return io.TextIOWrapper(binary, encoding="utf-8", newline=""), fmt


def records(files: int, stream: IO[bytes] | IO[str] | None = None, fmt: str = "jsonl") -> Iterator[Item]:
    """The dispatcher's stream: generated files, or parsed input records in order."""
    if stream is None:
        return generate_files(files)
    lines = _lines(_reader(stream))
    return _deduplicated(_read_csv(lines) if fmt == "csv" else _read_jsonl(lines))


# Lines -----------------------------------------------------------------------------------
def _reader(stream: IO[bytes] | IO[str]) -> Callable[[int], bytes]:
    """A ``read(n)`` that returns bytes as soon as some are available (a pipe is not waited on
    to fill a whole chunk)."""
    raw = getattr(stream, "buffer", stream)
    if isinstance(raw, io.TextIOBase):  # a text stream with no bytes underneath (io.StringIO)
        return lambda n: raw.read(n).encode("utf-8", "surrogatepass")
    return cast("Callable[[int], bytes]", getattr(raw, "read1", None) or raw.read)


def _lines(read: Callable[[int], bytes]) -> Iterator[tuple[int, bytes | None]]:
    """Number the input's lines: ``(number, bytes without the line end)``, or ``(number, None)``
    for a line longer than ``MAX_LINE`` (never held: skipped to its end).

    Raises ``InputError`` when reading fails, or when a line has no end within ``MAX_SKIP``
    bytes (after yielding that line as too long): such an input is not line-oriented text."""
    held = bytearray()
    over = 0  # bytes of the current line once it is known to be too long (0: it is not)
    after_cr = False  # the last read ended in '\r': a '\n' starting the next one belongs to it
    number = 0
    while True:
        try:
            chunk = read(CHUNK)
        except OSError as exc:
            raise InputError(f"input failed at line {number + 1} ({exc}): {_kept(number)}") from None
        if not chunk:
            break
        if after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
            if not chunk:
                after_cr = False
                continue
        pieces = chunk.splitlines(keepends=True)  # bytes: only \n, \r\n and \r end a line
        for piece in pieces:
            ended = piece.endswith((b"\n", b"\r"))
            body = piece.rstrip(b"\r\n") if ended else piece
            if over:
                over += len(body)
            elif len(held) + len(body) > MAX_LINE:
                over = len(held) + len(body)
                held.clear()
            elif ended and not held:
                number += 1
                yield number, body
                continue
            else:
                held += body
            if over > MAX_SKIP:
                number += 1
                yield number, None
                raise InputError(f"input unreadable at line {number} (no line end within {MAX_SKIP >> 20} MiB): "
                                 f"{_kept(number)}")
            if ended:
                number += 1
                yield number, (None if over else bytes(held))
                held.clear()
                over = 0
        after_cr = pieces[-1].endswith(b"\r")
    if held or over:
        yield number + 1, (None if over else bytes(held))


def _kept(lines: int) -> str:
    read = "no line was read" if lines == 0 else f"line{'s 1-' if lines > 1 else ' '}{lines} {'were' if lines > 1 else 'was'} read"
    return f"{read}, the rest is unknown"


def _decode(number: int, body: bytes) -> str:
    """One line as text; raises ``_Bad`` when it is not UTF-8.  A BOM opening the input is dropped."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Bad(f"not UTF-8 ({exc.reason} at byte {exc.start + 1})") from None
    return text[1:] if number == 1 and text.startswith("\ufeff") else text


def _blank(text: str) -> bool:
    return not text.strip(" \t")


# Records ---------------------------------------------------------------------------------
class _Bad(Exception):
    """Why one record is invalid (the message, without its line number)."""


class _Line(FileRecord):
    """A parsed record that remembers its line number (for duplicates)."""

    __slots__ = ("_line",)
    _line: int


def _invalid(line: int, reason: str, file_id: int | None = None, name: str | None = None) -> Rejected:
    return Rejected(line, Outcome.INVALID, f"line {line}: {reason}", file_id, name)


def _build(line: int, data: dict[str, object]) -> Item:
    """Check one record's fields (already parsed) and make it a file, or say why it is invalid
    (an invalid record still carries its id and name when they are fit to show)."""
    try:
        file_id = _whole(data.get("id"), "id", required=True)
        name = _text(data.get("name"), "name", required=True)
        size = _whole(data.get("size"), "size")
        bucket = _text(data.get("source_bucket"), "source_bucket")
        key = _text(data.get("source_key"), "source_key")
    except _Bad as exc:
        return _invalid(line, str(exc), _fit(_whole, data.get("id")), _fit(_text, data.get("name")))
    record = _Line(file_id, name, size, bucket, key)  # type: ignore[arg-type]
    record._line = line
    return record


def _fit(check, value: object):  # type: ignore[no-untyped-def]
    try:
        return check(value, "", True)
    except _Bad:
        return None


class _Unparsed:
    """A CSV number that is not one: ``_whole`` says why, in field order with the other checks."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _whole(value: object, field: str, required: bool = False) -> int | None:
    if value is None and not required:
        return None
    if isinstance(value, _Unparsed):
        raise _Bad(value.reason)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        shown = "" if value is None or value is _HUGE else f" (got {_show(value)})"
        raise _Bad(f"'{field}' must be a whole number from 0 to 2^63-1{shown}")
    return value


def _text(value: object, field: str, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise _Bad(f"'{field}' must be a non-empty string" if required else f"'{field}' must be a string")
    unfit = _UNFIT.search(value)
    if unfit is not None:
        what = "is not valid Unicode (a lone surrogate)" if unfit[0] >= "\ud800" else "contains a control character"
        raise _Bad(f"'{field}' {what}: {_show(value)}")
    return value


def _show(value: object) -> str:
    """A short, printable, always-encodable view of a bad value for a reason."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:40])[:-1] + "...'"
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "an array"
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def _kind(data: object) -> str:
    return {type(None): "null", dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            float: "a number"}.get(type(data), "a number")


# JSON Lines --------------------------------------------------------------------------------
def _read_jsonl(lines: Iterator[tuple[int, bytes | None]]) -> Iterator[Item]:
    for number, body in lines:
        if body is None:
            yield _invalid(number, f"longer than {_LIMIT}")
            continue
        try:
            text = _decode(number, body)
            if _blank(text):
                continue
            data = _json(text)
        except _Bad as exc:
            yield _invalid(number, str(exc))
            continue
        yield _build(number, data)


def _json(text: str) -> dict[str, object]:
    try:
        data = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise _Bad(f"bad JSON ({exc.msg.removesuffix(' at')} at column {exc.colno})") from None
    except RecursionError:
        raise _Bad("bad JSON (nested too deeply)") from None
    except Exception as exc:  # noqa: BLE001 - whatever a parser may raise, it is this record's problem
        raise _Bad(f"bad JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise _Bad(f"expected an object, got {_kind(data)}")
    return data


def _json_int(digits: str) -> int | object:
    return _HUGE if len(digits) > 20 else int(digits)


_DECODER = json.JSONDecoder(parse_int=_json_int)


# CSV -----------------------------------------------------------------------------------------
class _Oversized(Exception):
    """Raised through the csv reader: the record it is reading is too long to hold."""


class _Feed:
    """The csv reader's input: decoded lines, remembering which lines the record being read
    took and what was wrong with them (so a bad line inside a quoted field keeps the
    record's shape, and the record ends ``invalid``)."""

    def __init__(self, lines: Iterator[tuple[int, bytes | None]]) -> None:
        self._lines = lines
        self.first = self.last = self.size = 0
        self.problem: str | None = None

    def start(self) -> None:
        self.first = self.size = 0
        self.problem = None

    def __iter__(self) -> "_Feed":
        return self

    def __next__(self) -> str:
        number, body = next(self._lines)
        self.last = number
        if not self.first:
            self.first = number
            if body is None:  # a line of its own: never fed to the reader
                self.problem = f"longer than {_LIMIT}"
                raise _Oversized
        if body is None:  # inside a quoted field: keep the record's shape, mark it
            self.problem = self.problem or f"line {number} is longer than {_LIMIT}"
            return "\n"
        self.size += len(body)
        if self.size > MAX_LINE:
            self.problem = f"a record longer than {_LIMIT}"
            raise _Oversized
        try:
            text = _decode(number, body)
        except _Bad as exc:
            self.problem = self.problem or (str(exc) if number == self.first else f"line {number} is {exc}")
            text = body.decode("utf-8", "replace")
        return text + "\n"


def _read_csv(lines: Iterator[tuple[int, bytes | None]]) -> Iterator[Item]:
    """A header line naming the columns, then one record per row (a quoted field may span lines)."""
    feed = _Feed(lines)
    reader = csv.reader(feed)
    header: list[str] | str | None = None  # the columns, or why the header is unusable
    while True:
        feed.start()
        try:
            row = next(reader)
        except StopIteration:
            return
        except _Oversized:
            row = None
        except csv.Error as exc:  # a field over the csv module's limit, ...
            feed.problem = feed.problem or f"bad CSV ({exc})"
            row = None
        line, span = feed.first, ("" if feed.last <= feed.first else f" (the record spans lines {feed.first}-{feed.last})")
        if feed.problem is None and row is not None and (not row or (len(row) == 1 and _blank(row[0]))):
            continue
        if header is None:
            header = _header(line, row) if feed.problem is None else f"line {line}: {feed.problem}"
            continue
        if feed.problem is not None:
            yield _invalid(line, feed.problem + span)
        elif isinstance(header, str):
            yield _invalid(line, f"no usable header ({header})")
        else:
            yield _csv_record(line, row, header, span)  # type: ignore[arg-type]


def _header(line: int, row: list[str] | None) -> list[str] | str:
    columns = [name.strip(" \t").lower() for name in row or ()]
    for name in columns:
        if name in FIELDS and columns.count(name) > 1:
            return f"line {line} repeats column '{name}'"
    for name in ("id", "name"):
        if name not in columns:
            hint = " - the delimiter must be a comma" if len(columns) == 1 and re.search("[;\t|]", columns[0]) else ""
            return f"line {line} has no '{name}' column{hint}"
    return columns


def _csv_record(line: int, row: list[str], header: list[str], span: str) -> Item:
    if len(row) != len(header):
        return _invalid(line, f"expected {len(header)} fields, got {len(row)}{span}")
    data: dict[str, object] = {}
    for column, value in zip(header, row):
        if column in FIELDS and value != "":
            data[column] = _csv_whole(value, column) if column in ("id", "size") else value
    item = _build(line, data)
    if span and isinstance(item, Rejected):
        return Rejected(item.line, item.outcome, item.error + span, item.id, item.name)
    return item


def _csv_whole(text: str, field: str) -> int | _Unparsed:
    if not _DIGITS.match(text) or len(text.lstrip("0")) > 19:
        return _Unparsed(f"'{field}' must be a whole number from 0 to 2^63-1 written with the digits 0-9 "
                         f"(got {_show(text)})")
    return int(text)


# Duplicates ----------------------------------------------------------------------------------
def _deduplicated(items: Iterator[Item]) -> Iterator[Item]:
    seen = _Seen()
    for item in items:
        if isinstance(item, FileRecord):
            if not seen.add(item.id):
                yield Rejected(item._line, Outcome.DUPLICATE, f"line {item._line}: id {item.id} seen before",  # type: ignore[attr-defined]
                               item.id, item.name)
                continue
        yield item


class _Seen:
    """The ids read so far.  Dense ids (below eight times the number seen, plus 512 Ki) are bits
    in a bytearray that doubles as they grow: at most one byte per id seen, an eighth of one
    for ids 1..N.  Ids spread wider than that go in a set (about 60-100 bytes each)."""

    __slots__ = ("bits", "sparse", "count")
    BASE = 1 << 16  # bytes of bitmap allowed before any id is seen

    def __init__(self) -> None:
        self.bits = bytearray()
        self.sparse: set[int] = set()
        self.count = 0

    def add(self, value: int) -> bool:
        """Note ``value``; False if it was seen before."""
        index, mask = value >> 3, 1 << (value & 7)
        if index >= len(self.bits):
            self._grow(index)
        if index < len(self.bits):
            if self.bits[index] & mask:
                return False
            self.bits[index] |= mask
        elif value in self.sparse:
            return False
        else:
            self.sparse.add(value)
        self.count += 1
        return True

    def _grow(self, index: int) -> None:
        size = max(index + 1, 2 * len(self.bits), self.BASE)
        if size > self.count + self.BASE:
            return  # too sparse for the bitmap (yet)
        self.bits.extend(bytes(size - len(self.bits)))
        moved = [v for v in self.sparse if v >> 3 < size]
        for value in moved:
            self.sparse.discard(value)
            self.bits[value >> 3] |= 1 << (value & 7)
