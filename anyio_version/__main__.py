"""``python -m anyio_version``: run the pipeline on anyio from the command line (``--backend asyncio|trio``)."""
from pillpipe.common.cli import entry

from .pipeline import run

entry(run, "python -m anyio_version")
