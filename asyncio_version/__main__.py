"""``python -m asyncio_version``: run the pipeline on asyncio from the command line."""
from pillpipe.common.cli import entry

from .pipeline import run

entry(run, "python -m asyncio_version")
