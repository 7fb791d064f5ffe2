"""The verification report: counts, a digest of every per-file outcome, and timing apart."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

IGNORED = ("variant", "timing")  # the only keys allowed to differ between variants


@dataclass(eq=False)
class Report:
    variant: str
    expected: int = 0
    processed: int = 0  # files that reached the verifier
    success: int = 0
    failed: int = 0
    cancelled: int = 0
    aborted: int = 0
    invalid: int = 0
    duplicate: int = 0
    digest: str = ""
    stopped_by: str | None = None  # "SIGINT", "SIGTERM", "crash" or None for a full run
    errors: list[str] = field(default_factory=list)  # dead workers, unreadable input
    rejected: list[str] = field(default_factory=list)  # the first rejected input records, each with its line and why
    files: list[dict[str, Any]] | None = None  # per-file outcomes, with --details
    timing: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["files"] is None:
            del data["files"]
        return data

    def comparable(self) -> dict[str, Any]:
        """Everything two variants must agree on for the same flags."""
        data = self.to_dict()
        for key in IGNORED:
            data.pop(key, None)
        return data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Report):
            return NotImplemented
        return self.comparable() == other.comparable()

    __hash__ = None  # type: ignore[assignment]

    @property
    def terminal_total(self) -> int:
        return self.success + self.failed + self.cancelled + self.aborted + self.invalid + self.duplicate

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    def format(self) -> str:
        """The tutorial's report block, with extra states on their own lines when non-zero."""
        lines = [
            "",
            "=== VERIFICATION REPORT ===",
            f"Expected: {self.expected}",
            f"Processed: {self.processed}",
            f"Success: {self.success}",
            f"Failed: {self.failed}",
        ]
        for name in ("cancelled", "aborted", "invalid", "duplicate"):
            if getattr(self, name):
                lines.append(f"{name.capitalize()}: {getattr(self, name)}")
        if self.stopped_by:
            lines.append(f"Stopped by: {self.stopped_by}")
        lines += [f"Error: {e}" for e in self.errors]
        if self.rejected:
            lines.append("Rejected:")
            lines += [f"  {reason}" for reason in self.rejected]
            rest = self.invalid + self.duplicate - len(self.rejected)
            if rest > 0:
                lines.append(f"  ... and {rest} more (every one: --details)")
        wall = self.timing.get("wall_s")
        if wall is not None:  # timing apart: equality ignores it, like the JSON report's "timing"
            lines.append(f"Wall time: {wall:.2f} s")
        if self.files is not None:  # --details
            lines += ["", *self.details_table()]
        lines += ["", "=== Pipeline complete ==="]
        return "\n".join(lines)

    def details_table(self) -> list[str]:
        """``--details`` in the text report: one row per file (rejected input records too), in id order."""
        if not self.files:
            return ["No files."]
        head = ("id", "name", "outcome", "s3 tries", "api tries", "error")
        rows = [tuple(_cell(f.get(key)) for key in ("id", "name", "outcome", "s3_attempts", "api_attempts"))
                + (_error(f),) for f in self.files]
        widths = [max(len(row[i]) for row in (head, *rows)) for i in range(len(head) - 1)]
        right = (True, False, False, True, True)  # numbers align right

        def line(row: tuple[str, ...]) -> str:
            cells = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)]
            return "  ".join([*cells, row[-1]]).rstrip()

        return [line(head), *map(line, rows)]


def _error(file: dict[str, Any]) -> str:
    error = "" if file.get("error") is None else _cell(file["error"])
    return f"{file['failed_stage']}: {error}" if file.get("failed_stage") else error


def _cell(value: Any) -> str:
    """A table cell on one line: ``-`` for nothing; a name with control characters or lone
    surrogates is shown escaped, so one hostile name cannot break the table (or the stream)."""
    if value is None:
        return "-"
    text = str(value)
    return text if text.isprintable() else text.encode("unicode_escape", "backslashreplace").decode("ascii")
