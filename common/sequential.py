"""The plain sequential reference: the shared stage logic with no concurrency at all.

One file at a time through copy, upload and verify.  It is what concurrency is measured
against, and the report every variant must equal.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Iterator

from .config import Config
from .context import Context, worker_name
from .model import FileRecord, Stage
from .report import Report
from .stages import HANG, api_upload, s3_copy

VARIANT = "sequential"


def run(config: Config) -> Report:
    # one worker per stage, whatever the flags say (they shape only the concurrent variants)
    ctx = Context(dataclasses.replace(config, s3_workers=1, api_workers=1), VARIANT, None)
    clocks = {stage: ctx.timeline.worker(worker_name(stage, 1), stage) for stage in (Stage.S3, Stage.API)}
    verifier = ctx.timeline.worker("Verifier", Stage.VERIFY)
    steps = {Stage.S3: s3_copy, Stage.API: api_upload}
    try:
        for record in ctx.admitted():
            if _through_stages(ctx, clocks, steps, record):
                try:
                    ctx.verify(verifier, record)
                except Exception as exc:  # an injected verifier crash: the only verifier
                    ctx.worker_died(Stage.VERIFY, verifier.name, exc)
    except KeyboardInterrupt:
        ctx.on_signal("SIGINT")
    for clock in (*clocks.values(), verifier):
        clock.pill()
    ctx.events.s3_done(clocks[Stage.S3].name)
    ctx.events.api_done(clocks[Stage.API].name)
    for clock in (*clocks.values(), verifier):
        clock.exited()
    return ctx.report()


def _through_stages(ctx: Context, clocks: dict, steps: dict, record: FileRecord) -> bool:
    """Copy then upload one file; False when it must not reach the verifier (cancelled because a
    stage is dead, or held by the worker that just died)."""
    for stage, clock in clocks.items():
        try:
            if not ctx.take(stage, 1, clock, record):
                return False
            _wait_through(steps[stage](record, ctx.plan, ctx.events, clock.name))
            clock.end(record)
        except Exception as exc:  # an injected worker death: the only worker of its stage
            ctx.worker_died(stage, clock.name, exc)
            return False
    return True


def _wait_through(steps: Iterator[float]) -> None:
    for delay in steps:
        while delay == HANG:
            time.sleep(3600)
        time.sleep(delay)
