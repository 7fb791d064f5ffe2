"""``pillpipe``: the top floor.  It alone knows every variant and dispatches to them."""
from __future__ import annotations

import sys
from typing import Sequence

from pillpipe.common.cli import entry
from pillpipe.variants import VARIANTS, variants

USAGE = """\
usage: pillpipe run {threaded,asyncio,anyio,sequential} [flags]   run one variant (see: pillpipe run threaded --help)
       pillpipe compare [flags]                                   both variants side by side (benchmarks extra)
       pillpipe bench [options]                                   the benchmark scenarios (benchmarks extra)

Threads or coroutines for an I/O-bound pipeline? The same four-stage file migration,
implemented twice on one shared core, with identical reports and a clean poison-pill shutdown.
"""


def console(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        raise SystemExit(0 if args else 2)
    command, rest = args[0], args[1:]
    if command == "run":
        if not rest or rest[0] not in VARIANTS:
            got = f" (got {rest[0]!r})" if rest else ""
            sys.stderr.write(f"pillpipe run: error: choose a variant: {', '.join(VARIANTS)}{got}\n")
            raise SystemExit(2)
        sys.argv = [f"pillpipe run {rest[0]}", *rest[1:]]
        entry(variants(rest[0])[rest[0]], f"pillpipe run {rest[0]}")
    if command in ("compare", "bench"):
        try:
            from pillpipe.benchmarks.cli import main as bench_main
        except ImportError as exc:
            sys.stderr.write(f"pillpipe {command}: error: needs the benchmarks extra: pip install '.[bench]' ({exc})\n")
            raise SystemExit(2)
        raise SystemExit(bench_main([command, *rest]))
    sys.stderr.write(f"pillpipe: error: unknown command {command!r} (see pillpipe --help)\n")
    raise SystemExit(2)
