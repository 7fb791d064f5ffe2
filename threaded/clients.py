"""The threaded model's real clients: boto3 for S3, urllib3 (or httpx) for the metadata API.

Read it beside ``asyncio_version/clients.py`` (which ``anyio_version/clients.py`` reuses): the
same names in the same order.  One client of each kind serves every worker thread (boto3 clients
and the connection pools are thread-safe), its pool sized by the caller (``s3_pool``/``api_pool``;
None keeps the library's default, 10 connections for boto3).  The libraries' own retries are
off: retries, backoff and faults belong to the shared core (``common/stages.py``).

``perform(call)`` is what the variant's ``_wait_through`` calls for a call description from
``common/calls.py``: it returns the result or raises a ``CallError`` whose text is the same in
every model and library.  ``timeout`` bounds each socket operation (connect, each read), so a
hung call ends after it; None waits for ever - and a thread blocked in a socket read cannot be
woken by anything else, so give one whenever a call may hang.
"""
from __future__ import annotations

import json
import logging
import ssl
import threading
import weakref
from contextlib import ExitStack
from typing import Any, Callable

import boto3
import botocore.exceptions
import httpx2
import urllib3
from botocore.config import Config as S3Config

from pillpipe.common import calls
from pillpipe.common.calls import (ApiGet, ApiPost, Call, CallError, Copied, Endpoints, ObjectInfo,
                                   Posted, Record, Result, S3Copy, S3Head, botocore_options, status_error,
                                   transport_error, user_metadata)

HTTP_CLIENTS = calls.HTTP_CLIENTS["threaded"]  # the metadata API's client library; the first is the default
JSON = {"Content-Type": "application/json"}
TIMEOUTS = (botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectTimeoutError,
            urllib3.exceptions.TimeoutError, httpx2.TimeoutException)  # what each library calls a timeout
LOST = (botocore.exceptions.ConnectionClosedError, urllib3.exceptions.ProtocolError, httpx2.RemoteProtocolError,
        httpx2.ReadError, httpx2.WriteError)  # ... and a connection that went away mid-call
TLS = (botocore.exceptions.SSLError, urllib3.exceptions.SSLError)  # ... and a certificate that did not verify

# More threads than a pool keeps: urllib3 (under boto3 too) opens a connection for each thread that
# finds the pool empty and discards it afterwards, logging a warning each time.  The connections
# opened (``connections()``, the report's timing) show that churn; one line per call on stderr would not.
logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


class Clients:
    """The run's S3 client and API client; a context manager that closes them."""

    choices = HTTP_CLIENTS  # the API client libraries this model offers

    def __init__(self, endpoints: Endpoints, *, s3_pool: int | None = None, api_pool: int | None = None,
                 timeout: float | None = None, http_client: str | None = None) -> None:
        self.endpoints, self.timeout = endpoints, timeout
        self.s3_pool, self.api_pool = s3_pool, api_pool
        self.http_client = http_client or self.choices[0]
        if self.http_client not in self.choices:
            raise ValueError(f"http client must be one of {', '.join(self.choices)} (got {self.http_client})")
        self.libraries = {"s3": "boto3", "api": self.http_client}
        self._stack = ExitStack()
        self._perform: dict[type, Callable[[Any], Result]] = {
            S3Copy: self._copy, ApiPost: self._post, S3Head: self._head, ApiGet: self._get}

    def __enter__(self) -> "Clients":
        e = self.endpoints
        self._s3 = boto3.session.Session().client(
            "s3", endpoint_url=e.s3_url, region_name=e.region, aws_access_key_id=e.access_key,
            aws_secret_access_key=e.secret_key, verify=e.ca_file if e.ca_file else None,
            config=S3Config(**botocore_options(self.s3_pool, self.timeout)))
        self._stack.callback(self._s3.close)
        self._api = _Urllib3(e, self.api_pool, self.timeout) if self.http_client == "urllib3" else \
            _Httpx(e, self.api_pool, self.timeout)
        self._stack.callback(self._api.close)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def perform(self, call: Call) -> Result:
        """Make one call; its result, or a ``CallError`` (never a library's exception)."""
        try:
            return self._perform[type(call)](call)
        except CallError:
            raise
        except Exception as exc:  # noqa: BLE001 - every library failure becomes a CallError
            raise self._error(call, exc) from exc

    def outcome(self, call: Call) -> Result | CallError:
        """``perform``, but a ``CallError`` is returned, not raised: what ``_wait_through`` sends back
        into the stage (which raises it there)."""
        try:
            return self.perform(call)
        except CallError as exc:
            return exc

    def connections(self) -> dict[str, int | None]:
        """Connections each client has opened so far (None where the library does not tell)."""
        return {"s3": _opened(lambda: self._s3._endpoint.http_session._manager), "api": self._api.opened()}

    def _copy(self, call: S3Copy) -> Copied:
        self._s3.copy_object(Bucket=call.bucket, Key=call.key, MetadataDirective="REPLACE",
                             CopySource={"Bucket": call.source_bucket, "Key": call.source_key},
                             Metadata={**call.metadata, **call.hint.metadata()})
        return Copied(call.bucket, call.key)

    def _head(self, call: S3Head) -> ObjectInfo:
        reply = self._s3.head_object(Bucket=call.bucket, Key=call.key)
        return ObjectInfo(reply["ContentLength"], user_metadata(reply.get("Metadata", {})))

    def _post(self, call: ApiPost) -> Posted:
        status, _ = self._api.request("POST", call.path, json.dumps(call.body).encode(), {**JSON, **call.hint.headers()})
        if status not in (200, 201):
            raise status_error(call, status)
        return Posted(call.body.get("id"))

    def _get(self, call: ApiGet) -> Record:
        status, data = self._api.request("GET", call.path, None, {})
        if status != 200:
            raise status_error(call, status)
        return Record(json.loads(data))

    def _error(self, call: Call, exc: Exception) -> CallError:
        if isinstance(exc, botocore.exceptions.ClientError):
            error = exc.response.get("Error", {})
            return status_error(call, exc.response["ResponseMetadata"]["HTTPStatusCode"], error.get("Code"))
        return transport_error(call, exc, self.timeout, TIMEOUTS, LOST, TLS)


