"""``pillpipe compare|bench`` and ``python -m benchmarks [compare]``: one entry point, ``main(argv)``."""
from __future__ import annotations

import sys
from typing import Sequence

USAGE = """\
usage: python -m benchmarks [--quick] [--out DIR] [--only SCENARIO ...]   the benchmark scenarios
       python -m benchmarks compare [run flags] [--out DIR]              both variants side by side
       pillpipe bench ... / pillpipe compare ...                          the same
"""


def main(argv: Sequence[str], prog: str | None = None) -> int:
    """``argv[0]`` is ``compare`` or ``bench``; the rest are that command's flags.  ``prog`` names the
    command in its usage (``pillpipe bench``; default ``python -m benchmarks``)."""
    args = list(argv)
    command = args.pop(0) if args and args[0] in ("compare", "bench") else "bench"
    if command == "compare":
        from .compare import main as compare_main

        return compare_main(args)
    from .scenarios import main as bench_main

    return bench_main(args, prog or "python -m benchmarks")


def console() -> None:
    raise SystemExit(main(sys.argv[1:]))
