"""The pipeline on coroutines (asyncio tasks + asyncio.Queue)."""
from .pipeline import run

__all__ = ["run"]
