"""Shared fixtures: every behaviour both variants share is tested once, parametrized over them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import strategies as st

import anyio_version
import asyncio_version
import threaded
from common import sequential
from common.config import Config

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
