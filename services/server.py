"""The embedded services on aiohttp.web: a small S3-compatible API and the metadata API.

Run one per process (``python -m pillpipe.services.server s3|api --port P``), never inside the
pipeline's process: they must not share its GIL or its event loop.  Both honour the request hints
of ``common/calls.py``: sleep the hinted delay, then answer 503 for an ``unavailable`` hint, or
never answer a ``hang`` (the handler waits until the client gives up and disconnects).

The S3 subset is what the pipeline and the seeding use, path-style: CreateBucket, HeadBucket,
PutObject, CopyObject, HeadObject, GetObject.  Signatures are not checked (any credentials do);
the server binds 127.0.0.1 only.  The source bucket holds the ``--objects N`` generated files
without storing them: their content is a pure function of the key (``calls.source_body``), so
seeding a million files costs nothing.

Both count the requests they answer (by status) and the connections they accept, and report
them at ``GET /_pillpipe/stats`` - the one connection count that does not depend on what a
client library lets you see.
"""
from __future__ import annotations

import argparse
import asyncio
import email.utils
import hashlib
import os
import re
import signal
import ssl
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Sequence
from urllib.parse import unquote
from xml.sax.saxutils import escape

from aiohttp import web
from aiohttp.typedefs import Middleware

from pillpipe.common.calls import (DELAY_HEADER, DELAY_KEY, FAULT_HEADER, FAULT_KEY, HANG, HINT_PREFIX, INJECTED,
                                   RECORDS_PATH, STATS_PATH, UNAVAILABLE, Hint, source_body, source_size)
from pillpipe.common.workload import DEST_BUCKET, FIRST_NAME_NUMBER, SOURCE_BUCKET

LOOPBACK = "127.0.0.1"
META = "x-amz-meta-"
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_GENERATED = re.compile(r"file_(\d+)\.pdf")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Stats:
    requests: int = 0
    connections: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    hung: int = 0

    def to_dict(self, **extra: int) -> dict[str, object]:
        return {"requests": self.requests, "connections": self.connections, "hung": self.hung,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}, **extra}


# Hints, shared by both services --------------------------------------------------------------
def hints(stats: Stats, service: str, read: Callable[[web.Request], Hint],
          failure: Callable[[int, str, str], web.Response]) -> Middleware:
    """Middleware: count, sleep the hinted delay, then 503 / hang / the handler."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == STATS_PATH:
            return await handler(request)
        stats.requests += 1
        try:
            hint = read(request)
        except ValueError as exc:
            response: web.StreamResponse = failure(400, "InvalidArgument", str(exc))
        else:
            if hint.delay:
                await asyncio.sleep(hint.delay)
            if hint.fault == HANG:
                stats.hung += 1
                await asyncio.Event().wait()  # until the client disconnects (the handler is cancelled then)
            if hint.fault == UNAVAILABLE:
                response = failure(503, "ServiceUnavailable", f"{hint.reason or INJECTED} {service} error")
            else:
                response = await handler(request)
        stats.statuses[response.status] += 1
        return response

    return middleware


def _s3_hint(request: web.Request) -> Hint:
    return Hint.parse(request.headers.get, META + DELAY_KEY, META + FAULT_KEY)


def _api_hint(request: web.Request) -> Hint:
    return Hint.parse(request.headers.get, DELAY_HEADER, FAULT_HEADER)


# The S3 subset -----------------------------------------------------------------------------
@dataclass(slots=True)
class Obj:
    size: int
    etag: str
    metadata: dict[str, str]
    modified: float
    body: bytes | None = None  # None: generated content, a pure function of ``origin``
    origin: str = ""


def _etag(body: bytes) -> str:
    return '"' + hashlib.md5(body, usedforsecurity=False).hexdigest() + '"'


class Store:
    """Buckets in memory; the source bucket's generated files exist without being stored."""

    def __init__(self, objects: int, buckets: Sequence[str]) -> None:
        self.generated = objects
        self.buckets: dict[str, dict[str, Obj]] = {name: {} for name in buckets}

    def get(self, bucket: str, key: str) -> Obj | None:
        obj = self.buckets[bucket].get(key)
        if obj is None and bucket == SOURCE_BUCKET and self.generated:
            match = _GENERATED.fullmatch(key)
            if match and 1 <= int(match[1]) - FIRST_NAME_NUMBER + 1 <= self.generated:
                size = source_size(int(match[1]) - FIRST_NAME_NUMBER + 1)
                obj = Obj(size, _etag(source_body(key, size)), {}, 0.0, None, key)
        return obj

    def body(self, obj: Obj) -> bytes:
        return obj.body if obj.body is not None else source_body(obj.origin, obj.size)

    def count(self) -> int:
        return self.generated + sum(len(objects) for objects in self.buckets.values())


