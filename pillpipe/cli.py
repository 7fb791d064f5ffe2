"""``pillpipe``: the top floor.  It alone knows every variant and dispatches to them.

Every subcommand is one row of ``COMMANDS``: what follows its name in the usage, one line of
summary, the extra it needs (if any), and ``main(prog, argv) -> exit code``, where ``prog`` is
``pillpipe NAME`` (its usage names itself).  Adding a subcommand (``serve``, ``status``, ...) is a
function and a row; the help, the suggestions for misspellings and the extra check follow.
"""
from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, NoReturn, Sequence

from pillpipe.common.cli import DESCRIPTION, entry, finish
from pillpipe.common.config import MODEL_FLAGS, build_parser, suggestion
from pillpipe.common.events import say
from pillpipe.variants import MODULES, VARIANTS, variants

ABOUT = """\
Threads or coroutines for an I/O-bound pipeline? The same four-stage file migration,
implemented side by side on one shared core, with identical reports and a clean poison-pill shutdown."""

# What each extra of pyproject.toml is for (``pip install 'pillpipe[NAME]'``); a test checks that
# every extra the package declares is here.
EXTRAS = {
    "bench": "pillpipe compare and pillpipe bench (rich, matplotlib)",
    "peers": "pillpipe bench --only peers: the same pipeline on pyper and pypeln",
    "progress": "the live progress view's rich panel (without it, a plain status line)",
    "trio": "pillpipe run anyio --backend trio",
    "uvloop": "pillpipe run asyncio --loop uvloop",
    "real": "real I/O: the S3 and HTTP clients of every model, pillpipe serve",
    "seaweedfs": "a real S3 server we did not write (SeaweedFS), for the tests and benchmarks",
    "redis": "the broker between processes (redis-py); the server comes from apt-get install redis-server",
    "test": "the test suite: pip install '.[test]' && pytest",
}


@dataclass(frozen=True)
class Command:
    args: str  # what follows ``pillpipe NAME`` in the usage
    summary: str
    main: Callable[[str, list[str]], int]
    extra: str | None = None  # the extra it needs: pip install 'pillpipe[EXTRA]'


# ``pillpipe run`` ------------------------------------------------------------------------------
def run_help() -> str:
    """``pillpipe run --help``: the variants, each with its one-line summary, then every flag."""
    width = max(map(len, VARIANTS)) + 2
    lines = [f"  {name:<{width}}{_summary(name)}" for name in VARIANTS]
    model = "; ".join(f"--{flag} ({', '.join(names)})" for flag, names in MODEL_FLAGS.items())
    description = (f"{DESCRIPTION}\n\nvariants:\n" + "\n".join(lines) + "\n\nEvery variant takes the same "
                   f"flags, except each model's own: {model}.\nA flag given to a variant it does not apply "
                   "to is a usage error.  pillpipe run VARIANT --help shows one variant's flags.")
    return build_parser("pillpipe run VARIANT", description).format_help()


