"""jobkit in one sitting: run jobs, watch them, cancel one, delete one, let one expire.

What it shows, on the in-memory backends and the real clock:

1. two handlers: an async ``thumbnail`` handler that reports progress and writes
   artifacts, and a plain (sync) ``report`` handler that jobkit runs in a worker thread;
2. live progress, read from ``jobs.subscribe()``;
3. a cancel in the middle of a job: the handler stops at its next checkpoint and the
   partial result it stored with ``ctx.set_result`` is kept on the cancelled job;
4. deleting a finished job together with its artifacts (nothing is left in the blob store);
5. a job submitted with a short ``ttl`` that the sweeper removes once it has expired;
6. the audit trail: who cancelled, deleted and expired what.

Run it with ``make demo`` or ``.venv/bin/python examples/quickstart.py``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import structlog

from jobkit import Actor, EventStream, JobContext, JobEvent, JobManager, JobNotFound, SyncJobContext
from jobkit.blobs import MemoryBlobStore
from jobkit.stores import MemoryStore

# jobkit logs through structlog; keep its info lines (audit, sweeps) out of the demo output.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

blobs = MemoryBlobStore()
jobs = JobManager(MemoryStore(), blobs, concurrency=4)
alice = Actor("alice")
names: dict[str, str] = {}  # job id -> a readable name for the output


@jobs.handler("thumbnail")
async def thumbnail(ctx: JobContext, payload: Any) -> dict[str, Any]:
    """Resize an image to each size; every finished size is an artifact and part of the result."""
    done: list[int] = []
    sizes = payload["sizes"]
    for i, size in enumerate(sizes, start=1):
        await anyio.sleep(0.15)  # the real work would go here; a cancel lets this size finish
        await ctx.put_artifact(f"thumb_{size}.png", f"<{size}px of {payload['image']}>")
        done.append(size)
        await ctx.set_result({"thumbnails": done})  # kept even if we are cancelled later
        await ctx.progress(i / len(sizes), f"resized to {size}px")
        await ctx.checkpoint()  # raises JobCancelled once someone cancelled the job
    return {"thumbnails": done}


@jobs.handler("report")
def report(ctx: SyncJobContext, payload: Any) -> dict[str, Any]:
    """A blocking handler: it runs in a worker thread and uses the same context, as plain calls."""
    sections = payload["sections"]
    for i in range(1, sections + 1):
        ctx.checkpoint()
        time.sleep(0.1)  # blocking work is fine here: the event loop is not blocked
        ctx.progress(i / sections, f"section {i} of {sections}")
    ctx.put_artifact("report.txt", f"{payload['title']}: {sections} sections")
    return {"title": payload["title"], "sections": sections}


def show(event: JobEvent) -> None:
    name = names.get(event.job_id, event.job_id[:8])
    if event.type == "progress":
        print(f"   {name:<16} {event.data['progress']:>5.0%}  {event.data['message']}")
    elif event.type in ("started", "cancelling", "completed", "failed", "cancelled"):
        print(f"   {name:<16} {event.type}")


async def follow(events: EventStream, *job_ids: str) -> None:
    """Print events as they come until every one of ``job_ids`` has finished."""
    waiting = set(job_ids)
    async for event in events:
        show(event)
        if event.job_id in waiting and event.status is not None and event.status.is_terminal:
            waiting.discard(event.job_id)
            if not waiting:
                return


async def submit(name: str, kind: str, payload: Any, **options: Any) -> str:
    job = await jobs.submit(kind, payload, **options)
    names[job.id] = name
    return job.id


async def main() -> None:
    async with jobs, jobs.subscribe() as events:
        print("1. Two jobs, one async and one in a thread, with live progress")
        cat = await submit("cat.jpg", "thumbnail", {"image": "cat.jpg", "sizes": [64, 128, 256]})
        weekly = await submit("weekly report", "report", {"title": "weekly", "sections": 3})
        await follow(events, cat, weekly)
        for job_id in (cat, weekly):
            job = await jobs.get(job_id)
            print(f"   -> {names[job_id]} {job.status}: {job.result}")

        print("\n2. Cancel a job half-way: it keeps what it produced so far")
        pano = await submit(
            "panorama.jpg", "thumbnail", {"image": "panorama.jpg", "sizes": [64, 128, 256, 512, 1024, 2048]}
        )
        async for event in events:
            show(event)
            if event.job_id == pano and event.type == "progress" and event.data["progress"] >= 0.3:
                break
        print("   ... alice cancels it")
        await jobs.cancel(pano, actor=alice, reason="closed the browser tab")
        await follow(events, pano)
        job = await jobs.get(pano)
        print(f"   -> panorama.jpg {job.status} ({job.cancel_reason}); partial result: {job.result}")
        print(f"   -> its artifacts are kept: {await jobs.artifacts(pano)}")

        print("\n3. Delete a finished job together with its artifacts")
        print(f"   before: jobs.artifacts -> {await jobs.artifacts(cat)}")
        await jobs.delete(cat, actor=alice)
        try:
            await jobs.artifacts(cat)
        except JobNotFound as exc:
            print(f"   after:  jobs.artifacts -> JobNotFound ({exc.code}): {exc}")
        print(f"   after:  blob store under jobs/{cat[:8]}…/ -> {await blobs.list(f'jobs/{cat}/')}")

        print("\n4. A job with a 0.5 s ttl expires and the sweeper removes it")
        daily = await submit("daily report", "report", {"title": "daily", "sections": 1}, ttl=0.5)
        await follow(events, daily)
        job = await jobs.get(daily)
        assert job.expires_at is not None
        assert job.finished_at is not None
        kept = (job.expires_at - job.finished_at).total_seconds()
        print(f"   -> daily report {job.status}, kept for {kept:g}s after it finished")
        await anyio.sleep(kept)  # the sweeper also runs on its own every `sweep_interval` seconds
        print(f"   jobs.sweep() -> {await jobs.sweep()}")
        try:
            await jobs.get(daily)
        except JobNotFound:
            print("   -> daily report is gone: JobNotFound")

        print("\n5. The audit trail (oldest first): every management action, who and when")
        for record in reversed(await jobs.audit()):
            who = record.actor_id or "host"
            what = f"{record.action:<7} {names.get(record.job_id, record.job_id[:8]):<14} by {who:<15}"
            print(f"   {record.at:%H:%M:%S}  {what} {dict(record.details)}")
    print("\nDone.")


if __name__ == "__main__":
    anyio.run(main)