def _s3_error(status: int, code: str, message: str, resource: str = "") -> web.Response:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{escape(message)}</Message>'
            f"<Resource>{escape(resource)}</Resource></Error>")
    return web.Response(status=status, body=body.encode(), content_type="application/xml")


def _user_metadata(request: web.Request) -> dict[str, str]:
    return {k[len(META):].lower(): v for k, v in request.headers.items()
            if k.lower().startswith(META) and not k[len(META):].lower().startswith(HINT_PREFIX)}


def _object_headers(obj: Obj) -> dict[str, str]:
    headers = {"ETag": obj.etag, "Last-Modified": email.utils.formatdate(obj.modified or time.time(), usegmt=True)}
    headers.update({META + k: v for k, v in obj.metadata.items()})
    return headers


def s3_app(objects: int = 0, buckets: Sequence[str] = (SOURCE_BUCKET, DEST_BUCKET)) -> web.Application:
    stats, store = Stats(), Store(objects, buckets)

    async def bucket(request: web.Request) -> web.StreamResponse:
        name = request.match_info["bucket"]
        if request.method == "PUT":
            store.buckets.setdefault(name, {})
            return web.Response(headers={"Location": f"/{name}"})
        if request.method == "HEAD":
            return web.Response(status=200 if name in store.buckets else 404)
        return _s3_error(501, "NotImplemented", f"{request.method} on a bucket is not in this subset", f"/{name}")

    async def obj(request: web.Request) -> web.StreamResponse:
        name, key = request.match_info["bucket"], request.match_info["key"]
        resource = f"/{name}/{key}"
        if name not in store.buckets:
            return _s3_error(404, "NoSuchBucket", "The specified bucket does not exist", resource)
        if request.method == "PUT":
            source = request.headers.get("x-amz-copy-source")
            return await (_copy(request, name, key, source) if source else _put(request, name, key))
        found = store.get(name, key)
        if found is None:
            if request.method == "HEAD":
                return web.Response(status=404)
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.", resource)
        if request.method == "HEAD":
            response = web.StreamResponse(headers=_object_headers(found))
            response.content_length = found.size  # the object's, though a HEAD sends no body
            await response.prepare(request)
            return response
        if request.method == "GET":
            return web.Response(body=store.body(found), headers=_object_headers(found),
                                content_type="application/octet-stream")
        return _s3_error(501, "NotImplemented", f"{request.method} on an object is not in this subset", resource)

    async def _put(request: web.Request, name: str, key: str) -> web.Response:
        body = await request.read()
        store.buckets[name][key] = Obj(len(body), _etag(body), _user_metadata(request), time.time(), body)
        return web.Response(headers={"ETag": store.buckets[name][key].etag})

    async def _copy(request: web.Request, name: str, key: str, source: str) -> web.Response:
        source_bucket, _, source_key = unquote(source.split("?", 1)[0]).lstrip("/").partition("/")
        if source_bucket not in store.buckets:
            return _s3_error(404, "NoSuchBucket", "The specified bucket does not exist", f"/{source_bucket}")
        found = store.get(source_bucket, source_key)
        if found is None:
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.", f"/{source_bucket}/{source_key}")
        replace = request.headers.get("x-amz-metadata-directive", "COPY").upper() == "REPLACE"
        metadata = _user_metadata(request) if replace else dict(found.metadata)
        copied = Obj(found.size, found.etag, metadata, time.time(), found.body, found.origin)
        store.buckets[name][key] = copied
        modified = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(copied.modified))
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<CopyObjectResult xmlns="{S3_NS}">'
                f"<LastModified>{modified}</LastModified><ETag>{escape(copied.etag)}</ETag></CopyObjectResult>")
        return web.Response(body=body.encode(), content_type="application/xml")

    async def stats_view(request: web.Request) -> web.Response:
        return web.json_response(stats.to_dict(objects=store.count()))

    app = web.Application(middlewares=[hints(stats, "s3", _s3_hint, _s3_error)], client_max_size=64 * 2**20)
    app.router.add_get(STATS_PATH, stats_view)
    app.router.add_route("*", "/{bucket}", bucket)
    app.router.add_route("*", "/{bucket}/", bucket)
    app.router.add_route("*", "/{bucket}/{key:.+}", obj)
    app["stats"] = stats
    return app


