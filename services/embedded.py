"""The embedded default: our S3 subset and metadata API, each in its own child process on a free
127.0.0.1 port, seeded with the generated source objects, stopped by PID.

    with EmbeddedServices(objects=config.files, tls=False) as services:
        ... services.endpoints ...      # where the clients go (dummy credentials, hints honoured)
        services.api.kill()             # a test can make one service vanish mid-run

The children run in their own session (``Service`` starts them so): a terminal's Ctrl-C reaches
the pipeline, which drains, and not the servers it is still talking to.  They also exit by
themselves if this process disappears without stopping them.
"""
from __future__ import annotations

import dataclasses
import json
import os
import secrets
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from typing import IO, Any, Iterable, Iterator

from pillpipe.common.calls import STATS_PATH, Endpoints
from pillpipe.common.config import Config, SetupError

from .process import LOOPBACK, Service, ServiceError, free_port
from .seeding import input_objects, s3_client, seed, seed_objects, spool
from .tls import make_certificates

SERVER = "pillpipe.services.server"


class EmbeddedServices:
    """Both services, started together; a context manager that stops them on exit."""

    def __init__(self, objects: int = 0, *, tls: bool = False, log: IO[bytes] | int = subprocess.DEVNULL,
                 ready_timeout: float = 20.0, s3_port: int = 0, api_port: int = 0) -> None:
        if objects < 0:
            raise ValueError(f"objects must be >= 0 (got {objects})")
        self.objects, self.tls, self.log, self.ready_timeout = objects, tls, log, ready_timeout
        self.ports = (s3_port, api_port)  # 0: a free port
        self.s3: Service | None = None
        self.api: Service | None = None
        self.endpoints: Endpoints | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> "EmbeddedServices":
        self._dir = tempfile.TemporaryDirectory(prefix="pillpipe-services-")
        ca_file, tls_args, scheme = None, [], "http"
        if self.tls:
            ca_file, server_pem = make_certificates(self._dir.name)
            tls_args, scheme = ["--tls-cert", server_pem], "https"
        s3_port, api_port = (port or free_port() for port in self.ports)
        common = ["--parent", str(os.getpid()), *tls_args]
        self.s3 = Service("s3", [sys.executable, "-m", SERVER, "s3", "--port", str(s3_port),
                                 "--objects", str(self.objects), *common], [s3_port], log=self.log)
        self.api = Service("api", [sys.executable, "-m", SERVER, "api", "--port", str(api_port), *common],
                           [api_port], log=self.log)
        endpoints = Endpoints(f"{scheme}://{LOOPBACK}:{s3_port}", f"{scheme}://{LOOPBACK}:{api_port}",
                              access_key="pillpipe-" + secrets.token_hex(4),  # dummy: our S3 checks no signature
                              secret_key=secrets.token_hex(16), ca_file=ca_file, hints=True)
        try:
            _start_together([self.s3, self.api], self.ready_timeout)
            for service, url in ((self.s3, endpoints.s3_url), (self.api, endpoints.api_url)):
                _answers(service, url, ca_file, self.ready_timeout)
        except BaseException:
            self.stop()
            raise
        self.endpoints = endpoints
        return self

    def stop(self) -> None:
        for service in (self.api, self.s3):
            if service is not None:
                service.stop()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def seed(self, objects: Iterable[tuple[str, int]]) -> int:
        """PutObject each (key, size) into the source bucket (for ``--input`` records, whose names and
        sizes the generated files do not cover); returns how many."""
        assert self.endpoints is not None, "start() first"
        e = self.endpoints
        return seed(s3_client(e.s3_url, e.access_key, e.secret_key, e.ca_file), objects)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Each service's counters (requests by status, connections accepted, hung calls)."""
        assert self.endpoints is not None, "start() first"
        return {"s3": fetch_stats(self.endpoints.s3_url, self.endpoints.ca_file),
                "api": fetch_stats(self.endpoints.api_url, self.endpoints.ca_file)}

    def __enter__(self) -> "EmbeddedServices":
        return self if self.endpoints is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def serving(config: Config) -> Iterator[Config]:
    """A run's services, for the command line: with ``--io real`` and an endpoint not given, start the
    embedded services for the run (the source objects made server-side, or seeded from what the
    ``--input`` records name), yield ``config`` pointing at them, and stop them afterwards.  They
    run in their own processes and session: a Ctrl-C drains the pipeline, not the servers it is
    still talking to.  Anything else: ``config`` as it is.  Raises ``SetupError`` when they cannot start."""
    if config.io != "real" or config.endpoints is not None:
        yield config
        return
    if config.s3_endpoint and config.api_url:
        yield _given(config)
        return
    with tempfile.TemporaryDirectory(prefix="pillpipe-run-") as scratch:
        if config.input == "-":  # read stdin once into a file: seeding reads it, then the run does
            path = spool(sys.stdin.buffer, os.path.join(scratch, "input"))
            config = dataclasses.replace(config, input=path, input_format=config.input_format or "jsonl")
        services = EmbeddedServices(config.files if config.input is None else 0, tls=config.tls)
        try:
            services.start()
            if config.input is not None and not config.s3_endpoint:
                e = services.endpoints
                assert e is not None
                seed_objects(s3_client(e.s3_url, e.access_key, e.secret_key, e.ca_file),
                             input_objects(config.input, config.input_format))
        except (ServiceError, RuntimeError, OSError) as exc:
            services.stop()
            raise SetupError(f"the embedded services did not start: {exc}") from None
        try:
            yield dataclasses.replace(config, endpoints=_endpoints(config, services))
        finally:
            services.stop()


