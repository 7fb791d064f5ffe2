"""The shared core: everything both concurrency models import, and nothing that blocks.

Floors, bottom up: ``model`` (records, outcomes, the pill), ``workload`` (the
deterministic files, latencies and failures), ``faults`` (injected faults),
``stages`` (what a copy and an upload do), ``ledger`` (the source of truth and the
report), ``events`` (the event lines), ``config`` (flags and validation) and
``cli`` (the one runner both variants' ``__main__`` use).  Nothing here imports
``threading`` or ``asyncio``.
"""
