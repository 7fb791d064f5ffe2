"""Shared fixtures: every behaviour both variants share is tested once, parametrized over them."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import strategies as st

from pillpipe import anyio_version
from pillpipe import asyncio_version
from pillpipe import threaded
from pillpipe.common import sequential
from pillpipe.common.config import Config

ROOT = Path(__file__).resolve().parent.parent
RUNS = {"threaded": threaded.run, "asyncio": asyncio_version.run, "anyio": anyio_version.run}
MODULES = {"threaded": "threaded", "asyncio": "asyncio_version", "anyio": "anyio_version"}


@pytest.fixture(params=list(RUNS), ids=list(RUNS))
def variant(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def run(variant: str):
    return RUNS[variant]


def fast(**overrides) -> Config:
    """A quiet config with no waiting unless a test asks for it."""
    overrides.setdefault("time_scale", 0)
    overrides.setdefault("quiet", True)
    return Config(**overrides)


@pytest.fixture
def in_flight_peak(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """``[n]``: the most files the ledger ever held in flight during the test (flat memory's witness)."""
    from pillpipe.common.ledger import Ledger

    peak = [0]
    original = Ledger.admit

    def admit(self: Ledger, record) -> None:
        original(self, record)
        peak[0] = max(peak[0], self.in_flight())

    monkeypatch.setattr(Ledger, "admit", admit)
    return peak


def in_flight_bound(queue_size: int, s3_workers: int = 3, api_workers: int = 2) -> int:
    """What bounded queues let the ledger hold: three queues, the workers, the verifier, the dispatcher's hand."""
    return 3 * queue_size + s3_workers + api_workers + 1 + 1


def configs(max_files: int = 200, max_workers: int = 20) -> st.SearchStrategy[Config]:
    """Quiet, no-wait configurations: file counts, workers, bounded and unbounded queues, failures
    with and without retries, seeds."""
    return st.builds(
        fast,
        files=st.integers(0, max_files),
        s3_workers=st.integers(1, max_workers),
        api_workers=st.integers(1, max_workers),
        queue_size=st.sampled_from([0, 1, 2, 5, 50]),
        seed=st.integers(0, 2**32),
        fail_rate=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
        retries=st.integers(0, 3),
        details=st.booleans(),
    )


def run_sequential(config: Config):
    return sequential.run(config)


def cli(module: str, *args: str, timeout: float = 60, stdin: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` from the repository root, as a user would."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, input=stdin, env=env, **kwargs)


# Redis (the broker tests): a real redis-server per module ----------------------------------------
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
    from pillpipe.services.process import ServiceError
    from pillpipe.services.redis import program

    try:
        program()
    except ServiceError as exc:
        unavailable(str(exc))
    need_client()


@pytest.fixture(scope="module")
def server():
    """The module's real redis-server on a free loopback port (each test uses its own run id)."""
    from pillpipe.services.redis import RedisServer

    need_redis()
    with RedisServer() as redis_server:
        yield redis_server


def new_run() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"
