"""``python -m anyio_version``: run the pipeline on anyio from the command line (``--backend asyncio|trio``)."""
from pillpipe.common.cli import entry
from pillpipe.services.embedded import serving

from .pipeline import run

entry(run, "python -m anyio_version", services=serving)  # --io real: the embedded services, started for the run