def open_clients(endpoints: Endpoints, *, s3_pool: int | None = None, api_pool: int | None = None,
                 timeout: float | None = None, http_client: str | None = None) -> Clients:
    """``with open_clients(endpoints, s3_pool=..., api_pool=..., timeout=...) as clients:``"""
    return Clients(endpoints, s3_pool=s3_pool, api_pool=api_pool, timeout=timeout, http_client=http_client)


# The pieces ---------------------------------------------------------------------------------
def _ssl_context(endpoints: Endpoints) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=endpoints.ca_file) if endpoints.ca_file else None


def _opened(manager: Callable[[], Any]) -> int | None:
    """Connections a urllib3 ``PoolManager`` has opened (``num_connections`` of each host's pool);
    None if the library's insides moved (boto3 keeps its manager in private attributes)."""
    try:
        pools = manager().pools
        opened: int = sum(pools[key].num_connections for key in pools.keys())
        return opened
    except (AttributeError, KeyError, TypeError):
        return None


class _Urllib3:
    """The default API client for threads: urllib3, the library under boto3 (no retries of its own)."""

    def __init__(self, endpoints: Endpoints, pool: int | None, timeout: float | None) -> None:
        self._base = endpoints.api_url
        options: dict[str, Any] = {"retries": False, "timeout": urllib3.Timeout(connect=timeout, read=timeout)}
        if pool is not None:
            options["maxsize"] = pool
        if endpoints.ca_file:
            options["ca_certs"] = endpoints.ca_file
        self._http = urllib3.PoolManager(**options)

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        reply = self._http.request(method, self._base + path, body=body, headers=headers)
        return reply.status, reply.data

    def opened(self) -> int | None:
        return _opened(lambda: self._http)

    def close(self) -> None:
        self._http.clear()


class _Httpx:
    """The same-library control: httpx's API (``httpx2``, the maintained fork), sync."""

    def __init__(self, endpoints: Endpoints, pool: int | None, timeout: float | None) -> None:
        limits = httpx2.Limits(max_connections=pool, max_keepalive_connections=pool) if pool else httpx2.Limits()
        self._http = httpx2.Client(base_url=endpoints.api_url, timeout=httpx2.Timeout(timeout, pool=None),
                                  limits=limits, verify=_ssl_context(endpoints) or True, trust_env=False)
        self._streams: weakref.WeakSet[Any] = weakref.WeakSet()
        self._opened, self._lock = 0, threading.Lock()

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        reply = self._http.request(method, path, content=body, headers=headers)
        stream = reply.extensions.get("network_stream")
        if stream is not None and stream not in self._streams:  # a connection not seen before
            with self._lock:
                if stream not in self._streams:
                    self._streams.add(stream)
                    self._opened += 1
        return reply.status_code, reply.content

    def opened(self) -> int | None:
        return self._opened

    def close(self) -> None:
        self._http.close()
