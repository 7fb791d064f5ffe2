"""The asyncio model's real clients: aiobotocore for S3, aiohttp (or httpx) for the metadata API.

Read it beside ``threaded/clients.py``: the same names in the same order.  The anyio model
uses this code too, on httpx (``anyio_version/clients.py``).  One client of each kind serves every worker task, its pool sized by the caller
(``s3_pool``/``api_pool``; None keeps the library's default: 10 for aiobotocore, 100 for
aiohttp).  The libraries' own retries are off: retries, backoff and faults belong to the shared
core (``common/stages.py``).

``await perform(call)`` is what the variant's ``_wait_through`` calls for a call description from
``common/calls.py``: it returns the result or raises a ``CallError`` whose text is the same in
every model and library.  ``timeout`` bounds each socket operation (connect, each read), so a
hung call ends after it; a cancelled task cancels its call at once whatever the timeout.

``http_client="httpx"`` is the same-library control: httpx's API (``httpx2``, the maintained
fork) for the metadata API and aiobotocore's httpx session for S3, so a difference between
models is not a difference between libraries.
"""
from __future__ import annotations

import json
import socket
import ssl
import weakref
from contextlib import AsyncExitStack
from typing import Any, Awaitable, Callable

import aiohttp
import botocore.exceptions
import httpx2
from aiobotocore.config import AioConfig
from aiobotocore.httpxsession import HttpxSession
from aiobotocore.session import get_session

from pillpipe.common import calls
from pillpipe.common.calls import (ApiGet, ApiPost, Call, CallError, Copied, Endpoints, ObjectInfo,
                                   Posted, Record, Result, S3Copy, S3Head, botocore_options, status_error,
                                   transport_error, user_metadata)

HTTP_CLIENTS = calls.HTTP_CLIENTS["asyncio"]  # the metadata API's client library; the first is the default
JSON = {"Content-Type": "application/json"}
TIMEOUTS = (botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectTimeoutError,
            aiohttp.ServerTimeoutError, httpx2.TimeoutException)  # what each library calls a timeout
LOST = (botocore.exceptions.ConnectionClosedError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
        httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.WriteError)  # ... a connection gone mid-call
TLS = (botocore.exceptions.SSLError, aiohttp.ClientSSLError)  # ... and a certificate that did not verify


class Clients:
    """The run's S3 client and API client; an async context manager that closes them."""

    choices = HTTP_CLIENTS  # the API client libraries this model offers (the anyio model's subclass: httpx)

    def __init__(self, endpoints: Endpoints, *, s3_pool: int | None = None, api_pool: int | None = None,
                 timeout: float | None = None, http_client: str | None = None) -> None:
        self.endpoints, self.timeout = endpoints, timeout
        self.s3_pool, self.api_pool = s3_pool, api_pool
        self.http_client = http_client or self.choices[0]
        if self.http_client not in self.choices:
            raise ValueError(f"http client must be one of {', '.join(self.choices)} (got {self.http_client})")
        self.libraries = {"s3": f"aiobotocore+{self.http_client}", "api": self.http_client}
        self._stack = AsyncExitStack()
        self._perform: dict[type, Callable[[Any], Awaitable[Result]]] = {
            S3Copy: self._copy, ApiPost: self._post, S3Head: self._head, ApiGet: self._get}

    async def __aenter__(self) -> "Clients":
        e = self.endpoints
        self._s3_sockets = _Counter()
        if self.http_client == "aiohttp":
            session_options: dict[str, Any] = {"connector_args": {"socket_factory": self._s3_sockets.socket}}
        else:
            session_options = {"http_session_cls": HttpxSession}
        self._s3 = await self._stack.enter_async_context(get_session().create_client(
            "s3", endpoint_url=e.s3_url, region_name=e.region, aws_access_key_id=e.access_key,
            aws_secret_access_key=e.secret_key, verify=e.ca_file if e.ca_file else None,
            config=AioConfig(**botocore_options(self.s3_pool, self.timeout), **session_options)))
        self._api = _Aiohttp(e, self.api_pool, self.timeout) if self.http_client == "aiohttp" else \
            _Httpx(e, self.api_pool, self.timeout)
        self._stack.push_async_callback(self._api.close)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def perform(self, call: Call) -> Result:
        """Make one call; its result, or a ``CallError`` (never a library's exception)."""
        try:
            return await self._perform[type(call)](call)
        except CallError:
            raise
        except Exception as exc:  # noqa: BLE001 - every library failure becomes a CallError
            raise self._error(call, exc) from exc

    async def outcome(self, call: Call) -> Result | CallError:
        """``perform``, but a ``CallError`` is returned, not raised: what ``_wait_through`` sends back
        into the stage (which raises it there)."""
        try:
            return await self.perform(call)
        except CallError as exc:
            return exc

    def connections(self) -> dict[str, int | None]:
        """Connections each client has opened so far (None where the library does not tell)."""
        return {"s3": self._s3_sockets.opened if self.http_client == "aiohttp" else None, "api": self._api.opened()}

    async def _copy(self, call: S3Copy) -> Copied:
        await self._s3.copy_object(Bucket=call.bucket, Key=call.key, MetadataDirective="REPLACE",
                                   CopySource={"Bucket": call.source_bucket, "Key": call.source_key},
                                   Metadata={**call.metadata, **call.hint.metadata()})
        return Copied(call.bucket, call.key)

    async def _head(self, call: S3Head) -> ObjectInfo:
        reply = await self._s3.head_object(Bucket=call.bucket, Key=call.key)
        return ObjectInfo(reply["ContentLength"], user_metadata(reply.get("Metadata", {})))

    async def _post(self, call: ApiPost) -> Posted:
        status, _ = await self._api.request("POST", call.path, json.dumps(call.body).encode(),
                                            {**JSON, **call.hint.headers()})
        if status not in (200, 201):
            raise status_error(call, status)
        return Posted(call.body.get("id"))

    async def _get(self, call: ApiGet) -> Record:
        status, data = await self._api.request("GET", call.path, None, {})
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
    """``async with open_clients(endpoints, s3_pool=..., api_pool=..., timeout=...) as clients:``"""
    return Clients(endpoints, s3_pool=s3_pool, api_pool=api_pool, timeout=timeout, http_client=http_client)


