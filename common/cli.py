"""The one command-line runner every variant's ``__main__`` uses: parse, run, print, exit.

The report always gets out or says why not: a report that cannot be written to stdout (closed,
``/dev/full``, an I/O error) is said in one line on stderr, with the run's own exit code, and the
process exits 74 (``EXIT_OUTPUT``, sysexits' EX_IOERR) instead.  The one exception is a reader that
closed the pipe early (``| head``): it chose to stop reading, so the run's own code stands (and
stderr says the report was not written).
"""
from __future__ import annotations

import json
import os
import signal
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Callable, NoReturn, Sequence, TextIO

from .config import Config, SetupError, UsageError, parse_config, usage_exit
from .context import WorkerCrashes
from .events import describe, say, write
from .report import Report
from .source import check_input
from .stop import hold_early, take_early

DESCRIPTION = """\
Migrate files through a four-stage pipeline - Dispatcher -> S3 uploaders -> API uploaders ->
Verifier - with simulated, deterministic latencies, and print the verification report.
With no flags: the tutorial's run (8 files, 3 S3 workers, 2 API workers, real latencies)."""

EXIT_OK, EXIT_FILES_FAILED, EXIT_USAGE, EXIT_SETUP, EXIT_INTERNAL, EXIT_OUTPUT = 0, 1, 2, 69, 70, 74
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}
MEANING = {EXIT_OK: "every file succeeded", EXIT_FILES_FAILED: "some file did not succeed",
           EXIT_INTERNAL: "a stage died, or the state could not be written", EXIT_SETUP: "the broker went away", 130: "stopped by SIGINT", 143: "stopped by SIGTERM"}
READER_GONE = "the reader closed the pipe"
# What a run needs around it, given by the floor above (the embedded services for --io real:
# ``serving`` in services/embedded.py): a context manager that yields the config to run.
Services = Callable[[Config], AbstractContextManager[Config]]


def exit_code(report: Report) -> int:
    if report.stopped_by in EXIT_SIGNAL:
        return EXIT_SIGNAL[report.stopped_by]
    if report.stopped_by == "broker":  # the broker went away (--broker): EX_UNAVAILABLE, as at the start
        return EXIT_SETUP
    if report.stopped_by in ("crash", "state"):  # a stage died; the state (--state) could not be written
        return EXIT_INTERNAL
    if report.success == report.expected and not report.errors:
        return EXIT_OK
    return EXIT_FILES_FAILED


def main(run: Callable[[Config], Report], prog: str, argv: Sequence[str] | None = None,
         services: Services | None = None) -> int:
    """Run one variant from the command line; returns the exit code.  A flag that does not apply to
    the variant (``VARIANT`` of ``run``'s module) is a usage error before anything runs.
    ``services`` starts what the run talks to (and stops it after); a signal while they start
    stops the command before any file is read."""
    module = sys.modules.get(getattr(run, "__module__", ""))
    config = parse_config(argv, prog, DESCRIPTION, getattr(module, "VARIANT", None))
    if config.input is not None:
        try:
            check_input(config.input)  # never opens a FIFO or reads stdin: the run reads them once
        except OSError as exc:
            usage_exit(prog, str(exc))
    held: list[str] = []
    if getattr(module, "HANDLES_SIGNALS", False):
        take_early()
        _hold_signals(hold_early)  # until the run's own handlers are in; the run replays what came
    try:
        with (services or nullcontext)(config) as served:
            if held and served is not config:  # while the services started: nothing has run, nor will
                say(f"{prog}: {held[0]} while the services were starting: stopped before any file was read")
                return EXIT_SIGNAL.get(held[0], EXIT_SIGNAL["SIGINT"])
            report = run(served)
    except WorkerCrashes as crashes:
        if crashes.report is None:  # never from a run, which attaches its report: the crash goes on up
            raise
        report = crashes.report
    except UsageError as exc:  # what this variant cannot do here (say, queue-shutdown before 3.13)
        usage_exit(prog, str(exc))
    except SetupError as exc:
        say(f"{prog}: error: {exc}")
        return EXIT_SETUP
    finally:
        _hold_signals(held.append)  # the run has restored the handlers: what comes now is too late
        held[:0] = take_early()  # held, but the run never installed its handlers to replay them
    code = deliver(report, config.json, prog, exit_code(report))
    if held:
        say(f"{prog}: {', '.join(held)} arrived outside the run: ignored")
    return code


def deliver(report: Report, as_json: bool, prog: str, code: int) -> int:
    """Write the report on stdout and return the exit code: ``code``, or ``EXIT_OUTPUT`` when the
    report could not be written (said on stderr, with ``code``)."""
    problem = write_report(sys.stdout, report, as_json)
    if problem is None:
        return code
    if problem == READER_GONE:
        say(f"{prog}: the report was not written: {READER_GONE} (exit code {code} is the run's)")
        return code
    say(f"{prog}: error: the report could not be written to stdout ({problem}); "
        f"the run itself ended with exit code {code} ({MEANING.get(code, 'see --help')})")
    return EXIT_OUTPUT


def write_report(stream: TextIO | None, report: Report, as_json: bool) -> str | None:
    """Write the report (text or JSON) on ``stream``; None when it got out, else why not.  On a
    stream whose encoding cannot hold a name, JSON is written with ``\\uXXXX`` escapes (still JSON)
    and text with backslash escapes."""
    if stream is None:
        return "stdout is closed"
    text = report.to_json() if as_json else report.format()
    if as_json and not _encodable(text, getattr(stream, "encoding", None)):
        text = json.dumps(report.to_dict(), ensure_ascii=True)
    try:
        write(stream, text + "\n")
    except BrokenPipeError:
        return READER_GONE
    except (OSError, ValueError) as exc:
        return describe(exc)
    return None


def _encodable(text: str, encoding: str | None) -> bool:
    try:
        text.encode(encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def entry(run: Callable[[Config], Report], prog: str, argv: Sequence[str] | None = None,
          services: Services | None = None) -> NoReturn:
    """``python -m <variant>`` and ``pillpipe run VARIANT``: run, then exit with the code."""
    finish(main(run, prog, argv, services))


def finish(code: int) -> NoReturn:
    """Exit with ``code``, whatever happened to stdout: what is still buffered is flushed now, and if
    that fails (the reader left, a full disk), stdout is pointed at /dev/null so the interpreter's
    own flush at exit neither prints a traceback nor changes the code."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # the report is out: a signal now must not turn
        signal.signal(sig, signal.SIG_IGN)       # the exit into a death by signal during shutdown
    stream = sys.stdout
    if stream is not None:
        try:
            stream.flush()
        except (OSError, ValueError):
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass
    raise SystemExit(code)


def _hold_signals(note: Callable[[str], None]) -> None:
    """Outside a run's own handlers (the instant before it installs them, or once it has restored
    them and the report is being printed), a SIGINT/SIGTERM must not end the process with a
    ``KeyboardInterrupt`` traceback and no report: it is passed to ``note`` - before the run,
    ``stop.hold_early`` (the run replays it once its handlers are in), after it, a list of
    signals that came too late (said on stderr, ignored)."""
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: note(signal.Signals(signum).name))
    except ValueError:  # not the main thread: signals are not ours to handle
        pass
