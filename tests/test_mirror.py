"""The two pipeline modules keep mirroring each other: same names, same order, same parameters."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pillpipe.asyncio_version.pipeline as apipe
import pillpipe.threaded.pipeline as tpipe

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = ["dispatcher", "s3_uploader", "api_uploader", "verifier", "coordinator", "pipeline", "run"]


def _functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_same_functions_in_the_same_order():
    threaded = _functions(ROOT / "threaded" / "pipeline.py")
    asyncio_ = _functions(ROOT / "asyncio_version" / "pipeline.py")
    assert threaded == asyncio_
    assert [n for n in threaded if not n.startswith("_")] == PUBLIC


def test_same_parameter_names():
    for name in _functions(ROOT / "threaded" / "pipeline.py"):
        t, a = inspect.signature(getattr(tpipe, name)), inspect.signature(getattr(apipe, name))
        assert list(t.parameters) == list(a.parameters), name


def test_only_the_concurrency_differs():
    """Line for line, the modules differ only where a concurrency primitive appears."""
    t = (ROOT / "threaded" / "pipeline.py").read_text().splitlines()
    a = (ROOT / "asyncio_version" / "pipeline.py").read_text().splitlines()
    assert abs(len(t) - len(a)) <= 10
    assert len(t) <= 250 and len(a) <= 250


def test_run_is_synchronous_in_both():
    assert not inspect.iscoroutinefunction(tpipe.run) and not inspect.iscoroutinefunction(apipe.run)
    for name in PUBLIC[:-1]:
        assert inspect.iscoroutinefunction(getattr(apipe, name)) != inspect.iscoroutinefunction(getattr(tpipe, name))


def test_the_core_never_imports_a_variant():
    for path in (ROOT / "common").glob("*.py"):
        text = path.read_text()
        for forbidden in ("pillpipe.threaded", "pillpipe.asyncio_version", "pillpipe.anyio_version",
                          "pillpipe.benchmarks", "pillpipe.cli", "from pillpipe import", "import threading",
                          "import asyncio"):
            assert forbidden not in text, (path.name, forbidden)


def test_the_anyio_model_mirrors_the_same_public_functions():
    """The third model has no queues (memory object streams) but the same functions in the same order."""
    names = _functions(ROOT / "anyio_version" / "pipeline.py")
    assert [n for n in names if not n.startswith("_")] == PUBLIC
    assert len((ROOT / "anyio_version" / "pipeline.py").read_text().splitlines()) <= 250
