"""Start a server as a child process on 127.0.0.1, wait (bounded) until it listens, stop it by PID."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import IO, Sequence

LOOPBACK = "127.0.0.1"


class ServiceError(RuntimeError):
    """A service could not be started (or did not become ready in time); the message says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def listening(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class Service:
    """One child process serving on ``ports``; a context manager that stops it on exit."""

    name: str
    argv: Sequence[str]
    ports: Sequence[int]
    env: dict[str, str] | None = None
    cwd: str | None = None
    log: IO[bytes] | int = subprocess.DEVNULL
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self, ready_timeout: float = 15.0) -> "Service":
        """Start the process in its own session (so a terminal's Ctrl-C reaches the pipeline, not
        the server) and wait until every port accepts connections."""
        try:
            self.proc = subprocess.Popen(list(self.argv), env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                         stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise ServiceError(f"{self.name}: cannot start {self.argv[0]}: {exc.strerror or exc}") from None
        deadline = time.monotonic() + ready_timeout
        pending = list(self.ports)
        while pending:
            if self.proc.poll() is not None:
                raise ServiceError(f"{self.name}: exited with code {self.proc.returncode} before it was ready")
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(f"{self.name}: not listening on port {pending[0]} after {ready_timeout:g} s")
            if listening(pending[0]):
                pending.pop(0)
            else:
                time.sleep(0.02)
        return self

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM by PID, wait up to ``grace`` seconds, then SIGKILL; returns the exit code."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                return proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return proc.poll()

    def kill(self) -> None:
        """SIGKILL, for tests that need a service to vanish mid-run."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def __enter__(self) -> "Service":
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
