"""Each model's real clients against real servers: our embedded services (copy, post, verify, a 503,
a hang bounded by the client's timeout, TLS, a server killed mid-call) and SeaweedFS, a real S3
server we did not write.  Every client must report the same results and the same error texts."""
from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import anyio
import pytest

from pillpipe.anyio_version import clients as anyio_clients
from pillpipe.asyncio_version import clients as asyncio_clients
from pillpipe.common import calls
from pillpipe.common.calls import (CallError, ConnectionRefused, Copied, Endpoints,
                                   HttpError, ObjectInfo, Posted, Record, ServiceUnavailable, TlsError)
from pillpipe.common.faults import FaultPlan
from pillpipe.common.workload import DEST_BUCKET, Workload, generate_files
from pillpipe.services.embedded import EmbeddedServices, fetch_stats
from pillpipe.services.seaweed import SeaweedFS
from pillpipe.threaded import clients as threaded_clients

pytestmark = pytest.mark.timeout(90)

# name -> (module, http client, anyio backend)
CLIENTS = {
    "threaded-urllib3": (threaded_clients, "urllib3", None),
    "threaded-httpx": (threaded_clients, "httpx", None),
    "asyncio-aiohttp": (asyncio_clients, "aiohttp", None),
    "asyncio-httpx": (asyncio_clients, "httpx", None),
    "anyio-asyncio": (anyio_clients, "httpx", "asyncio"),
    "anyio-trio": (anyio_clients, "httpx", "trio"),
}
TIMEOUT = 1.0
COUNTED = {  # whose connections each client can count (aiobotocore's httpx session does not tell)
    "threaded-urllib3": ("s3", "api"), "threaded-httpx": ("s3", "api"), "asyncio-aiohttp": ("s3", "api"),
    "asyncio-httpx": ("api",), "anyio-asyncio": ("api",), "anyio-trio": ("api",)}


@pytest.fixture(params=list(CLIENTS), ids=list(CLIENTS))
def client(request: pytest.FixtureRequest) -> str:
    return request.param


def perform(name: str, endpoints: Endpoints, calls_: list, *, timeout: float | None = TIMEOUT, concurrent: int = 1,
            **pools: int) -> tuple[list[Any], dict[str, int | None]]:
    """Perform ``calls_`` with client ``name`` (``concurrent`` at a time); each outcome is a result or
    the ``CallError`` raised, in order; then the connections the clients say they opened."""
    module, http_client, backend = CLIENTS[name]
    options = dict(timeout=timeout, http_client=http_client, **pools)
    if module is threaded_clients:
        with module.open_clients(endpoints, **options) as clients:
            with ThreadPoolExecutor(concurrent) as pool:
                outcomes = list(pool.map(lambda call: _outcome(clients.perform, call), calls_))
            return outcomes, clients.connections()

    async def run() -> tuple[list[Any], dict[str, int | None]]:
        async with module.open_clients(endpoints, **options) as clients:
            outcomes: list[Any] = [None] * len(calls_)
            limit = anyio.Semaphore(concurrent)

            async def one(i: int) -> None:
                async with limit:
                    try:
                        outcomes[i] = await clients.perform(calls_[i])
                    except CallError as exc:
                        outcomes[i] = exc

            if concurrent == 1:  # in order (trio runs ready tasks in a random order, on purpose)
                for i in range(len(calls_)):
                    await one(i)
            else:
                async with anyio.create_task_group() as tasks:
                    for i in range(len(calls_)):
                        tasks.start_soon(one, i)
            return outcomes, clients.connections()

    if backend is None:
        return asyncio.run(run())
    return anyio.run(run, backend=backend)


def _outcome(call_it: Callable[[Any], Any], call: Any) -> Any:
    try:
        return call_it(call)
    except CallError as exc:
        return exc


def texts(outcomes: list[Any]) -> list[str]:
    return [f"{type(o).__name__}: {o}" for o in outcomes]


def migrate(files: int, workload: Workload, faults: FaultPlan, attempt: int = 1) -> tuple[list, list, list]:
    """The calls of one attempt for ``files`` files: the copies, the posts, the verifier's checks."""
    records = list(generate_files(files))
    copies = [calls.copy_call(r, workload, faults, attempt) for r in records]
    for record, copy in zip(records, copies):
        record.dest_key = copy.key
    posts = [calls.post_call(r, workload, faults, attempt) for r in records]
    checks = [c for r in records for c in calls.verify_calls(r, workload.seed)]
    return copies, posts, checks


@pytest.fixture(scope="module")
def services():
    with EmbeddedServices(objects=6) as running:
        yield running


