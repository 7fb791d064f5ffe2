"""A run of the command line in a child process, watched the way a user watches it.

Both pipes are read by threads (stderr line by line, stdout - the JSON report - whole), so every
wait here is bounded: a program that hangs or never prints its marker fails the test instead of
hanging the session.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from typing import Any

from .conftest import ROOT


class Child:
    def __init__(self, argv: list[str], **popen: Any) -> None:
        env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env, **popen)
        self.seen: list[str] = []
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.out: list[str] = []
        self.readers = [threading.Thread(target=self._pump, daemon=True),
                        threading.Thread(target=lambda: self.out.append(self.proc.stdout.read()), daemon=True)]
        for reader in self.readers:
            reader.start()

    def _pump(self) -> None:
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, marker: str, timeout: float = 60) -> str:
        """Read stderr lines until one contains ``marker``; fail if the program ends first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.end()
                raise AssertionError(f"no {marker!r} within {timeout}s; printed:\n{self.tail()}") from None
            if line is None:
                raise AssertionError(f"ended without printing {marker!r}; printed:\n{self.tail()}")
            self.seen.append(line)
            if marker in line:
                return line

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def end(self) -> None:
        """A hang is the bug under test: end the child through its own abort path (two SIGINTs),
        then for good, so the suite goes on (the test fails)."""
        for _ in range(2):
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                time.sleep(0.5)
        if self.proc.poll() is None:
            self.proc.kill()

    def tail(self) -> str:
        return "".join(self.seen[-40:])

    def finish(self, timeout: float = 30) -> tuple[int, dict[str, Any], str, float]:
        """Wait for the exit and parse the report: (code, report, stderr, seconds waited).  The
        timeout is only a hang guard; stderr must hold no traceback."""
        start = time.monotonic()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.end()
            raise AssertionError(f"hung for {timeout}s; printed:\n{self.tail()}") from None
        waited = time.monotonic() - start
        for reader in self.readers:
            reader.join(timeout=30)
        while (line := self.lines.get(timeout=10)) is not None:
            self.seen.append(line)
        err = "".join(self.seen)
        assert "Traceback" not in err, err[-3000:]
        return code, json.loads(self.out[0]), err, waited
