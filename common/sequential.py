"""The plain sequential reference: the shared stage logic with no concurrency at all.

One file at a time through copy, upload and verify.  It is what concurrency is measured
against, and the report every variant must equal.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

from .config import Config
from .context import Context
from .model import FileRecord, Stage
from .report import Report
from .stages import HANG, StagePlan, Steps, api_upload, s3_copy
from .timing import WorkerClock

VARIANT = "sequential"
STEPS: dict[Stage, Callable[[FileRecord, StagePlan, str], Steps]] = {Stage.S3: s3_copy, Stage.API: api_upload}


def run(config: Config) -> Report:
    # one worker per stage, whatever the flags say (they shape only the concurrent variants)
    ctx = Context(dataclasses.replace(config, s3_workers=1, api_workers=1), VARIANT)
    crew = [ctx.worker(stage) for stage in Stage]
    try:
        for record in ctx.admitted():
            if _through_stages(ctx, crew[1:3], record):
                _verify(ctx, crew[3], record)
    except KeyboardInterrupt:
        ctx.on_signal("SIGINT")
    for me in crew:
        ctx.check_out(me)
        ctx.exited(me.name)
    return ctx.report()


def _through_stages(ctx: Context, workers: list[WorkerClock], record: FileRecord) -> bool:
    """Copy then upload one file; False when it must not reach the verifier (cancelled because a
    stage is dead, or held by the worker that just died)."""
    for me in workers:
        try:
            if not ctx.take(me, record):
                return False
            _wait_through(STEPS[me.stage](record, ctx.plan, me.name))
            ctx.release(me, record)
        except Exception as exc:  # an injected worker death: the only worker of its stage
            ctx.worker_died(me.stage, me.name, exc)
            return False
    return True


def _verify(ctx: Context, me: WorkerClock, record: FileRecord) -> None:
    try:
        _wait_through(ctx.verify(me, record))
    except Exception as exc:  # an injected verifier crash: the only verifier
        ctx.worker_died(Stage.VERIFY, me.name, exc)


def _wait_through(steps: Steps) -> None:
    for delay in steps.waits():
        while delay == HANG:
            time.sleep(3600)
        time.sleep(delay)
