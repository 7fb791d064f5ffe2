"""Packaging (issue 9, item 6): the wheel claims only the ``pillpipe`` name; an sdist unpacked in a
fresh directory runs its tests; the extras are named the same everywhere.

The build is real: ``python -m build`` makes the sdist, then the wheel from that sdist (what pip
does with an sdist), each in its own isolated environment.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from pillpipe.cli import EXTRAS

from .conftest import ROOT

pytestmark = [pytest.mark.timeout(600), pytest.mark.xdist_group("build")]  # one build at a time
# What a build must not see: the checkout's own state (and what other tests write while it runs).
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "venv", "__pycache__", "*.egg-info", ".hypothesis", ".pytest_cache",
                                    ".mypy_cache", ".ruff_cache", "build", "dist", "bench-results")
TOP_LEVEL = ("common", "threaded", "asyncio_version", "anyio_version", "benchmarks", "services")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("dist")
    source = tmp_path_factory.mktemp("source") / "pillpipe"  # the build writes in its tree: a copy of ours
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_SOURCE)
    done = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(source)],
                          capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sdist,), (wheel,) = out.glob("*.tar.gz"), out.glob("*.whl")
    return sdist, wheel


@pytest.mark.slow
def test_the_wheel_installs_only_the_pillpipe_namespace(built):
    _, wheel = built
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"pillpipe"}, sorted(top)
    for package in TOP_LEVEL:
        assert f"pillpipe/{package}/__init__.py" in names, package  # the variants, under the namespace


@pytest.mark.slow
def test_an_unpacked_sdist_runs_its_tests(built, tmp_path):
    sdist, _ = built
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    (root,) = tmp_path.iterdir()
    for test in (ROOT / "tests").glob("*.py"):  # every test module and helper, conftest.py included
        assert (root / "tests" / test.name).is_file(), test.name
    for package in TOP_LEVEL:
        assert (root / package / "__init__.py").is_file(), package
    run = dict(cwd=root, capture_output=True, text=True, timeout=300)
    where = subprocess.run([sys.executable, "-c", "import pillpipe; print(pillpipe.__file__)"], **run)
    assert Path(where.stdout.strip()).is_relative_to(root), where.stdout  # the sdist's own code is tested
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                               **run)
    assert collected.returncode == 0, collected.stdout[-3000:]
    assert re.search(r"^\d{3,} tests collected", collected.stdout, re.MULTILINE), collected.stdout[-500:]
    ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_mirror.py",
                          "tests/test_core.py", "tests/test_cli.py::test_quiet_prints_only_the_report"], **run)
    assert ran.returncode == 0 and " passed" in ran.stdout, ran.stdout[-3000:]


def test_extras_are_named_the_same_everywhere():
    """Every ``pillpipe[NAME]`` the README, the help texts or the code tell a user to install is an
    extra pyproject.toml declares, and every declared extra is described for ``pillpipe --help``."""
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    assert set(EXTRAS) == declared
    sources = [ROOT / "README.md", *ROOT.glob("docs/*.md"),
               *(path for folder in ("pillpipe", *TOP_LEVEL) for path in (ROOT / folder).rglob("*.py"))]
    named = {}
    for path in sources:
        for extra in re.findall(r"""(?:pillpipe|\.)\[([a-z0-9_,-]+)\]['"]""", path.read_text(errors="replace")):
            for name in extra.split(","):
                named.setdefault(name, path.name)
    assert named and set(named) <= declared, {n: p for n, p in named.items() if n not in declared}
