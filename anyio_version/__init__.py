"""The pipeline on anyio (a task group + memory object streams; asyncio or trio backend)."""
from .pipeline import run

__all__ = ["run"]