def _given(config: Config) -> Config:
    """Both endpoints given: when both answer as our services (``pillpipe serve``), they honour the
    hints, so the run sends them (and any credentials do); else the run plays the hints itself."""
    assert config.s3_endpoint and config.api_url
    if not all(_ours(url, config.ca_file) for url in (config.s3_endpoint, config.api_url)):
        return config
    return dataclasses.replace(config, endpoints=Endpoints(
        config.s3_endpoint, config.api_url, access_key="pillpipe-" + secrets.token_hex(4),
        secret_key=secrets.token_hex(16), ca_file=config.ca_file, hints=True))


def _ours(url: str, ca_file: str | None) -> bool:
    try:
        return isinstance(fetch_stats(url, ca_file, timeout=2.0).get("requests"), int)
    except (OSError, ValueError, AttributeError):
        return False


def _endpoints(config: Config, services: EmbeddedServices) -> Endpoints:
    """The embedded services' endpoints, with any given by a flag in their place: hints only when both
    are ours, dummy credentials only for our S3 (a given one takes the usual AWS environment)."""
    ours = services.endpoints
    assert ours is not None
    if not (config.s3_endpoint or config.api_url):
        return ours
    given = dataclasses.replace(ours, api_url=config.api_url or ours.api_url, ca_file=config.ca_file or ours.ca_file,
                                hints=False)
    if config.s3_endpoint is None:
        return given
    return dataclasses.replace(given, s3_url=config.s3_endpoint, access_key=None, secret_key=None)


def fetch_stats(url: str, ca_file: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """``GET /_pillpipe/stats`` from one of our services."""
    context = ssl.create_default_context(cafile=ca_file) if url.startswith("https:") else None
    with urllib.request.urlopen(url + STATS_PATH, timeout=timeout, context=context) as response:
        stats: dict[str, Any] = json.load(response)
        return stats


def _answers(service: Service, url: str, ca_file: str | None, timeout: float) -> None:
    """A port that listens may be someone else's: wait (bounded) until *our* server answers its stats."""
    deadline = time.monotonic() + timeout
    while True:
        if service.proc is not None and service.proc.poll() is not None:
            raise ServiceError(f"{service.name}: exited with code {service.proc.returncode} "
                               f"(is port {url.rsplit(':', 1)[1]} taken?)")
        try:
            fetch_stats(url, ca_file, timeout=1.0)
            return
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise ServiceError(f"{service.name}: {url} does not answer as our service") from None
            time.sleep(0.05)


def _start_together(services: list[Service], ready_timeout: float) -> None:
    """Start every service at once (each pays its own interpreter start-up) and wait for all."""
    errors: list[BaseException] = []

    def start(service: Service) -> None:
        try:
            service.start(ready_timeout)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,), name=f"start-{s.name}", daemon=True) for s in services]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(ready_timeout + 10)
    if errors:
        raise errors[0]
    if any(thread.is_alive() for thread in threads):
        raise ServiceError("services: start-up did not finish in time")
