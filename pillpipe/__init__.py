"""pillpipe: threads or coroutines for an I/O-bound pipeline?  The command is ``pillpipe``
(``pillpipe/cli.py``); the variants and the shared core live in the subpackages.

``pillpipe.__version__`` is pyproject.toml's ``version``, the one place it is written: from the
installed package's metadata, or (a checkout run without installing it) from pyproject.toml
itself.  It is looked up only when asked for, so importing the package costs nothing.
"""
from __future__ import annotations

from pathlib import Path

UNKNOWN = "0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pillpipe")
    except PackageNotFoundError:
        pass
    import tomllib

    try:
        with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as f:
            return str(tomllib.load(f)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return UNKNOWN