# Against our services ------------------------------------------------------------------------
def test_copy_post_verify_and_http_errors(client, services):
    workload = Workload(seed=11, time_scale=0)
    copies, posts, checks = migrate(3, workload, FaultPlan())
    unavailable = calls.Hint(0.0, calls.UNAVAILABLE, calls.TRANSIENT)  # a 503, as --fail-rate asks for
    errors = [dataclasses.replace(copies[0], hint=unavailable), dataclasses.replace(posts[0], hint=unavailable),
              calls.S3Head(DEST_BUCKET, "never/copied"), calls.ApiGet("/records/424242")]
    before = services.stats()
    outcomes, opened = perform(client, services.endpoints, copies + posts + checks + errors)
    after = services.stats()
    assert outcomes[:3] == [Copied(DEST_BUCKET, c.key) for c in copies]
    assert outcomes[3:6] == [Posted(1), Posted(2), Posted(3)]
    for check, result in zip(checks, outcomes[6:12]):
        assert isinstance(result, (ObjectInfo, Record)) and check.problem(result) is None
    assert [type(o) for o in outcomes[12:]] == [ServiceUnavailable, ServiceUnavailable, HttpError, HttpError]
    assert texts(outcomes[12:]) == ["ServiceUnavailable: transient s3 error", "ServiceUnavailable: transient api error",
                                    "HttpError: s3 head: HTTP 404 NotFound", "HttpError: api get: HTTP 404 NotFound"]
    for service in ("s3", "api"):  # what the client counts, the server saw (plus its stats requests)
        accepted = after[service]["connections"] - before[service]["connections"]
        if service in COUNTED[client]:
            assert 1 <= opened[service] <= accepted
        else:
            assert opened[service] is None


def test_every_client_reports_the_same_outcomes(services):
    """Faults and failures of every kind, one attempt each: results and error texts equal across
    every model and library (what makes the variants' reports comparable with ==)."""
    workload = Workload(seed=5, time_scale=0.02, fail_rate=0.3)
    faults = FaultPlan.parse(["s3:id=2:raise", "api:id=3:raise", "s3:id=4:slow=2"])
    copies, posts, checks = migrate(8, workload, faults)  # files 7 and 8 have no source object: 404
    seen = {name: texts(perform(name, services.endpoints, copies + posts)[0]) for name in CLIENTS}
    first = seen["threaded-urllib3"]
    assert all(outcome == first for outcome in seen.values()), seen
    assert "ServiceUnavailable: injected s3 error" in first and "ServiceUnavailable: injected api error" in first
    assert "HttpError: s3 copy: HTTP 404 NoSuchKey" in first
    assert any("transient" in text for text in first)


def test_a_hang_is_bounded_by_the_client_timeout(client, services):
    faults = FaultPlan.parse(["s3:id=1:hang", "api:id=1:hang"])
    copies, posts, _ = migrate(1, Workload(time_scale=0), faults)
    started = time.monotonic()
    outcomes, _ = perform(client, services.endpoints, copies + posts, timeout=0.5)
    assert time.monotonic() - started < 20  # a guard: two 0.5 s timeouts, on a loaded machine
    assert texts(outcomes) == ["CallTimeout: timeout after 0.5s"] * 2


def test_concurrent_calls_share_one_client(client, services):
    workload = Workload(seed=2, time_scale=0.01)
    copies, posts, _ = migrate(6, workload, FaultPlan())
    outcomes, opened = perform(client, services.endpoints, copies + posts, concurrent=4, s3_pool=4, api_pool=4)
    assert outcomes == [Copied(DEST_BUCKET, c.key) for c in copies] + [Posted(i) for i in range(1, 7)]
    assert opened["api"] is None or 1 <= opened["api"] <= 12


@pytest.fixture(scope="module")
def tls_services():
    with EmbeddedServices(objects=1, tls=True) as running:
        yield running


def test_tls(client, tls_services):
    copies, posts, checks = migrate(1, Workload(seed=len(client), time_scale=0), FaultPlan())
    outcomes, _ = perform(client, tls_services.endpoints, copies + posts + checks)
    assert not any(isinstance(o, CallError) for o in outcomes), outcomes
    untrusted = dataclasses.replace(tls_services.endpoints, ca_file=None)
    outcomes, _ = perform(client, untrusted, copies + posts)
    assert [type(o) for o in outcomes] == [TlsError, TlsError]


