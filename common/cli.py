"""The one command-line runner every variant's ``__main__`` uses: parse, run, print, exit."""
from __future__ import annotations

import os
import signal
import sys
from typing import Callable, Sequence

from .config import Config, UsageError, parse_config, usage_exit
from .context import WorkerCrashes
from .events import Events
from .report import Report
from .source import open_input

DESCRIPTION = """\
Migrate files through a four-stage pipeline - Dispatcher -> S3 uploaders -> API uploaders ->
Verifier - with simulated, deterministic latencies, and print the verification report.
With no flags: the tutorial's run (8 files, 3 S3 workers, 2 API workers, real latencies)."""

EXIT_OK, EXIT_FILES_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 70
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}


def exit_code(report: Report) -> int:
    if report.stopped_by in EXIT_SIGNAL:
        return EXIT_SIGNAL[report.stopped_by]
    if report.stopped_by == "crash":
        return EXIT_INTERNAL
    if report.success == report.expected and not report.errors:
        return EXIT_OK
    return EXIT_FILES_FAILED


def main(run: Callable[[Config], Report], prog: str, argv: Sequence[str] | None = None) -> int:
    """Run one variant from the command line; returns the exit code."""
    config = parse_config(argv, prog, DESCRIPTION)
    if config.input is not None and config.input != "-":
        try:
            open_input(config.input, config.input_format)[0].close()
        except OSError as exc:
            usage_exit(prog, str(exc))
    held: list[str] = []
    if getattr(sys.modules.get(getattr(run, "__module__", "")), "HANDLES_SIGNALS", False):
        _hold_signals(held)  # the run saves these and restores them: no unguarded moment after it
    try:
        report = run(config)
    except WorkerCrashes as crashes:
        report = crashes.report
    except UsageError as exc:  # what this variant cannot do here (say, queue-shutdown before 3.13)
        usage_exit(prog, str(exc))
    finally:
        _hold_signals(held)
    out = Events(sys.stdout)
    out.emit(report.to_json() if config.json else report.format())
    if held:
        Events(sys.stderr).notice(f"{prog}: {', '.join(held)} arrived outside the run: ignored")
    return exit_code(report)


def entry(run: Callable[[Config], Report], prog: str) -> None:
    """``python -m <variant>``: exit with the run's code, whatever happened to stdout."""
    code = main(run, prog)
    for sig in (signal.SIGINT, signal.SIGTERM):  # the report is out: a signal now must not turn
        signal.signal(sig, signal.SIG_IGN)       # the exit into a death by signal during shutdown
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError, OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(code)


def _hold_signals(held: list[str]) -> None:
    """Outside a run's own handlers (the instant before it installs them, or once it has restored
    them and the report is being printed), a SIGINT/SIGTERM must not end the process with a
    ``KeyboardInterrupt`` traceback and no report: it is noted in ``held`` and ignored.  A run that
    handles no signals itself (the sequential one) keeps Python's default while it runs."""
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: held.append(signal.Signals(signum).name))
    except ValueError:  # not the main thread: signals are not ours to handle
        pass
