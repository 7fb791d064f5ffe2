"""The one table of the project's variants: name -> module.  Only the top floor (the command line,
the benchmarks) uses it; the variants and the core never do."""
from __future__ import annotations

import importlib
from typing import Callable

from pillpipe.common.config import Config
from pillpipe.common.report import Report

MODULES = {
    "threaded": "pillpipe.threaded",
    "asyncio": "pillpipe.asyncio_version",
    "anyio": "pillpipe.anyio_version",
    "sequential": "pillpipe.common.sequential",
}
VARIANTS = tuple(MODULES)
CONCURRENT = ("threaded", "asyncio", "anyio")


def variants(*names: str) -> dict[str, Callable[[Config], Report]]:
    """Name -> run function for ``names`` (default: every variant).  Only the variants asked for
    are imported, so an interpreter without anyio still runs the others (benchmark probes)."""
    return {name: importlib.import_module(MODULES[name]).run for name in names or VARIANTS}