# The metadata API ----------------------------------------------------------------------------
def _api_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


def api_app() -> web.Application:
    stats, records = Stats(), {}

    async def post(request: web.Request) -> web.Response:
        try:
            record = await request.json()
        except ValueError:
            return _api_error(400, "BadRequest", "the body is not JSON")
        if not isinstance(record, dict) or not isinstance(record.get("id"), (int, str)):
            return _api_error(400, "BadRequest", "the body needs an id")
        records[str(record["id"])] = record  # an upsert: a retried post is harmless
        return web.json_response({"id": record["id"]}, status=201)

    async def get(request: web.Request) -> web.Response:
        record = records.get(request.match_info["id"])
        if record is None:
            return _api_error(404, "NotFound", "no such record")
        return web.json_response(record)

    async def stats_view(request: web.Request) -> web.Response:
        return web.json_response(stats.to_dict(records=len(records)))

    app = web.Application(middlewares=[hints(stats, "api", _api_hint, _api_error)])
    app.router.add_get(STATS_PATH, stats_view)
    app.router.add_post(RECORDS_PATH, post)
    app.router.add_get(RECORDS_PATH + "/{id}", get)
    app["stats"] = stats
    return app


# One service per process -------------------------------------------------------------------
async def serve(app: web.Application, port: int, ssl_context: ssl.SSLContext | None, parent: int | None) -> None:
    """Serve ``app`` on 127.0.0.1:``port`` until SIGTERM/SIGINT, or until the parent process is gone."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    stats: Stats = app["stats"]
    protocols = runner.server  # aiohttp's low-level server is the protocol factory: one call per connection
    assert protocols is not None  # setup() made it

    def accepted() -> web.RequestHandler:
        stats.connections += 1
        return protocols()

    loop = asyncio.get_running_loop()
    server = await loop.create_server(accepted, LOOPBACK, port, ssl=ssl_context, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            if parent is not None and os.getppid() != parent:  # orphaned: whoever started us is gone
                break
    server.close()
    await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pillpipe.services.server",
                                description="One of the embedded services, on 127.0.0.1.")
    p.add_argument("service", choices=("s3", "api"))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--objects", type=int, default=0, help="generated source objects (s3 only)")
    p.add_argument("--tls-cert", metavar="PEM", help="serve https with this certificate and key (one PEM file)")
    p.add_argument("--parent", type=int, help="exit when this process is no longer our parent")
    args = p.parse_args(argv)
    if args.objects < 0 or not 0 < args.port < 65536:
        p.error("--objects must be >= 0 and --port in 1..65535")
    ssl_context = None
    if args.tls_cert:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(args.tls_cert)
    app = s3_app(args.objects) if args.service == "s3" else api_app()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(app, args.port, ssl_context, args.parent))
    else:
        uvloop.run(serve(app, args.port, ssl_context, args.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
