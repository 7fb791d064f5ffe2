"""Real I/O's pieces below the clients: the call descriptions and hints (pure), our services as real
processes (hints honoured, stopped by PID, never orphaned), ``pillpipe serve``, SeaweedFS."""
from __future__ import annotations

import errno
import itertools
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest

from pillpipe.common import calls
from pillpipe.common.calls import (DELAY_HEADER, FAULT_HEADER, HANG, INJECTED, TRANSIENT, UNAVAILABLE, ApiGet,
                                   ApiPost, CallTimeout, ConnectionFailed, ConnectionLost, ConnectionRefused, Hint,
                                   HttpError, ObjectInfo, Record, S3Copy, S3Head, ServiceUnavailable, TlsError)
from pillpipe.common.faults import FaultPlan
from pillpipe.common.model import FileRecord, Stage, Status
from pillpipe.common.stages import HANG as SIM_HANG, StagePlan, api_upload, s3_copy
from pillpipe.common.workload import DEST_BUCKET, SOURCE_BUCKET, Workload, dest_key, generate_files
from pillpipe.services.embedded import EmbeddedServices, fetch_stats
from pillpipe.services.process import free_port, listening

pytestmark = pytest.mark.timeout(60)


# The calls and hints: pure ---------------------------------------------------------------------
FAULTS = FaultPlan.parse(["s3:id=3:raise:times=2", "api:id=4:hang", "s3:id=5:slow=3", "api:id=6:raise"])


@pytest.mark.parametrize("fail_rate", [0.0, 0.3, 1.0])
def test_hints_carry_exactly_the_simulated_workload(fail_rate):
    """For every file and stage, over three attempts, the simulated stage waits and fails exactly as
    the hints ask the server to (the stage logic is built on ``hint_for``: one source), and a 503
    answered for a hint reads exactly as the simulation's error."""
    workload = Workload(seed=7, time_scale=0.5, fail_rate=fail_rate)
    plan = StagePlan(workload, FAULTS, retries=2)
    for file_id, stage in itertools.product(range(1, 9), (Stage.S3, Stage.API)):
        record = FileRecord(file_id, f"file_{file_id}.pdf", status=Status.READY if stage is Stage.S3 else
                            Status.S3_COPIED)
        it = (s3_copy if stage is Stage.S3 else api_upload)(record, plan, "worker")
        waits = [next(it)] if FAULTS.for_attempt(stage, file_id, 1) and \
            FAULTS.for_attempt(stage, file_id, 1).kind == "hang" else list(it)
        expected, error = [], None
        for attempt in (1, 2, 3):
            hint = calls.hint_for(workload, FAULTS, stage, file_id, attempt)
            if hint.fault == HANG:
                expected.append(SIM_HANG)
                break
            expected += [hint.delay] if hint.delay else []
            if hint.fault != UNAVAILABLE:
                error = None
                break
            error = str(calls.status_error(S3Copy("b", "k", "b", "k", {}, hint) if stage is Stage.S3 else
                                           ApiPost({}, hint), 503))  # the client's 503, in the simulation's words
        assert waits == pytest.approx(expected), (file_id, stage)
        if expected[-1] != SIM_HANG:
            assert record.error == error and (record.status is Status.FAILED) == (error is not None)


def test_hints_round_trip_through_headers_and_metadata():
    for hint in (Hint(), Hint(0.25), Hint(1.5, UNAVAILABLE, INJECTED), Hint(0.0, UNAVAILABLE, TRANSIENT),
                 Hint(0.0, HANG)):
        headers, metadata = hint.headers(), hint.metadata()
        assert Hint.parse(headers.get, DELAY_HEADER, FAULT_HEADER) == hint
        assert Hint.parse(metadata.get, calls.DELAY_KEY, calls.FAULT_KEY) == hint
        assert all(key.startswith(calls.HINT_PREFIX) for key in metadata)
    for bad in ({DELAY_HEADER: "soon"}, {DELAY_HEADER: "-1"}, {DELAY_HEADER: "inf"}, {FAULT_HEADER: "explode"},
                {FAULT_HEADER: "unavailable"}, {FAULT_HEADER: "hang:later"}):
        with pytest.raises(ValueError, match="X-Pillpipe-Hint"):
            Hint.parse(bad.get, DELAY_HEADER, FAULT_HEADER)


