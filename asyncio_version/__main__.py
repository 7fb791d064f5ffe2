"""``python -m asyncio_version``: run the pipeline on asyncio from the command line."""
from pillpipe.common.cli import entry
from pillpipe.services.embedded import serving

from .pipeline import run

entry(run, "python -m asyncio_version", services=serving)  # --io real: the embedded services, started for the run
