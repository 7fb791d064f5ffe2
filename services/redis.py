"""Redis, the real engine, as a child process: a free port on 127.0.0.1, stopped by PID.

``RedisServer().start()`` runs the system's ``redis-server`` (Debian: ``apt-get install
redis-server``) with no persistence - ``--save '' --appendonly no`` in a temporary ``--dir`` of its
own, removed when it stops - unless ``persist=True``, which turns the append-only file on (fsync on
every write) in ``dir``, so a restart on the same port and directory finds every key again.  It is
ready once the server answering on its port reports its PID and that it is done loading its data,
within a bounded wait.

It asks the server whether it is ready through redis-py (the ``redis`` extra).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .process import LOOPBACK, Service, ServiceError, free_port, listening

PROGRAM = "redis-server"
INSTALL = "apt-get install redis-server"
LOG = "redis.log"


def program(name: str = PROGRAM) -> str:
    """The path of ``redis-server``, or a one-line ServiceError that says how to install it."""
    path = shutil.which(name)
    if path is None:
        raise ServiceError(f"{name} is not installed: install Redis first (Debian/Ubuntu: {INSTALL})")
    return path


@dataclass
class RedisServer:
    """One ``redis-server`` on ``127.0.0.1:port``; a context manager that stops it on exit."""

    port: int = 0  # 0: a free port, picked at the first start and kept for restarts
    persist: bool = False  # the append-only file, for a test that restarts the server
    dir: str | None = None  # where the server works; a temporary one (removed on stop) when None
    service: Service | None = field(default=None, init=False)
    _own_dir: bool = field(default=False, init=False)

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        proc = self.service.proc if self.service is not None else None
        return proc.pid if proc is not None else None

    def argv(self, executable: str = PROGRAM) -> list[str]:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        return [executable, "--port", str(self.port), "--bind", LOOPBACK, "--save", "", *persistence,
                "--dir", str(self.dir), "--logfile", LOG, "--daemonize", "no"]

    def start(self, ready_timeout: float = 15.0) -> "RedisServer":
        """Start it and wait (bounded) until it answers, as itself, with its data loaded."""
        executable = program()  # first: a missing redis-server fails before anything is created
        if self.port == 0:
            self.port = free_port()
        if listening(self.port):
            raise ServiceError(f"redis-server: port {self.port} on {LOOPBACK} is already in use")
        if self.dir is None:
            self.dir, self._own_dir = tempfile.mkdtemp(prefix="pillpipe-redis-"), True
        deadline = time.monotonic() + ready_timeout
        self.service = Service("redis-server", self.argv(executable), [self.port])
        try:
            self.service.start(ready_timeout)
            proc = self.service.proc
            assert proc is not None  # start() made it
            while (info := _info(self.port)).get("process_id") != proc.pid or info.get("loading") != 0:
                if proc.poll() is not None:
                    raise ServiceError(f"redis-server: exited with code {proc.returncode} before it was ready")
                if info.get("process_id") not in (None, proc.pid):
                    raise ServiceError(f"redis-server: port {self.port} is answered by another server")
                if time.monotonic() > deadline:
                    raise ServiceError(f"redis-server: not ready on port {self.port} after {ready_timeout:g} s")
                time.sleep(0.02)
        except ServiceError as exc:
            why = self._last_log_line()  # read before stop() removes a temporary directory
            self.stop()
            raise ServiceError(f"{exc}{why}") from None
        return self

    def stop(self) -> int | None:
        """SIGTERM by PID (SIGKILL after a grace period); a temporary directory goes with it."""
        code = self.service.stop() if self.service is not None else None
        if self._own_dir and self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir, self._own_dir = None, False
        return code

    def kill(self) -> None:
        """SIGKILL, for tests where the broker must vanish mid-call (its directory stays until stop)."""
        if self.service is not None:
            self.service.kill()

    def _last_log_line(self) -> str:
        try:
            lines = (Path(str(self.dir)) / LOG).read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return f" ({lines[-1].strip()})" if lines else ""

    def __enter__(self) -> "RedisServer":
        return self if self.service is not None and self.service.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _info(port: int) -> dict[str, Any]:
    """The server's ``INFO`` (``process_id``, ``loading``...), or {} while it does not answer."""
    try:
        import redis
    except ImportError:
        raise ServiceError("redis-server: redis-py is not installed: pip install 'pillpipe[redis]'") from None
    client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=0.5, socket_connect_timeout=0.5,
                         retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))
    try:
        return dict(client.info())
    except redis.RedisError:  # not up yet, or still loading its data
        return {}
    finally:
        client.close()
