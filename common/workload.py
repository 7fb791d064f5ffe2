"""The workload: which files exist, and every latency and failure of every attempt.

Everything here is a pure function of (seed, file id, stage, attempt), never of a random
stream consumed in scheduling order, so both variants (and the sequential reference, and
the simulator) see exactly the same workload whatever order their workers run in.
"""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Iterator

from .model import FileRecord, Stage

FIRST_NAME_NUMBER = 100  # the tutorial's files are file_100.pdf, file_101.pdf, ...
RUN_DATE_PREFIX = "2025/01/15/14/30/45"  # a fixed run date, so destination keys compare equal
DEST_BUCKET = "dest-bucket-proj"
SOURCE_BUCKET = "source-bucket-proj"

KEY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "pillpipe.dest-keys")
_NAMESPACE_BYTES = KEY_NAMESPACE.bytes
_MASK = (1 << 64) - 1
_STAGE_CODE = {Stage.S3: 1, Stage.API: 2}
_LATENCY, _FAILURE = 0, 1  # what a draw is for


def _mix(x: int) -> int:
    """splitmix64's finaliser: a fast, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def draw(seed: int, file_id: int, stage: Stage, attempt: int, purpose: int) -> float:
    """A uniform number in [0, 1) determined only by its arguments."""
    h = _mix((seed * 0x100000001B3) ^ (file_id & _MASK))
    h = _mix(h ^ (_STAGE_CODE[stage] << 40) ^ (attempt << 8) ^ purpose)
    return (h >> 11) * (1.0 / (1 << 53))


def file_name(file_id: int) -> str:
    return f"file_{FIRST_NAME_NUMBER + file_id - 1}.pdf"


def generate_files(count: int) -> Iterator[FileRecord]:
    """The tutorial's files, streamed: ids 1..count named file_100.pdf, file_101.pdf, ..."""
    for file_id in range(1, count + 1):
        name = file_name(file_id)
        yield FileRecord(file_id, name, None, SOURCE_BUCKET, name)  # id, name, size, source_bucket, source_key


def dest_key(seed: int, name: str) -> str:
    """Date-shaped prefix plus ``uuid5(KEY_NAMESPACE, f"{seed}/{name}")``: stable across retries and runs.

    Computed straight from SHA-1 (the same bytes ``uuid.uuid5`` gives) because this runs once
    per file on the hot path, where every microsecond is paid again under the GIL.
    """
    x = _sha1(_NAMESPACE_BYTES + f"{seed}/{name}".encode()).hexdigest()
    return f"{RUN_DATE_PREFIX}/{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


_sha1 = hashlib.sha1
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}  # RFC 4122 variant bits of a hex digit


@dataclass(frozen=True, slots=True)
class Workload:
    """The parameters every latency and failure is derived from."""

    seed: int = 0
    s3_latency: tuple[float, float] = (0.2, 0.5)
    api_latency: tuple[float, float] = (1.0, 2.0)
    time_scale: float = 1.0
    fail_rate: float = 0.0
    _ranges: dict[Stage, tuple[float, float]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ranges", {Stage.S3: self.s3_latency, Stage.API: self.api_latency})

    def waits_nothing(self) -> bool:
        """Whether every attempt's latency is zero."""
        return self.time_scale == 0 or all(low == high == 0 for low, high in self._ranges.values())

    def latency(self, stage: Stage, file_id: int, attempt: int) -> float:
        """Seconds this attempt takes (already multiplied by ``time_scale``)."""
        if self.time_scale == 0:
            return 0.0
        low, high = self._ranges[stage]
        u = draw(self.seed, file_id, stage, attempt, _LATENCY)
        return (low + (high - low) * u) * self.time_scale

    def fails(self, stage: Stage, file_id: int, attempt: int) -> bool:
        """Whether this attempt hits a (transient) service error."""
        if self.fail_rate == 0:
            return False
        return draw(self.seed, file_id, stage, attempt, _FAILURE) < self.fail_rate