def test_calls_for_a_record_name_its_keys_metadata_and_checks():
    workload = Workload(seed=3)
    record = next(generate_files(1))
    copy = calls.copy_call(record, workload, FaultPlan(), 1)
    assert (copy.source_bucket, copy.source_key, copy.bucket) == (SOURCE_BUCKET, "file_100.pdf", DEST_BUCKET)
    assert copy.key == dest_key(3, "file_100.pdf") and copy.hint.delay > 0
    assert calls.copy_call(record, workload, FaultPlan(), 1, hints=False).hint == calls.NO_HINT
    record.dest_key = copy.key
    post = calls.post_call(record, workload, FaultPlan(), 1)
    assert post.body == {"id": 1, "name": "file_100.pdf", "bucket": DEST_BUCKET, "key": copy.key,
                         "size": calls.source_size(1)}
    head, get = calls.verify_calls(record, 3)
    assert head.problem(ObjectInfo(calls.source_size(1), dict(copy.metadata))) is None
    assert head.problem(ObjectInfo(1, dict(copy.metadata))) == f"s3 head: size 1, expected {calls.source_size(1)}"
    assert "pillpipe-file-id" in head.problem(ObjectInfo(calls.source_size(1), {}))
    assert get.problem(Record(dict(post.body))) is None
    assert get.problem(Record({**post.body, "key": "other"})) is not None


def test_a_name_that_is_not_ascii_travels_as_metadata():
    record = FileRecord(9, "résumé 1.pdf")
    metadata = calls.object_metadata(record)
    assert all(value.isascii() for value in metadata.values())
    assert calls.source_body("k", 10) == b"k\nk\nk\nk\nk\n" and len(calls.source_body("x" * 50, 7)) == 7


def test_error_texts_are_a_small_deterministic_vocabulary():
    head, post = S3Head("b", "k"), ApiPost({"id": 1})
    assert str(calls.status_error(head, 404, "404")) == "s3 head: HTTP 404 NotFound"
    assert str(calls.status_error(S3Copy("b", "k", "b", "k", {}), 404, "NoSuchKey")) == "s3 copy: HTTP 404 NoSuchKey"
    assert isinstance(calls.status_error(post, 503), ServiceUnavailable)
    assert str(calls.status_error(post, 503)) == "api post: HTTP 503 ServiceUnavailable"
    assert isinstance(calls.status_error(post, 400), HttpError)
    assert str(calls.timeout_error(post, 2.5)) == "timeout after 2.5s"
    assert str(calls.connection_error(post, ConnectionRefused)) == "api post: connection refused"