# The pieces ---------------------------------------------------------------------------------
def _ssl_context(endpoints: Endpoints) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=endpoints.ca_file) if endpoints.ca_file else None


class _Counter:
    """aiohttp's ``socket_factory``: makes each connection's socket, and counts them."""

    def __init__(self) -> None:
        self.opened = 0

    def socket(self, addr_info: Any) -> socket.socket:
        family, type_, proto, _, _ = addr_info
        self.opened += 1
        return socket.socket(family=family, type=type_, proto=proto)


class _Aiohttp:
    """The default API client for asyncio: aiohttp (no retries of its own)."""

    def __init__(self, endpoints: Endpoints, pool: int | None, timeout: float | None) -> None:
        self._sockets = _Counter()
        connector = aiohttp.TCPConnector(limit=pool if pool is not None else 100, ssl=_ssl_context(endpoints) or True,
                                         socket_factory=self._sockets.socket)
        self._http = aiohttp.ClientSession(endpoints.api_url, connector=connector,
                                           timeout=aiohttp.ClientTimeout(sock_connect=timeout, sock_read=timeout))

    async def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        async with self._http.request(method, path, data=body, headers=headers) as reply:
            return reply.status, await reply.read()

    def opened(self) -> int | None:
        return self._sockets.opened

    async def close(self) -> None:
        await self._http.close()


class _Httpx:
    """The same-library control: httpx's API (``httpx2``, the maintained fork), async."""

    def __init__(self, endpoints: Endpoints, pool: int | None, timeout: float | None) -> None:
        limits = httpx2.Limits(max_connections=pool, max_keepalive_connections=pool) if pool else httpx2.Limits()
        self._http = httpx2.AsyncClient(base_url=endpoints.api_url, timeout=httpx2.Timeout(timeout, pool=None),
                                        limits=limits, verify=_ssl_context(endpoints) or True, trust_env=False)
        self._streams: weakref.WeakSet[Any] = weakref.WeakSet()
        self._opened = 0

    async def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        reply = await self._http.request(method, path, content=body, headers=headers)
        stream = reply.extensions.get("network_stream")
        if stream is not None and stream not in self._streams:  # a connection not seen before
            self._streams.add(stream)
            self._opened += 1
        return reply.status_code, reply.content

    def opened(self) -> int | None:
        return self._opened

    async def close(self) -> None:
        await self._http.aclose()