def test_a_server_killed_mid_call_is_a_per_call_error_not_a_hang(client):
    """Kill the API server while a call waits on it (a hang hint): that call fails at once with a
    connection error, well before its timeout, and the next one is refused."""
    with EmbeddedServices(objects=1) as services:
        hung = calls.ApiPost({"id": 1}, calls.Hint(0.0, calls.HANG))

        def kill_once_the_call_waits() -> None:
            deadline = time.monotonic() + 20
            while fetch_stats(services.endpoints.api_url)["hung"] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            services.api.kill()

        killer = threading.Thread(target=kill_once_the_call_waits)
        killer.start()
        try:
            started = time.monotonic()
            outcomes, _ = perform(client, services.endpoints, [hung], timeout=30.0)
            elapsed = time.monotonic() - started
        finally:
            killer.join()
        assert texts(outcomes) == ["ConnectionLost: api post: connection lost"]
        assert elapsed < 15  # not the 30 s timeout: the kill ended the call
        outcomes, _ = perform(client, services.endpoints, [calls.ApiPost({"id": 2}), calls.ApiGet("/records/1")])
        assert [type(o) for o in outcomes] == [ConnectionRefused, ConnectionRefused]
        assert texts(outcomes) == ["ConnectionRefused: api post: connection refused",
                                   "ConnectionRefused: api get: connection refused"]


def test_an_unknown_http_client_is_refused():
    for module in (threaded_clients, asyncio_clients, anyio_clients):
        with pytest.raises(ValueError, match="http client must be one of"):
            module.open_clients(Endpoints("http://127.0.0.1:1", "http://127.0.0.1:2"), http_client="curl")


def test_the_client_modules_read_side_by_side():
    """The same public names in the same order in every model, and the same methods."""
    modules = (threaded_clients, asyncio_clients, anyio_clients)
    names = [[n for n, v in vars(m).items() if not n.startswith("_")
              and (getattr(v, "__module__", None) == m.__name__ or n.isupper())] for m in modules]
    assert names[0] == names[1] == names[2] == ["HTTP_CLIENTS", "JSON", "TIMEOUTS", "LOST", "TLS", "Clients",
                                                "open_clients"]
    methods = [[n for n in vars(m.Clients) if not n.startswith("__")] for m in modules[:2]]
    assert methods[0] == methods[1]
    # anyio's clients are asyncio's code, offering httpx alone (aiohttp is asyncio-only)
    assert anyio_clients.Clients.__bases__ == (asyncio_clients.Clients,)
    assert {n for n in vars(anyio_clients.Clients) if not n.startswith("__")} == {"choices"}
    assert anyio_clients.Clients.choices == ("httpx",)


# Against SeaweedFS, a real S3 server -------------------------------------------------------
SEAWEEDFS = pytest.mark.xdist_group("seaweedfs")  # one worker starts the servers: several at once starve each other


@pytest.fixture(scope="module")
def seaweedfs():
    with SeaweedFS(objects=3) as server:
        yield server
    assert server.service.proc.returncode is not None  # stopped by PID (SIGTERM: about 1.3 s here)


@SEAWEEDFS
def test_copy_against_seaweedfs(client, seaweedfs, services):
    endpoints = Endpoints(seaweedfs.url, services.endpoints.api_url, access_key=seaweedfs.access_key,
                          secret_key=seaweedfs.secret_key, hints=False)
    workload = Workload(seed=int.from_bytes(client.encode(), "big") % 1000, time_scale=0)
    copies, _, checks = migrate(3, workload, FaultPlan())
    copies = [dataclasses.replace(c, hint=calls.NO_HINT) for c in copies]
    heads = [c for c in checks if isinstance(c, calls.S3Head)]
    outcomes, _ = perform(client, endpoints, copies + heads)
    assert outcomes[:3] == [Copied(DEST_BUCKET, c.key) for c in copies]
    for head, info in zip(heads, outcomes[3:]):
        assert isinstance(info, ObjectInfo) and head.problem(info) is None
    wrong = dataclasses.replace(endpoints, secret_key="not-the-key")
    outcomes, _ = perform(client, wrong, copies[:1])
    assert texts(outcomes) == ["HttpError: s3 copy: HTTP 403 SignatureDoesNotMatch"]


@SEAWEEDFS
def test_seaweedfs_binds_loopback_only(seaweedfs):
    listens = _listening(seaweedfs.service.proc.pid)
    assert len(listens) >= 5 and all(host == "127.0.0.1" for host, _ in listens), listens


def _listening(pid: int) -> list[tuple[str, int]]:
    """(host, port) of every TCP socket ``pid`` listens on, asked of the kernel (/proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    address, port = fields[1].split(":")
                    host = (socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]) if width == 8
                            else "[" + address + "]")
                    found.append((host, int(port, 16)))
    return found
