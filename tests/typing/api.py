"""Usage of the public API that must type-check under mypy --strict (run by `make lint`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio

from jobkit import (
    Actor,
    AuditRecord,
    BlockingJobManager,
    DeletePolicy,
    Job,
    JobContext,
    JobEvent,
    JobManager,
    JobStatus,
    Page,
    Retention,
    SweepReport,
    SyncJobContext,
)
from jobkit.blobs import MemoryBlobStore
from jobkit.stores import MemoryStore

jobs = JobManager(
    MemoryStore(),
    MemoryBlobStore(),
    concurrency=4,
    retention=Retention(completed=timedelta(days=1), failed=3600, cancelled=None),
    delete_policy=DeletePolicy(mode="soft", purge_soft_deleted_after=timedelta(days=30)),
    cancel_grace=5,
)


@jobs.handler("thumbnail")
async def thumbnail(ctx: JobContext, payload: Any) -> dict[str, int]:
    await ctx.progress(0.5, "half way")
    await ctx.put_artifact("out/thumb.png", b"...")
    await ctx.checkpoint()
    return {"width": 128}


def report(ctx: SyncJobContext, payload: Any) -> str:
    ctx.checkpoint()
    ctx.progress(1.0)
    return "ok"


jobs.register("report", report)


async def main() -> None:
    admin = Actor("root", tenant="acme", roles=frozenset({"admin"}))
    async with jobs:
        job: Job = await jobs.submit("thumbnail", {"url": "x"}, actor=admin, priority=3, ttl=60)
        page: Page = await jobs.list(actor=admin, status=[JobStatus.PENDING, "running"], limit=10)
        for item in page:
            assert item.status.is_terminal or not item.is_terminal
        moved, position = await jobs.set_priority(job.id, 5, actor=admin)
        done: Job = await jobs.wait(moved.id, timeout=30)
        names: list[str] = await jobs.artifacts(done.id)
        data: bytes = await jobs.read_artifact(done.id, names[0])
        sweep: SweepReport = await jobs.sweep()
        records: list[AuditRecord] = await jobs.audit(job_id=done.id, limit=10)
        async with jobs.subscribe(actor=admin) as events:
            async for event in events:
                assert isinstance(event, JobEvent)
                break
        print(position, len(data), sweep.expired, len(records))


def blocking() -> None:
    with BlockingJobManager(concurrency=1) as sync_jobs:
        sync_jobs.register("report", report)
        job = sync_jobs.submit("report")
        final: Job = sync_jobs.wait(job.id, timeout=5)
        with sync_jobs.subscribe() as events:
            for event in events:
                print(event.type, final.status)
                break


anyio.run(main)
