"""``python -m threaded``: run the pipeline on threads from the command line."""
from pillpipe.common.cli import entry

from .pipeline import run

entry(run, "python -m threaded")