def _summary(name: str) -> str:
    doc = importlib.import_module(MODULES[name]).__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def run_command(prog: str, argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        sys.stdout.write(run_help())
        return 0
    choose = f"choose a variant: {', '.join(VARIANTS)}"
    if not argv:
        return _usage_error(prog, f"{choose} (see {prog} --help)")
    name = argv[0]
    if name.startswith("-"):
        return _usage_error(prog, f"the variant comes first: {prog} {{{','.join(VARIANTS)}}} {' '.join(argv)}")
    if name not in VARIANTS:
        return _usage_error(prog, f"unknown variant {name!r}{suggestion(name, VARIANTS)}; {choose}")
    from pillpipe.services.embedded import serving  # --io real: the embedded services, started for the run

    from pillpipe.processes import across

    entry(variants(name)[name], f"{prog} {name}", argv[1:], services=across(name, serving))


# ``pillpipe compare`` and ``pillpipe bench`` (the bench extra) ---------------------------------
def benchmarks_command(prog: str, argv: list[str]) -> int:
    from pillpipe.benchmarks.cli import main

    return main([prog.split()[-1], *argv], prog=prog.rsplit(" ", 1)[0])


# ``pillpipe status`` ---------------------------------------------------------------------------
def status_command(prog: str, argv: list[str]) -> int:
    from pillpipe.status import main

    return main(argv)


# ``pillpipe worker`` and ``pillpipe dispatch`` (the redis extra): a run across processes ----------
def worker_command(prog: str, argv: list[str]) -> int:
    from pillpipe.processes import worker_command as worker

    return worker(prog, argv)


def dispatch_command(prog: str, argv: list[str]) -> int:
    from pillpipe.processes import dispatch_command as dispatch

    return dispatch(prog, argv)


# ``pillpipe serve`` (the real extra) ----------------------------------------------------------
def serve_command(prog: str, argv: list[str]) -> int:
    from pillpipe.services.cli import serve

    return serve(argv)


COMMANDS: dict[str, Command] = {
    "run": Command("VARIANT [flags]", f"run the pipeline on one variant: {', '.join(VARIANTS)}", run_command),
    "compare": Command("[flags]", "the three models on the same workload, side by side: table, timelines, "
                                  "trace", benchmarks_command, extra="bench"),
    "bench": Command("[options]", "the benchmark scenarios, each measurement in a fresh process",
                     benchmarks_command, extra="bench"),
    "serve": Command("[--objects N] [--tls]", "our S3 subset and metadata API, standalone on 127.0.0.1, "
                     "until Ctrl-C", serve_command, extra="real"),
    "worker": Command("--broker URL --run ID --stage STAGE [--model M] [--workers N]",
                      "N workers of one stage of a run on a broker, in this process (docs/redis.md)",
                      worker_command, extra="redis"),
    "dispatch": Command("--broker URL --run ID [flags]", "dispatch and coordinate a run on a broker whose "
                        "workers are pillpipe worker processes; prints its report", dispatch_command, extra="redis"),
    "status": Command("PATH [--json]", "counts per state of a run's state file (--state), even while it runs",
                      status_command),
}
OPTIONS = ("-h", "--help", "-V", "--version")


def top_help() -> str:
    width = max(len(f"{name} {c.args}") for name, c in COMMANDS.items()) + 2
    commands = [f"  {f'{name} {c.args}':<{width}}{c.summary}{f' (extra: {c.extra})' if c.extra else ''}"
                for name, c in COMMANDS.items()]
    extras = [f"  {name:<10}{use}" for name, use in EXTRAS.items()]
    return "\n".join([
        "usage: pillpipe [-h] [-V] COMMAND ...", "", ABOUT, "", "commands:", *commands, "",
        "options:", "  -h, --help     this help; pillpipe COMMAND --help for a command's own",
        "  -V, --version  the version", "",
        "extras (pip install 'pillpipe[NAME]'):", *extras, "",
    ])


def version() -> str:
    import pillpipe

    return f"pillpipe {pillpipe.__version__}"


# The dispatcher --------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        return _usage_error("pillpipe", f"choose a command: {', '.join(COMMANDS)} (see pillpipe --help)")
    first, rest = args[0], args[1:]
    if first in ("-h", "--help") or (first == "help" and not rest):
        sys.stdout.write(top_help())
        return 0
    if first == "help":  # pillpipe help run == pillpipe run --help
        first, rest = rest[0], ["--help"]
    if first in ("-V", "--version"):
        sys.stdout.write(version() + "\n")
        return 0
    if first.startswith("-"):
        return _usage_error("pillpipe", f"unknown option {first!r}{suggestion(first, OPTIONS)} (see pillpipe --help)")
    command = COMMANDS.get(first)
    if command is None:
        return _usage_error("pillpipe", f"unknown command {first!r}{suggestion(first, COMMANDS)}; "
                                        f"choose one of {', '.join(COMMANDS)}")
    prog = f"pillpipe {first}"
    if command.extra is not None:
        absent = missing(command.extra)
        if absent:
            return _needs_extra(prog, command.extra, ", ".join(absent))
    try:
        return command.main(prog, rest)
    except ModuleNotFoundError as exc:  # a library of the extra is absent (or broken) after all
        top = (exc.name or "").partition(".")[0]
        if command.extra is None or not top or top == "pillpipe":
            raise
        return _needs_extra(prog, command.extra, top)


def missing(extra: str, requires: Sequence[str] | None = None) -> list[str]:
    """The distributions ``extra`` requires that are not installed, from the package's own metadata
    (pyproject.toml's optional-dependencies, the one list); [] when pillpipe is not installed (a
    checkout: a failed import then says it)."""
    if requires is None:
        try:
            requires = metadata.requires("pillpipe") or []
        except metadata.PackageNotFoundError:
            return []
    marker = re.compile(rf"""extra\s*==\s*["']{re.escape(extra)}["']""")
    absent = []
    for requirement in requires:
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        if name is None or not marker.search(requirement):
            continue
        try:
            metadata.version(name.group(0))
        except metadata.PackageNotFoundError:
            absent.append(name.group(0))
    return absent


def _needs_extra(prog: str, extra: str, what: str) -> int:
    return _usage_error(prog, f"needs the {extra} extra (missing: {what}): pip install 'pillpipe[{extra}]'")


def _usage_error(prog: str, message: str) -> int:
    say(f"{prog}: error: {message}")
    return 2


def console(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``pillpipe`` script."""
    finish(main(argv))
