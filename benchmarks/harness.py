"""Running probes in fresh processes, the environment they ran in, and small statistics."""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

from pillpipe.common.simulate import TimerModel

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path("bench-results")
# The two models every scenario but ``strategies`` measures side by side (anyio is measured by the
# strategies scenario and by ``compare``); names from ``pillpipe.variants``.
MEASURED = ("threaded", "asyncio")


class ProbeFailed(RuntimeError):
    """A probe process failed or timed out; ``reason`` says why in one line."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind, self.reason = kind, reason


def _env() -> dict[str, str]:
    """The probe's environment: the repository first on PYTHONPATH, so any interpreter finds it."""
    return {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}


def probe(kind: str, flags: Sequence[Any] = (), timeout: float = 600, python: str | None = None) -> dict[str, Any]:
    """Run ``python -m pillpipe.benchmarks.probe kind flags`` in a fresh interpreter (``python``, default this
    one: the probe needs only the stdlib and the repository, plus anyio/trio/uvloop for those runs)
    and return its JSON."""
    cmd = [python or sys.executable, "-m", "pillpipe.benchmarks.probe", kind, *map(str, flags)]
    env = _env()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise ProbeFailed(kind, f"timed out after {timeout:g} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise ProbeFailed(kind, f"exit {done.returncode}: {tail[:300]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# Timer calibration: sleeps from 0.13 ms to 20 ms, where rounding and overshoot matter.
CALIBRATION_DELAYS = [round(0.0001 * k + 0.00003, 6) for k in range(1, 41)] + [0.005, 0.0075, 0.01, 0.015, 0.02]


def timer_model(variant: str, python: str | None = None, backend: str = "asyncio") -> TimerModel:
    """Measure how the variant's sleep overshoots in a fresh process (under ``python``; anyio on
    ``backend``) and fit a model to it."""
    flags = ["--delays", ",".join(map(str, CALIBRATION_DELAYS)), "--repeats", "2", "--backend", backend]
    return TimerModel.fit(probe(f"timer-{variant}", flags, timeout=120, python=python)["samples"])


_INTERPRETER = """\
import json, platform, sys
from importlib import metadata, util
libs = {}
for name in ("anyio", "trio", "uvloop"):
    try:
        libs[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        libs[name] = None
print(json.dumps({"executable": sys.executable, "python": platform.python_version(),
                  "implementation": platform.python_implementation(), "version": sys.version,
                  "queue_shutdown": sys.version_info >= (3, 13), "libraries": libs}))
"""


def interpreter(python: str | None = None, timeout: float = 60) -> dict[str, Any]:
    """What ``python`` (default: this interpreter) is: version, implementation, whether it has
    ``Queue.shutdown`` (3.13+), and which of anyio/trio/uvloop it can import.  Raises
    ``ProbeFailed`` for a path that is not a working Python."""
    path = python or sys.executable
    try:
        done = subprocess.run([path, "-c", _INTERPRETER], capture_output=True, text=True, timeout=timeout, env=_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProbeFailed("interpreter", f"{path}: {exc}") from None
    if done.returncode != 0:
        raise ProbeFailed("interpreter", f"{path}: exit {done.returncode}: {done.stderr.strip()[-300:]}")
    info: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    info["path"] = path
    return info


def environment(pythons: Sequence[str | None] = ()) -> dict[str, Any]:
    """CPU, cores, OS, Python and library versions: recorded beside every result.  ``pythons``:
    the interpreters the probes ran under (``--python``), each with its version, under
    ``interpreters``; ``python`` is then the first one's version (the harness's own is ``harness_python``)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for name in ("pillpipe", "rich", "matplotlib"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    pid_max = None
    try:
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        pass
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    except (ValueError, OSError, AttributeError):
        pass
    interpreters = [interpreter(p) for p in (pythons or [None])]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mib": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": interpreters[0]["python"],
        "implementation": interpreters[0]["implementation"],
        "harness_python": platform.python_version(),
        "interpreters": interpreters,
        "libraries": versions,
        "pid_max": pid_max,
    }


def recorded(env: dict[str, Any]) -> dict[str, Any]:
    """The environment as results record it: each interpreter's path reduced to its file name (a
    result names no directory of the machine it was measured on)."""
    return {**env, "interpreters": [{**i, **{k: Path(i[k]).name for k in ("executable", "path") if i.get(k)}}
                                    for i in env.get("interpreters", [])]}


@dataclass
class Stat:
    median: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.n}


def stat(values: Iterable[float | None]) -> Stat | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return Stat(statistics.median(vals), min(vals), max(vals), len(vals))


def summ(values: Iterable[float | None]) -> dict[str, float] | None:
    """Median, min, max and n of the values given (``None`` values skipped) as stored in results.json."""
    s = stat(values)
    return s.to_dict() if s else None


def med(summary: dict[str, float] | None) -> float:
    """The median of a ``summ`` that exists (a missing one is an error: check for None first)."""
    if summary is None:
        raise ValueError("no measurement to take the median of")
    return summary["median"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered) - 1e-9)))
    return ordered[rank - 1]
