"""The service launcher: a real child process on a free loopback port, ready-waited and stopped by PID."""
from __future__ import annotations

import sys

import pytest

from pillpipe.services.process import Service, ServiceError, free_port, listening

SERVE = "import http.server, sys; http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), http.server.BaseHTTPRequestHandler).serve_forever()"


def test_start_wait_and_stop_by_pid():
    port = free_port()
    with Service("http", [sys.executable, "-c", SERVE, str(port)], [port]) as service:
        assert listening(port)
        pid = service.proc.pid
    assert service.proc.returncode is not None and not listening(port)
    assert pid > 0


def test_a_process_that_exits_early_is_a_clear_error():
    with pytest.raises(ServiceError, match="exited with code 3"):
        Service("broken", [sys.executable, "-c", "raise SystemExit(3)"], [free_port()]).start(ready_timeout=10)


def test_readiness_wait_is_bounded():
    service = Service("silent", [sys.executable, "-c", "import time; time.sleep(60)"], [free_port()])
    with pytest.raises(ServiceError, match="not listening"):
        service.start(ready_timeout=0.5)
    assert service.proc.poll() is not None  # stopped, not left behind


def test_a_missing_program_is_a_clear_error():
    with pytest.raises(ServiceError, match="cannot start"):
        Service("none", ["/nonexistent/program"], [free_port()]).start()
