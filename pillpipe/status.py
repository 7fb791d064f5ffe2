"""``pillpipe status PATH [--json]``: what a run's state file holds, per terminal state.

It opens the file read-only, so it may run while the run writes it (SQLite's WAL readers never
block the writer, nor it them): it shows what is committed at that instant.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn, Sequence

from pillpipe.common.model import Outcome
from pillpipe.common.sqlite_store import SqliteStore
from pillpipe.common.store import SCHEMA, StateError, workload_args

PROG = "pillpipe status"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def status(path: str) -> dict[str, Any]:
    """The state's counts as a dict shaped like the report's (``success``, ``failed``, ...)."""
    with SqliteStore.read(path) as store:
        summary = store.summary()
    return {"state": path, "schema": SCHEMA, "expected": summary["workload"].get("files"), **summary}


def format_status(data: dict[str, Any]) -> str:
    of = f" of {data['expected']}" if data["expected"] is not None else ""
    lines = [f"=== RUN STATE: {data['state']} ===",
             f"Workload: {workload_args(data['workload'])}",
             f"Runs: {data['runs']}",
             f"Recorded: {data['recorded']}{of}",
             f"Processed: {data['processed']}"]
    lines += [f"{outcome.value.capitalize()}: {data[outcome.value]}" for outcome in Outcome]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog=PROG, description="Counts per terminal state of a run's state file (--state PATH); "
                                            "safe to run while that run is going.")
    parser.add_argument("path", metavar="PATH", help="the state file a run was given with --state")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ns = parser.parse_args(argv)
    try:
        data = status(ns.path)
    except StateError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 2
    sys.stdout.write((json.dumps(data, ensure_ascii=False) if ns.json else format_status(data)) + "\n")
    return 0