def _wrapped(inner: BaseException) -> Exception:
    """A library-style wrapper: the OS error only in the cause chain."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise RuntimeError("library words, port 54321, request id abc") from exc
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize("inner, kind", [
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), ConnectionRefused),
    (OSError(errno.ECONNREFUSED, "refused"), ConnectionRefused),
    (ConnectionResetError(errno.ECONNRESET, "reset"), ConnectionLost),
    (OSError(errno.EPIPE, "pipe"), ConnectionLost),
    (TimeoutError("timed out"), CallTimeout),
    (ssl.SSLCertVerificationError("certificate verify failed"), TlsError),
    (ValueError("something else"), ConnectionFailed),
])
def test_transport_errors_are_classified_by_their_cause_chain(inner, kind):
    assert calls.transport_class(_wrapped(inner)) is kind
    error = calls.transport_error(ApiGet("/records/1"), _wrapped(inner), 3.0)
    assert type(error) is kind
    assert "54321" not in str(error) and "abc" not in str(error)


def test_a_library_class_decides_only_when_the_chain_says_nothing():
    class LibraryTimeout(Exception):
        pass

    plain = LibraryTimeout("read timed out")
    assert type(calls.transport_error(ApiGet("/r"), plain, 1.0, timeouts=(LibraryTimeout,))) is CallTimeout
    refused = _wrapped(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert type(calls.transport_error(ApiGet("/r"), refused, 1.0, timeouts=(RuntimeError,))) is ConnectionRefused


def test_endpoints_never_show_their_credentials():
    endpoints = calls.Endpoints("http://127.0.0.1:1", "http://127.0.0.1:2", access_key="AKIDUMMY", secret_key="s3cr3t")
    assert "AKIDUMMY" not in repr(endpoints) and "s3cr3t" not in repr(endpoints) and "s3cr3t" not in str(endpoints)


# Our services, as real processes -----------------------------------------------------------------
def _request(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None,
             timeout: float = 10.0, context: ssl.SSLContext | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture(scope="module")
def services():
    with EmbeddedServices(objects=5) as running:
        yield running


def test_services_bind_loopback_on_their_ports_and_stop_by_pid():
    services = EmbeddedServices(objects=1).start()
    endpoints = services.endpoints
    ports = [int(url.rsplit(":", 1)[1]) for url in (endpoints.s3_url, endpoints.api_url)]
    pids = [services.s3.proc.pid, services.api.proc.pid]
    try:
        assert all(url.startswith("http://127.0.0.1:") for url in (endpoints.s3_url, endpoints.api_url))
        assert all(listening(port) for port in ports)
        assert os.getsid(pids[0]) == pids[0] and os.getsid(pids[1]) == pids[1]  # own sessions: Ctrl-C is not theirs
    finally:
        services.stop()
    assert [services.s3.proc.returncode, services.api.proc.returncode] == [0, 0]  # SIGTERM, not SIGKILL
    assert not any(listening(port) for port in ports)


def test_the_source_bucket_holds_the_generated_files(services):
    s3 = services.endpoints.s3_url
    for file_id, (key, size) in enumerate(calls.source_objects(5), start=1):
        status, headers, body = _request(f"{s3}/{SOURCE_BUCKET}/{key}")
        assert (status, int(headers["Content-Length"]), body) == (200, size, calls.source_body(key, size))
    assert _request(f"{s3}/{SOURCE_BUCKET}/file_105.pdf", "HEAD")[0] == 404  # only five
    assert _request(f"{s3}/no-such-bucket/file_100.pdf")[0] == 404


def test_records_of_an_input_file_are_seeded_with_their_names_and_sizes(services):
    record = FileRecord(77, "reports/ä 2024.pdf", size=12345)
    assert services.seed([(record.name, calls.expected_size(record))]) == 1
    status, headers, body = _request(f"{services.endpoints.s3_url}/{SOURCE_BUCKET}/{quote(record.name)}")
    assert (status, int(headers["Content-Length"])) == (200, 12345)
    assert body == calls.source_body(record.name, 12345)


def test_the_api_stores_and_returns_records(services):
    api = services.endpoints.api_url
    record = {"id": 41, "name": "file_140.pdf", "key": "k"}
    assert _request(api + "/records", "POST", json.dumps(record).encode())[0] == 201
    assert _request(api + "/records", "POST", json.dumps(record).encode())[0] == 201  # an upsert
    status, _, body = _request(api + "/records/41")
    assert (status, json.loads(body)) == (200, record)
    assert _request(api + "/records/42")[0] == 404
    assert _request(api + "/records", "POST", b"not json")[0] == 400


def test_hints_are_honoured_server_side(services):
    api = services.endpoints.api_url
    started = time.monotonic()
    status, _, _ = _request(api + "/records", "POST", b'{"id": 1}', Hint(0.3).headers())
    assert status == 201 and time.monotonic() - started >= 0.3  # the latency is slept by the server
    status, _, body = _request(api + "/records", "POST", b'{"id": 2}', Hint(0.0, UNAVAILABLE, TRANSIENT).headers())
    assert status == 503 and json.loads(body)["message"] == "transient api error"
    assert _request(api + "/records/2")[0] == 404  # a 503 stored nothing
    status, _, body = _request(api + "/records", "POST", b'{"id": 3}', {FAULT_HEADER: "explode"})
    assert status == 400 and b"X-Pillpipe-Hint-Fault" in body
    before = fetch_stats(api)["hung"]
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        _request(api + "/records", "POST", b'{"id": 4}', Hint(0.0, HANG).headers(), timeout=0.5)
    assert fetch_stats(api)["hung"] == before + 1
    assert _request(api + "/records/4")[0] == 404


def test_stats_count_requests_by_status_and_connections(services):
    api = services.endpoints.api_url
    before = fetch_stats(api)
    for _ in range(3):
        _request(api + "/records/999")
    after = fetch_stats(api)
    assert after["requests"] - before["requests"] == 3
    assert after["statuses"].get("404", 0) - before["statuses"].get("404", 0) == 3
    assert after["connections"] - before["connections"] == 4  # urllib opens one per request (+ the stats call)


SPAWN = """
import sys, time
from pillpipe.services.embedded import EmbeddedServices
services = EmbeddedServices().start()
print(services.s3.proc.pid, services.api.proc.pid, flush=True)
time.sleep(60)
"""


def test_services_exit_when_whoever_started_them_dies():
    """A launcher killed without a chance to stop them (SIGKILL) leaves no server behind."""
    launcher = subprocess.Popen([sys.executable, "-c", SPAWN], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(pid) for pid in launcher.stdout.readline().split()]
        assert len(pids) == 2
    finally:
        launcher.kill()
        launcher.wait(10)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_tls_with_a_certificate_made_now():
    with EmbeddedServices(objects=1, tls=True) as services:
        endpoints = services.endpoints
        assert endpoints.s3_url.startswith("https://127.0.0.1:") and endpoints.ca_file
        trusted = ssl.create_default_context(cafile=endpoints.ca_file)
        assert _request(f"{endpoints.s3_url}/{SOURCE_BUCKET}/file_100.pdf", "HEAD", context=trusted)[0] == 200
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            _request(endpoints.api_url + "/records/1", context=ssl.create_default_context())
        ca_file = endpoints.ca_file
    assert not os.path.exists(ca_file)  # the run's CA goes with the run


# pillpipe serve ------------------------------------------------------------------------------------
def test_serve_prints_its_urls_and_stops_on_ctrl_c():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pillpipe", "serve", "--objects", "2", "--api-port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline().split() for _ in range(2)]
        assert [line[0] for line in lines] == ["s3", "api"]
        s3, api = lines[0][1], lines[1][1]
        assert api == f"http://127.0.0.1:{port}"
        assert _request(f"{s3}/{SOURCE_BUCKET}/file_101.pdf", "HEAD")[0] == 200
        assert _request(api + "/records/1")[0] == 404
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    out = proc.stdout.read() + proc.stderr.read()
    assert "Traceback" not in out and "secret" not in out.lower()
    s3_port = int(s3.rsplit(":", 1)[1])
    assert not listening(port) and not listening(s3_port)


@pytest.mark.parametrize("args, message", [
    (["--objects", "-1"], "--objects must be >= 0"),
    (["--s3-port", "http"], "not a port"),
    (["--nonsense"], "unrecognized arguments"),
])
def test_serve_bad_input_is_one_line_and_exit_2(args, message):
    result = subprocess.run([sys.executable, "-m", "pillpipe", "serve", *args], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_serve_says_when_its_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "pillpipe", "serve", "--s3-port", str(port)],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "s3" in result.stderr and "Traceback" not in result.stderr
