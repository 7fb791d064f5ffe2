"""The anyio model's real clients: the asyncio model's code, on httpx only.

aiobotocore (S3) on its httpx session and httpx (the metadata API, ``httpx2``, the maintained fork
aiobotocore prefers) run on either anyio backend, asyncio or trio; aiohttp, the asyncio model's
default, is asyncio-only.  So this model keeps no client code of its own: its ``Clients`` is
``asyncio_version.clients.Clients`` offering httpx alone, and the asyncio model runs the very same
pair with ``http_client="httpx"`` - a difference between the two models is not a difference between
libraries or client code.  The names are the other models' (``threaded/clients.py``), in order.
"""
from __future__ import annotations

from pillpipe.asyncio_version import clients as asyncio_clients
from pillpipe.common import calls
from pillpipe.common.calls import Endpoints

HTTP_CLIENTS = calls.HTTP_CLIENTS["anyio"]  # the metadata API's client library; the first is the default
JSON = asyncio_clients.JSON
TIMEOUTS = asyncio_clients.TIMEOUTS  # what each library calls a timeout (aiohttp's are never raised here)
LOST = asyncio_clients.LOST  # ... a connection gone mid-call
TLS = asyncio_clients.TLS  # ... and a certificate that did not verify


class Clients(asyncio_clients.Clients):
    """The run's S3 client and API client on httpx; an async context manager that closes them."""

    choices = HTTP_CLIENTS


def open_clients(endpoints: Endpoints, *, s3_pool: int | None = None, api_pool: int | None = None,
                 timeout: float | None = None, http_client: str | None = None) -> Clients:
    """``async with open_clients(endpoints, s3_pool=..., api_pool=..., timeout=...) as clients:``"""
    return Clients(endpoints, s3_pool=s3_pool, api_pool=api_pool, timeout=timeout, http_client=http_client)
