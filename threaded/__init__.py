"""The pipeline on threads (threading + queue.Queue)."""
from .pipeline import run

__all__ = ["run"]
