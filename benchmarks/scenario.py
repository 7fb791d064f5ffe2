"""What a benchmark scenario is, and the ``Bench`` it runs its measurements through.

A scenario is one module in ``benchmarks/scenarios/`` holding one ``Scenario`` subclass, named in
the registry (``benchmarks/scenarios/__init__.py``).  It keeps everything about itself in one
place: its plans (``quick`` and ``full``, dataclasses built with keyword arguments), ``count``
(how many steps ``run`` takes, for the progress bar: ``bench`` records planned against run and a
test checks they agree), ``run``, ``targets``, ``summary`` (its section of ``summary.md``) and
``plots``.  ``run`` returns plain JSON data (it goes into ``results.json``); ``targets``,
``summary`` and ``plots`` read only that data, so they also work on results written earlier
(``pillpipe bench --render DIR``).
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pillpipe.common.simulate import TimerModel

from .harness import probe, timer_model


@dataclass(frozen=True)
class Target:
    """One performance target: what it asks, what was measured, and whether it was met.  ``met``
    is None for a number reported beside the targets without being judged."""

    target: str
    measured: str
    met: bool | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Bench:
    """The scenarios' access to measurements: every probe (a fresh process) and every other timed
    run goes through ``step``, which moves the progress bar (on stderr, only when stdout is a
    terminal) and counts the steps each scenario took."""

    def __init__(self, show: bool, interpreters: Sequence[dict[str, Any]], quick: bool) -> None:
        self.interpreters = list(interpreters)  # harness.interpreter() of each --python, the first the primary
        self.python: str | None = self.interpreters[0]["path"] if self.interpreters else None
        self.quick = quick
        self.steps = 0
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(stderr=True), disable=not show)
        self.task = self.progress.add_task("benchmarks", total=None)
        self._timers: dict[str, TimerModel] = {}

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        """One measured step (a probe, a run through the command line, a timer calibration)."""
        self.progress.update(self.task, description=label)
        try:
            yield
        finally:
            self.steps += 1
            self.progress.advance(self.task)

    def probe(self, label: str, kind: str, flags: Sequence[Any], timeout: float = 600,
              python: str | None = None) -> dict[str, Any]:
        """One probe (``harness.probe``) under ``python`` (default: the primary interpreter)."""
        with self.step(label):
            return probe(kind, flags, timeout=timeout, python=python or self.python)

    def repeat(self, label: str, kind: str, flags: Sequence[Any], repeats: int, warmup: int = 0,
               timeout: float = 600, python: str | None = None) -> list[dict[str, Any]]:
        """``warmup`` probes thrown away, then ``repeats`` probes kept."""
        for _ in range(warmup):
            self.probe(f"{label} (warm-up)", kind, flags, timeout, python)
        return [self.probe(f"{label} ({i + 1}/{repeats})", kind, flags, timeout, python) for i in range(repeats)]

    def timer(self, variant: str) -> TimerModel:
        """The variant's measured timer under the primary interpreter (one step, then cached)."""
        if variant not in self._timers:
            with self.step(f"timer {variant}"):
                self._timers[variant] = timer_model(variant, self.python)
        return self._timers[variant]


class Scenario:
    """One benchmark scenario.  Subclasses set ``name``, ``title``, ``full`` and ``quick`` (None:
    not part of ``--quick``), and define ``count``, ``run`` and ``summary``; ``targets`` and
    ``plots`` are optional."""

    name: ClassVar[str]
    title: ClassVar[str]  # one line for --help
    full: ClassVar[Any]
    quick: ClassVar[Any | None] = None

    def plan(self, quick: bool) -> Any:
        return self.quick if quick else self.full

    def count(self, plan: Any, bench: Bench) -> int:
        """How many ``bench.step``s ``run`` takes with this plan (when nothing fails)."""
        raise NotImplementedError

    def run(self, bench: Bench, plan: Any) -> dict[str, Any]:
        raise NotImplementedError

    def targets(self, result: dict[str, Any]) -> list[Target]:
        return []

    def summary(self, result: dict[str, Any]) -> str:
        """This scenario's section of ``summary.md`` (Markdown, starting with a ``##`` heading)."""
        raise NotImplementedError

    def plots(self, result: dict[str, Any], out: Path) -> list[Path]:
        return []


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table's lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
