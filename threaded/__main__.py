"""``python -m threaded``: run the pipeline on threads from the command line."""
from pillpipe.common.cli import entry
from pillpipe.services.embedded import serving

from .pipeline import run

entry(run, "python -m threaded", services=serving)  # --io real: the embedded services, started for the run
