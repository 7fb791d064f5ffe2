"""The pipeline modules mirror each other: the same functions in the same order, and outside the
concurrency primitives (``run`` and the ``_`` functions) the same code line for line."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import pillpipe.asyncio_version.pipeline as apipe
import pillpipe.threaded.pipeline as tpipe

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = {name: ROOT / name / "pipeline.py" for name in ("threaded", "asyncio_version", "anyio_version")}
PUBLIC = ["dispatcher", "s3_uploader", "api_uploader", "verifier", "coordinator", "pipeline", "run"]
SHARED = PUBLIC[:-1]  # written once in effect: only `async`/`await` may differ (and anyio's stream names)
STREAMS = {  # anyio splits each queue into a send end and a receive end: the same roles, renamed
    "s3_send": "s3_queue", "s3_receive": "s3_queue", "api_send": "api_queue", "api_receive": "api_queue",
    "verify_send": "verify_queue", "verify_receive": "verify_queue", "streams": "queues",
    "Send": "Queue", "Receive": "Queue",
}


class _Normalise(ast.NodeTransformer):
    """Drop docstrings and ``async``/``await`` (``async with``/``async for`` read as ``with``/``for``);
    rename what a table maps.  What is left is logic."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.FunctionDef:
        plain = ast.FunctionDef(**{f: getattr(node, f) for f in ast.FunctionDef._fields if hasattr(node, f)})
        return self.visit_FunctionDef(ast.copy_location(plain, node))

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            node.body = body[1:]
        self.generic_visit(node)
        return node

    def visit_Await(self, node: ast.Await) -> ast.AST:
        return self.visit(node.value)

    def visit_AsyncWith(self, node: ast.AsyncWith) -> ast.AST:  # ``async with`` is the coroutines' ``with``
        return self.visit(ast.copy_location(ast.With(items=node.items, body=node.body), node))

    def visit_AsyncFor(self, node: ast.AsyncFor) -> ast.AST:
        return self.visit(ast.copy_location(ast.For(target=node.target, iter=node.iter, body=node.body,
                                                    orelse=node.orelse), node))

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self.names.get(node.id, node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg = self.names.get(node.arg, node.arg)
        node.annotation = None
        return node


def logic(source: str, names: dict[str, str] | None = None) -> dict[str, str]:
    """Top-level function name -> its normalised code."""
    tree = _Normalise(names or {}).visit(ast.parse(source))
    return {node.name: ast.unparse(node) for node in tree.body if isinstance(node, ast.FunctionDef)}


def _functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_same_functions_in_the_same_order():
    threaded, asyncio_ = _functions(PIPELINES["threaded"]), _functions(PIPELINES["asyncio_version"])
    assert threaded == asyncio_
    assert [n for n in threaded if not n.startswith("_")] == PUBLIC


@pytest.mark.parametrize("other", ["asyncio_version", "anyio_version"])
def test_outside_the_primitives_only_async_and_await_differ(other):
    """The worker loops, the coordinator and the pipeline's wiring are the same code in every model
    (anyio wires streams instead of queues, so its ``pipeline`` is its own)."""
    threaded = logic(PIPELINES["threaded"].read_text())
    theirs = logic(PIPELINES[other].read_text(), STREAMS if other == "anyio_version" else None)
    shared = SHARED if other == "asyncio_version" else SHARED[:-1]
    for name in shared:
        assert theirs[name] == threaded[name], f"{other}.{name} differs from threaded.{name} beyond async/await"


def test_the_mirror_check_catches_logic_added_to_one_variant():
    """The check above can fail: one extra statement in one variant's worker loop is caught."""
    source = PIPELINES["asyncio_version"].read_text()
    marker = "        if ctx.take(me, record):\n"
    assert source.count(marker) == 2
    tampered = source.replace(marker, "        record.error = None\n" + marker, 1)
    assert logic(tampered)["s3_uploader"] != logic(PIPELINES["threaded"].read_text())["s3_uploader"]
    assert logic(source)["s3_uploader"] == logic(PIPELINES["threaded"].read_text())["s3_uploader"]


def test_public_functions_take_the_same_parameters():
    for name in PUBLIC:
        t, a = inspect.signature(getattr(tpipe, name)), inspect.signature(getattr(apipe, name))
        assert list(t.parameters) == list(a.parameters), name


def test_run_is_synchronous_in_both():
    assert not inspect.iscoroutinefunction(tpipe.run) and not inspect.iscoroutinefunction(apipe.run)
    for name in SHARED:
        assert inspect.iscoroutinefunction(getattr(apipe, name)) != inspect.iscoroutinefunction(getattr(tpipe, name))


def test_the_core_never_imports_a_variant():
    for path in (ROOT / "common").glob("*.py"):
        text = path.read_text()
        for forbidden in ("pillpipe.threaded", "pillpipe.asyncio_version", "pillpipe.anyio_version",
                          "pillpipe.benchmarks", "pillpipe.cli", "pillpipe.variants", "pillpipe.services",
                          "from pillpipe import", "import threading", "import asyncio"):
            assert forbidden not in text, (path.name, forbidden)


def test_the_anyio_model_mirrors_the_same_public_functions():
    """The third model has no queues (memory object streams) but the same functions in the same order."""
    names = _functions(PIPELINES["anyio_version"])
    assert [n for n in names if not n.startswith("_")] == PUBLIC
