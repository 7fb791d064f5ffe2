"""``pillpipe compare|bench`` and ``python -m pillpipe.benchmarks [compare]``: one entry point, ``main``."""
from __future__ import annotations

import sys
from typing import Sequence

COMMANDS = ("bench", "compare")


def main(argv: Sequence[str], prog: str = "pillpipe") -> int:
    """``argv[0]`` may name the command (``bench``, the default, or ``compare``); the rest are its
    flags.  ``prog`` is how the user called us, so every usage line names itself:
    ``pillpipe bench`` / ``pillpipe compare``, or ``python -m pillpipe.benchmarks [compare]``."""
    args = list(argv)
    named = bool(args) and args[0] in COMMANDS
    command = args.pop(0) if named else "bench"
    # pillpipe always names the command; python -m pillpipe.benchmarks runs bench unless told otherwise
    own = f"{prog} {command}" if named or prog == "pillpipe" else prog
    if command == "compare":
        from .compare import main as compare_main

        return compare_main(args, own)
    from .bench import main as bench_main

    return bench_main(args, own)


def console(prog: str) -> None:
    raise SystemExit(main(sys.argv[1:], prog))
