"""The registry of benchmark scenarios: one module each, one line each here, in the order they run.

To add a scenario: write ``benchmarks/scenarios/NAME.py`` with a ``Scenario`` subclass (see
``benchmarks/scenario.py``) assigned to ``SCENARIO``, and add its name below.  ``pillpipe bench``
then offers it to ``--only``, counts it in the progress bar, runs it, checks its targets and
writes its summary section and plots.
"""
from __future__ import annotations

import importlib

from ..scenario import Scenario

REGISTRY = (
    "overhead",
    "latency",
    "scaling",
    "shutdown",
    "memory",
    "strategies",
    "batch",
    "peers",
    "real",
    "durable",
    "redis",
)


def scenario(name: str) -> Scenario:
    """The scenario registered under ``name``."""
    found: Scenario = importlib.import_module(f"{__name__}.{name}").SCENARIO
    return found


def all_scenarios() -> dict[str, Scenario]:
    return {name: scenario(name) for name in REGISTRY}
