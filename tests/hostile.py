"""Hostile input files with a known answer: every record's line and the state it must end in.

A file is built from *pieces*, each one record (or a blank line) whose fate is known in advance:
valid, invalid (huge numbers, deep nesting, bad encodings, control characters, lone surrogates,
long lines, CSV fields over the csv module's limit, ids written in other scripts, ...) or blank.
Pieces are joined with mixed line endings (``\\n``, ``\\r\\n``, a lone ``\\r``), so the line
numbers the reader reports are checked against line numbers computed here.  The same builders
serve hypothesis (a ``random.Random`` it controls) and the seeded campaigns.
"""
from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass

from pillpipe.common.source import MAX_LINE

NAMES = ["a.pdf", "été.pdf", "日本語.txt", "emoji-🙂.png", "with space.doc", "comma,name.pdf", 'quote"name.pdf',
         "x" * 300, "0", "ünï/cödé/path.bin"]
ENDINGS = [b"\n", b"\r\n", b"\r"]
LONG = "long"  # builders that write a line over MAX_LINE (slow-ish: only in the seeded campaigns)


@dataclass
class Piece:
    lines: list[bytes]  # the physical lines this record takes (more than one: a quoted CSV field with line ends)
    kind: str  # valid | invalid | blank | bom (valid only on line 1)
    id: int | None = None


def _small_id(rnd: random.Random) -> int:
    return rnd.choice([rnd.randint(0, 30), rnd.randint(0, 30), rnd.randint(0, 2**63 - 1), 2**63 - 1, 0])


# JSON Lines ------------------------------------------------------------------------------------
def _json_valid(rnd: random.Random) -> Piece:
    record: dict = {"id": _small_id(rnd), "name": rnd.choice(NAMES)}
    if rnd.random() < 0.4:
        record["size"] = rnd.randint(0, 2**63 - 1)
    if rnd.random() < 0.3:
        record["source_bucket"], record["source_key"] = "src", f"k/{record['name']}"
    if rnd.random() < 0.3:
        record["extra"] = rnd.choice([None, [1, 2, {"a": []}], "é", 10**30, 1e308, True])
    items = list(record.items())
    rnd.shuffle(items)
    text = json.dumps(dict(items), ensure_ascii=rnd.random() < 0.5, indent=None)
    if rnd.random() < 0.2:
        text = " \t" + text + "  "
    return Piece([text.encode()], "valid", record["id"])


def _json_line(text: str) -> Piece:
    return Piece([text.encode("utf-8", "surrogatepass")], "invalid")


JSON_BAD = [
    '{"id": %s, "name": "a"}' % ("9" * 25),
    '{"id": %s, "name": "a"}' % ("7" * 5000),  # over Python's int-from-text digit limit
    '{"id": %d, "name": "a"}' % 2**63,
    '{"id": -1, "name": "a"}', '{"id": 1.5, "name": "a"}', '{"id": 1e999, "name": "a"}', '{"id": "3", "name": "a"}',
    '{"id": true, "name": "a"}', '{"id": null, "name": "a"}', '{"name": "a"}', '{"id": 1}', '{"id": 1, "name": ""}',
    '{"id": 1, "name": 5}', '{"id": 1, "name": ["a"]}', '{"id": 1, "name": "a", "size": -5}',
    '{"id": 1, "name": "a", "size": "big"}', '{"id": 1, "name": "a", "source_key": 3}',
    '{"id": 1, "name": "\\ud800"}', '{"id": 1, "name": "a\\udfff"}', '{"id": 1, "name": "ok", "source_key": "\\ud83d"}',
    '{"id": 1, "name": "a\\u0000b"}', '{"id": 1, "name": "a\\nb"}', '{"id": 1, "name": "\\u007f"}',
    '{"id": 1, "name": "a\\u0085"}', '{"id": 1, "name": "a\tb"}',
    "null", "[1, 2]", '"a string"', "42", "true", "{bad json", '{"id": 1, "name": "a"', "{}", "\x00", "\x0c",
    '{"id": 1, "name": "a"}{"id": 2, "name": "b"}', "NaN", '{"id": NaN, "name": "a"}', "\ufeff\ufeff{}",
    '{"id": 1, "name": "a", "x": %s%s}' % ("[" * 100_000, "]" * 100_000),  # deeper than any recursion limit
    '{"id": 1, "name": "a", "x": %s1%s}' % ('{"a": ' * 50_000, "}" * 50_000),
]


