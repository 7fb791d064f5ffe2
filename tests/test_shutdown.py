"""The poison-pill shutdown: one pill per worker, stage by stage, nothing left running."""
from __future__ import annotations

import asyncio

import pytest

import pillpipe.asyncio_version.pipeline as apipe
from pillpipe.common.context import Context

from .conftest import fast


@pytest.mark.parametrize("queue_size", [0, 1, 4])
def test_every_worker_gets_exactly_one_pill_and_exits(run, queue_size):
    report = run(fast(files=40, s3_workers=4, api_workers=3, queue_size=queue_size, time_scale=0.001))
    workers = report.timing["workers"]
    names = {n for n in workers if n != "Dispatcher"}
    assert names == {"S3-Worker-1", "S3-Worker-2", "S3-Worker-3", "S3-Worker-4",
                     "API-Worker-1", "API-Worker-2", "API-Worker-3", "Verifier"}
    for name in names:
        assert workers[name]["pill_s"] is not None, name
        assert workers[name]["exited_s"] >= workers[name]["pill_s"], name
    stages = report.timing["stages"]
    assert len(stages["s3"]["pills_s"]) == 4 and len(stages["api"]["pills_s"]) == 3
    assert len(stages["verify"]["pills_s"]) == 1
    assert sum(w["files"] for n, w in workers.items() if n.startswith("S3")) == 40


def test_pills_follow_the_tutorials_order(run):
    """No API pill before every S3 worker has exited; no verifier pill before every API worker has."""
    report = run(fast(files=25, s3_workers=3, api_workers=2, time_scale=0.002, queue_size=2))
    workers, put = report.timing["workers"], report.timing["stages"]
    dispatcher_done = workers["Dispatcher"]["exited_s"]
    s3_done = max(w["exited_s"] for n, w in workers.items() if n.startswith("S3"))
    api_done = max(w["exited_s"] for n, w in workers.items() if n.startswith("API"))
    assert put["s3"]["pills_put_s"][0] >= dispatcher_done
    assert put["api"]["pills_put_s"][0] >= s3_done
    assert put["verify"]["pills_put_s"][0] >= api_done
    assert min(put["api"]["pills_s"]) >= s3_done
    assert workers["Verifier"]["pill_s"] >= api_done
    for stage in ("s3", "api", "verify"):  # a stream's end reaches its consumers after it began (anyio: a close)
        assert min(put[stage]["pills_s"]) >= put[stage]["pills_put_s"][0], stage


def test_a_slow_last_file_is_not_cut_off_by_early_pills(run):
    """A straggler: the last file is 50 times slower; pills wait behind it."""
    report = run(fast(files=12, time_scale=0.001, faults=("s3:id=12:slow=50",), details=True))
    assert report.success == 12
    assert report.files[-1]["outcome"] == "success"


@pytest.mark.asyncio
async def test_asyncio_pipeline_leaves_no_task_behind():
    """Coroutine level: drive the asyncio coordinator on pytest-asyncio's loop."""
    ctx = Context(fast(files=30, s3_workers=5, api_workers=4, queue_size=2), "asyncio", None)
    before = asyncio.all_tasks()
    await apipe.pipeline(ctx)
    assert asyncio.all_tasks() == before
    report = ctx.report()
    assert report.success == 30 and len(report.timing["stages"]["api"]["pills_s"]) == 4


@pytest.mark.asyncio
async def test_asyncio_workers_are_named_like_the_threads():
    ctx = Context(fast(files=3, time_scale=0.001), "asyncio", None)
    seen: set[str] = set()
    original = apipe._start

    def spy(*args):
        task = original(*args)
        seen.add(task.get_name())
        return task

    apipe._start = spy
    try:
        await apipe.pipeline(ctx)
    finally:
        apipe._start = original
    assert seen == {"Dispatcher", "S3-Worker-1", "S3-Worker-2", "S3-Worker-3", "API-Worker-1", "API-Worker-2",
                    "Verifier"}
