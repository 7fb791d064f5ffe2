"""The plain sequential reference: the shared stage logic with no concurrency at all.

One file at a time through copy, upload and verify.  It is what concurrency is measured
against, and the report every variant must equal - so it keeps the same contracts:

- **Signals**: the first SIGINT/SIGTERM drains (the file in flight finishes, the rest is
  cancelled), a second one - or the end of the grace, 30 s by default for SIGTERM - aborts (the
  file in flight ends aborted); always a report, exit 130/143, never a traceback.  Its waits
  sleep in slices of ``POLL``, so an abort ends one within a slice.
- **Worker deaths**: one worker per stage at a time, but as many as the flags say in all: when
  one dies (an injected fault), the next takes over, as a sibling does in the concurrent
  variants; the stage is dead when all of them are.
"""
from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Callable

from .config import Config
from .context import POLL, Context
from .model import FileRecord, Stage
from .report import Report
from .stages import DONE, HANG, StagePlan, Steps, api_upload, s3_copy
from .timing import WorkerClock

VARIANT = "sequential"
HANDLES_SIGNALS = True  # installs its own SIGINT/SIGTERM handlers for the whole run
STEPS: dict[Stage, Callable[[FileRecord, StagePlan, str], Steps]] = {Stage.S3: s3_copy, Stage.API: api_upload}
THROUGH, VERIFY = (Stage.S3, Stage.API), Stage.VERIFY  # looked up once (a Stage.X is a descriptor call on 3.11)
TEND_EVERY = 64  # files between two looks at the stop (and the progress view) when nothing waits


class Aborted(BaseException):
    """The run is aborting: leave the file in flight where it is (it ends aborted).  Not an
    Exception, so a worker death's handler never takes it for one."""


def run(config: Config) -> Report:
    ctx = Context(config, VARIANT)
    crew = {stage: ctx.worker(stage) for stage in Stage}  # the current worker of each stage
    with _signals(ctx):
        admitted = ctx.admitted()
        try:
            for n, record in enumerate(admitted):
                if _through_stages(ctx, crew, record):
                    _verify(ctx, crew[VERIFY], record)
                if n % TEND_EVERY == 0:
                    ctx.tend()
        except Aborted:
            pass
        finally:
            admitted.close()
    for me in crew.values():
        if me.exited_at is None:
            ctx.check_out(me)
            ctx.exited(me.name)
    return ctx.report()


def _through_stages(ctx: Context, crew: dict[Stage, WorkerClock], record: FileRecord) -> bool:
    """Copy then upload one file; False when it must not reach the verifier (cancelled because a
    stage is dead, or held by the worker that just died - the stage's next worker takes over)."""
    for stage in THROUGH:
        me = crew[stage]
        try:
            if not ctx.take(me, record):
                return False
            steps = STEPS[stage](record, ctx.plan, me.name)
            if steps is not DONE:  # a stage that is already done has nothing to wait through
                _wait_through(ctx, steps)
            ctx.release(me, record)
        except Exception as exc:  # an injected worker death
            ctx.worker_died(stage, me.name, exc)
            if ctx.alive(stage):
                crew[stage] = ctx.worker(stage, me.index + 1)
            return False
    return True


def _verify(ctx: Context, me: WorkerClock, record: FileRecord) -> None:
    try:
        steps = ctx.verify(me, record)
        if steps is not DONE:
            _wait_through(ctx, steps)
    except Exception as exc:  # an injected verifier crash: the only verifier
        ctx.worker_died(Stage.VERIFY, me.name, exc)


def _wait_through(ctx: Context, steps: Steps) -> None:
    """Sleep each wait in slices of POLL, looking at the stop between them: an abort ends a wait
    within a slice (``Aborted``); the grace and the "waiting for" lines are kept meanwhile."""
    for delay in steps.waits():
        end = time.monotonic() + delay if delay != HANG else float("inf")
        while True:
            if ctx.aborting:
                raise Aborted
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, POLL))
            ctx.tend()


def _signals(ctx: Context) -> AbstractContextManager[None]:
    """SIGINT/SIGTERM for the run.  The handler runs on the one thread there is, which also reads
    the input: it may end a read that must stop."""
    return ctx.signals(reads_here=True)