def _json_bad(rnd: random.Random) -> Piece:
    return _json_line(rnd.choice(JSON_BAD))


def _json_bytes(rnd: random.Random) -> Piece:
    """Bytes that are not a record: invalid UTF-8, raw NULs, other encodings, noise."""
    good = json.dumps({"id": rnd.randint(0, 30), "name": "plain.pdf"})
    choice = rnd.randrange(5)
    if choice == 0:
        data = good.replace("plain", "pl\xffain").encode("latin-1")
    elif choice == 1:
        data = good.encode().replace(b"plain", b"pl\x00ain")
    elif choice == 2:
        data = good.encode("utf-16")
    elif choice == 3:
        data = good.encode()[:-1] + b"\xe2\x82"  # cut in the middle of a character
    else:
        data = b"#" + bytes(b for b in rnd.randbytes(rnd.randint(0, 200)) if b not in b"\r\n")
    return Piece([data], "invalid")


def _json_blank(rnd: random.Random) -> Piece:
    return Piece([rnd.choice([b"", b" ", b"\t", b"  \t "])], "blank")


def _json_bom(rnd: random.Random) -> Piece:
    piece = _json_valid(rnd)
    return Piece([b"\xef\xbb\xbf" + piece.lines[0]], "bom", piece.id)


def _json_long(rnd: random.Random) -> Piece:
    return Piece([b'{"id": 1, "name": "' + b"x" * (MAX_LINE + rnd.randint(0, 3 * MAX_LINE)) + b'"}'], "invalid")


def _json_exact(rnd: random.Random) -> Piece:
    """A valid line of exactly MAX_LINE bytes: the longest a line may be."""
    file_id = _small_id(rnd)
    head = b'{"id": %d, "name": "edge.pdf", "pad": "' % file_id
    return Piece([head + b"p" * (MAX_LINE - len(head) - 2) + b'"}'], "valid", file_id)


JSONL = {"valid": _json_valid, "bad": _json_bad, "bytes": _json_bytes, "blank": _json_blank, "bom": _json_bom}
JSONL_LONG = {**JSONL, LONG: _json_long, "exact": _json_exact}


# CSV -------------------------------------------------------------------------------------------------
COLUMNS = ["id", "name", "size", "note"]


def _row(columns: list[str], values: dict[str, str]) -> list[bytes]:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([values.get(c, "") for c in columns])
    return out.getvalue()[:-1].encode().split(b"\n")  # a quoted field with line ends takes several lines


def _note(rnd: random.Random) -> str:
    return rnd.choice(["", "plain", "two\nlines", "blank\n\ninside", "\n\n\n", 'a "quoted" note', "trailing\n"])


def _csv_valid(rnd: random.Random, columns: list[str]) -> Piece:
    file_id = _small_id(rnd)
    text = str(file_id).zfill(rnd.choice([0, 0, 3, 25]))  # leading zeros are still the same whole number
    values = {"id": text, "name": rnd.choice(NAMES), "size": rnd.choice(["", "0", "12345"]), "note": _note(rnd)}
    return Piece(_row(columns, values), "valid", file_id)


CSV_BAD_IDS = ["1_000", "٣", "۳", "１", " +3 ", "+3", " 3", "3 ", "-1", "", "1.0", "0x10", "1e3", "9" * 25,
               str(2**63), "3\x00", "٠١٢"]
CSV_BAD_NAMES = ["", "a\x00b", "a\nb", "a\x7f", "a\x1bb", "tab\there", "blank\n\nline"]


