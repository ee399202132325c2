"""Live events: one per change, filtered, bounded, and closed with the manager."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from jobkit import EventType, Job, JobContext
from managers import ManagerFactory

pytestmark = pytest.mark.anyio


async def _progress(ctx: JobContext, payload: Any) -> str:
    for i in range(3):
        await ctx.progress((i + 1) / 3, f"step {i + 1}")
    return "ok"


HANDLERS = {"work": _progress}


class TestEvents:
    async def test_lifecycle_and_progress_events_in_order(self, make_manager: ManagerFactory) -> None:
        """A job yields submitted, started, progress x3, completed, then deleted — each after the write."""
        jobs = make_manager(handlers=HANDLERS)
        async with jobs, jobs.subscribe() as events:
            job = await jobs.submit("work")
            await jobs.wait(job.id, timeout=5)
            await jobs.delete(job.id)
            seen = [await events.__anext__() for _ in range(7)]
        assert [e.type for e in seen] == [
            "submitted",
            "started",
            "progress",
            "progress",
            "progress",
            "completed",
            "deleted",
        ]
        assert [e.data.get("progress") for e in seen if e.type == "progress"] == [1 / 3, 2 / 3, 1.0]
        assert seen[2].data["message"] == "step 1"
        assert all(e.job_id == job.id for e in seen)
        assert seen[5].status == "completed"

    async def test_filter_by_job_id(self, make_manager: ManagerFactory) -> None:
        """subscribe(job_id=...) yields only that job's events."""
        jobs = make_manager(handlers=HANDLERS, concurrency=0)
        async with jobs:
            first = await jobs.submit("work")
            async with jobs.subscribe(job_id=first.id) as events:
                await jobs.submit("work")
                await jobs.set_priority(first.id, 3)
                event = await events.__anext__()
        assert (event.type, event.job_id, event.data["to"]) == ("priority_changed", first.id, 3)

    async def test_slow_subscriber_never_blocks_workers_and_sees_overflow(
        self, make_manager: ManagerFactory
    ) -> None:
        """A subscriber that does not read loses events past its buffer and is told how many."""
        store = make_manager.new_store()
        # Workers claim nothing until all 20 jobs are in, so the first events are the 20
        # submissions on every store (a SQLite submit lets a worker start between two).
        submitted = anyio.Event()
        claim = store.claim

        async def claim_after_submitting(**kwargs: Any) -> Job | None:
            await submitted.wait()
            return await claim(**kwargs)

        store.claim = claim_after_submitting  # type: ignore[method-assign]
        claim_many = getattr(store, "claim_many", None)
        if claim_many is not None:  # the batched claim the worker pool prefers

            async def claim_many_after_submitting(**kwargs: Any) -> list[Job]:
                await submitted.wait()
                return await claim_many(**kwargs)  # type: ignore[no-any-return]

            store.claim_many = claim_many_after_submitting  # type: ignore[attr-defined]
        jobs = make_manager(handlers=HANDLERS, store=store, concurrency=4)
        async with jobs, jobs.subscribe(buffer=5) as events:
            ids = [(await jobs.submit("work")).id for _ in range(20)]
            submitted.set()
            with anyio.fail_after(5):
                for job_id in ids:
                    await jobs.wait(job_id)
            received = [await events.__anext__() for _ in range(6)]
        assert [e.type for e in received[:5]] == ["submitted"] * 5
        overflow = received[5]
        assert overflow.type is EventType.OVERFLOW
        assert overflow.data["missed"] == 20 * 6 - 5

    async def test_subscriptions_end_when_the_manager_closes(self, make_manager: ManagerFactory) -> None:
        """A reader's `async for` ends cleanly when the manager shuts down."""
        jobs = make_manager(handlers=HANDLERS, concurrency=0)
        collected: list[str] = []
        ready, finished = anyio.Event(), anyio.Event()

        async def reader() -> None:
            async with jobs.subscribe() as stream:
                ready.set()
                async for event in stream:
                    collected.append(event.type)
            finished.set()

        async with anyio.create_task_group() as tg:
            async with jobs:
                tg.start_soon(reader)
                await ready.wait()
                await jobs.submit("work")
            with anyio.fail_after(5):
                await finished.wait()
        assert collected == ["submitted"]
