"""Redis, started for real: a redis-server on a free loopback port, stopped by PID.

Without redis-server (or redis-py) these tests skip, saying how to install it - except under
CI=true, where they fail: CI must never skip them silently.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pillpipe.services.process import ServiceError, listening
from pillpipe.services.redis import RedisServer, program

CI = os.environ.get("CI") == "true"


def unavailable(reason: str) -> None:
    """Skip with ``reason`` - or, under CI=true, fail: CI installs Redis and must run these tests."""
    if CI:
        pytest.fail(f"{reason} (CI=true: the broker tests must not be skipped)")
    pytest.skip(reason)


def need_client() -> None:
    try:
        import redis  # noqa: F401
    except ImportError:
        unavailable("redis-py is not installed: pip install 'pillpipe[redis]'")


def need_redis() -> None:
    try:
        program()
    except ServiceError as exc:
        unavailable(str(exc))
    need_client()


@pytest.fixture(scope="module")
def server():
    need_redis()
    with RedisServer() as redis_server:
        yield redis_server


# The launcher --------------------------------------------------------------------------
def test_server_runs_on_loopback_without_persistence_and_stops_by_pid(server: RedisServer):
    with RedisServer() as redis_server:
        directory, pid = Path(redis_server.dir), redis_server.pid
        assert listening(redis_server.port) and redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
        import redis

        with redis.Redis(port=redis_server.port) as client:  # what the server itself says it runs with
            config = client.config_get("*")
            assert client.info("server")["process_id"] == pid
        assert (config["bind"], config["save"], config["appendonly"]) == ("127.0.0.1", "", "no")
        assert Path(config["dir"]).resolve() == directory.resolve()
    assert not listening(redis_server.port) and not directory.exists()
    assert redis_server.service.proc.returncode is not None


def test_a_missing_redis_server_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServiceError) as caught:
        RedisServer().start()
    assert "redis-server is not installed" in str(caught.value) and "apt-get install redis-server" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_server_that_cannot_start_says_why(server: RedisServer, tmp_path: Path):
    with pytest.raises(ServiceError, match="already in use"):
        RedisServer(port=server.port).start()  # never mistaken for the server already there
    (tmp_path / "appendonlydir").mkdir()
    (tmp_path / "appendonlydir" / "appendonly.aof.manifest").write_text("not a manifest\n")
    with pytest.raises(ServiceError) as caught:
        RedisServer(persist=True, dir=str(tmp_path)).start()
    message = str(caught.value)
    assert "exited with code" in message and "AOF manifest" in message and "\n" not in message  # its log's last word


@pytest.mark.slow
def test_without_redis_these_tests_skip_saying_why_but_fail_under_ci(tmp_path: Path):
    """The guard itself: on a machine without redis-server, a skip with the reason; in CI, a failure."""
    here = Path(__file__)
    argv = [sys.executable, "-m", "pytest", str(here), "-k", "stops_by_pid", "-p", "no:cacheprovider", "-rs"]
    env = {**os.environ, "PATH": str(tmp_path)}  # no redis-server on it
    for ci, code, said in (("false", 0, "SKIPPED"), ("true", 1, "must not be skipped")):
        done = subprocess.run(argv, cwd=here.parent.parent, env={**env, "CI": ci}, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == code, done.stdout
        assert said in done.stdout and "apt-get install redis-server" in done.stdout