def _csv_bad(rnd: random.Random, columns: list[str]) -> Piece:
    values = {"id": str(rnd.randint(0, 30)), "name": "n.pdf", "size": "", "note": _note(rnd)}
    choice = rnd.randrange(6)
    if choice == 0:
        values["id"] = rnd.choice(CSV_BAD_IDS)
    elif choice == 1:
        values["name"] = rnd.choice(CSV_BAD_NAMES)
    elif choice == 2:
        values["size"] = rnd.choice(["-1", "big", "1_0", "٣", str(2**64)])
    elif choice == 3:  # one field too many or too few
        line = _row(columns, {**values, "note": "plain"})[0]
        return Piece([line + b",extra" if rnd.random() < 0.5 else line.rsplit(b",", 1)[0]], "invalid")
    elif choice == 4:  # a field over the csv module's limit (131072 characters), on a line under MAX_LINE
        values["note"] = "n" * 140_000
    else:
        lines = _row(columns, values)
        return Piece([lines[0] + b"\xff\xfe"] + lines[1:], "invalid")  # not UTF-8
    return Piece(_row(columns, values), "invalid")


def _csv_bytes(rnd: random.Random, columns: list[str]) -> Piece:
    data = b"#" + bytes(b for b in rnd.randbytes(rnd.randint(0, 120)) if b not in b'\r\n"')
    return Piece([data], "invalid")


def _csv_blank(rnd: random.Random, columns: list[str]) -> Piece:
    return Piece([rnd.choice([b"", b"  ", b"\t"])], "blank")


def _csv_long(rnd: random.Random, columns: list[str]) -> Piece:
    values = {"id": "1", "name": "a", "note": "y" * (MAX_LINE + rnd.randint(1, MAX_LINE))}
    return Piece(_row(columns, values), "invalid")


CSV = {"valid": _csv_valid, "bad": _csv_bad, "bytes": _csv_bytes, "blank": _csv_blank}
CSV_LONG = {**CSV, LONG: _csv_long}


# Files ---------------------------------------------------------------------------------------------------
@dataclass
class Hostile:
    data: bytes
    expected: dict[int, str]  # line -> success | invalid | duplicate, one per record
    ids: dict[int, int]  # line -> id, for the records that must succeed


def build(fmt: str, kinds: list[str], rnd: random.Random, builders: dict | None = None) -> Hostile:
    """A file of ``kinds`` pieces (after a header, for CSV) and the state each record must end in."""
    builders = builders or (CSV_LONG if fmt == "csv" else JSONL_LONG)
    pieces: list[Piece] = []
    columns = COLUMNS[:]
    if fmt == "csv":
        rnd.shuffle(columns)
        header = ",".join(columns).encode()
        pieces.append(Piece([(b"\xef\xbb\xbf" if rnd.random() < 0.3 else b"") + header], "header"))
    for kind in kinds:
        builder = builders[kind]
        pieces.append(builder(rnd, columns) if fmt == "csv" else builder(rnd))
    out, expected, ids, seen, number = bytearray(), {}, {}, set(), 0
    for index, piece in enumerate(pieces):
        first = number + 1
        for line_index, line in enumerate(piece.lines):
            number += 1
            out += line
            last = index == len(pieces) - 1 and line_index == len(piece.lines) - 1
            if line_index < len(piece.lines) - 1:
                out += b"\n"  # inside a quoted field
            elif not (last and rnd.random() < 0.3):  # the last line may go without an end
                ending = rnd.choice(ENDINGS)
                following = pieces[index + 1].lines[0] if index + 1 < len(pieces) else b"x"
                out += b"\r\n" if ending == b"\r" and not following else ending  # "\r" + "" + "\n" would merge
        kind = piece.kind
        if kind == "bom":
            kind = "valid" if first == 1 else "invalid"
        if kind in ("blank", "header"):
            continue
        if kind == "valid":
            if piece.id in seen:
                expected[first] = "duplicate"
                continue
            seen.add(piece.id)
            ids[first] = piece.id  # type: ignore[assignment]
            expected[first] = "success"
        else:
            expected[first] = "invalid"
    return Hostile(bytes(out), expected, ids)


def campaign(fmt: str, seed: int, count: int = 60) -> Hostile:
    """A seeded hostile file: every builder (long lines included) at least once, in random order."""
    rnd = random.Random(seed)
    builders = CSV_LONG if fmt == "csv" else JSONL_LONG
    kinds = list(builders) + [rnd.choice(list(builders)) for _ in range(count)]
    kinds = [k for k in kinds if k != LONG] + [LONG]  # one line over MAX_LINE
    rnd.shuffle(kinds)
    return build(fmt, ["valid", *kinds], rnd, builders)
