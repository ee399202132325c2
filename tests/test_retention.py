"""Retention: expires_at from ttl or Retention, the periodic sweeper, sweep reports, audit retention."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import pytest

from jobkit import (
    SWEEPER,
    DeletePolicy,
    JobContext,
    JobNotFound,
    Retention,
)
from jobkit.blobs import MemoryBlobStore
from jobkit.testing import FakeClock
from managers import ManagerFactory

pytestmark = pytest.mark.anyio


async def _ok(ctx: JobContext, payload: Any) -> Any:
    await ctx.put_artifact("out.txt", b"x")
    if payload == "fail":
        raise ValueError("bad")
    return payload


HANDLERS = {"work": _ok}


class TestExpiry:
    async def test_expires_at_from_retention_per_status(
        self, clock: FakeClock, make_manager: ManagerFactory
    ) -> None:
        """A finished job's expires_at is finished_at plus the Retention for its status (None: never)."""
        retention = Retention(completed=60, failed=timedelta(hours=2), cancelled=None)
        jobs = make_manager(handlers=HANDLERS, clock=clock, retention=retention)
        async with jobs:
            ok = await jobs.wait((await jobs.submit("work", 1)).id, timeout=5)
            bad = await jobs.wait((await jobs.submit("work", "fail")).id, timeout=5)
        idle = make_manager(handlers=HANDLERS, clock=clock, retention=retention, concurrency=0)
        async with idle:
            pending = await idle.submit("work", 2)
            assert pending.expires_at is None
            cancelled = await idle.cancel(pending.id)
        assert ok.finished_at is not None
        assert bad.finished_at is not None
        assert ok.expires_at == ok.finished_at + timedelta(seconds=60)
        assert bad.expires_at == bad.finished_at + timedelta(hours=2)
        assert cancelled.finished_at is not None
        assert cancelled.expires_at is None

    async def test_ttl_overrides_retention(self, clock: FakeClock, make_manager: ManagerFactory) -> None:
        """A per-job ttl wins over the Retention."""
        jobs = make_manager(handlers=HANDLERS, clock=clock, retention=Retention(completed=None))
        async with jobs:
            job = await jobs.wait((await jobs.submit("work", 1, ttl=5)).id, timeout=5)
        assert job.finished_at is not None
        assert job.expires_at == job.finished_at + timedelta(seconds=5)

    async def test_sweep_removes_only_expired_jobs_with_artifacts(
        self, clock: FakeClock, make_manager: ManagerFactory
    ) -> None:
        """sweep() deletes expired jobs through the DeletePolicy and reports what it did."""
        blobs = MemoryBlobStore()
        jobs = make_manager(handlers=HANDLERS, clock=clock, blobs=blobs)
        async with jobs:
            short = await jobs.wait((await jobs.submit("work", 1, ttl=10)).id, timeout=5)
            long = await jobs.wait((await jobs.submit("work", 2, ttl=100)).id, timeout=5)
            assert await jobs.sweep() == type(await jobs.sweep())()  # nothing due yet
            clock.advance(11)
            report = await jobs.sweep()
            assert (report.expired, report.artifacts_deleted) == (1, 1)
            with pytest.raises(JobNotFound):
                await jobs.get(short.id)
            assert await blobs.list(f"jobs/{short.id}/") == []
            assert (await jobs.get(long.id)).id == long.id
            [record] = await jobs.audit(short.id)
            assert (record.action, record.actor_id) == ("expire", SWEEPER)

    async def test_expiry_under_soft_policy_soft_deletes(
        self, clock: FakeClock, make_manager: ManagerFactory
    ) -> None:
        """With a soft DeletePolicy, expired jobs are soft-deleted (kept for audit), then purged later."""
        jobs = make_manager(
            handlers=HANDLERS,
            clock=clock,
            delete_policy=DeletePolicy(mode="soft", purge_soft_deleted_after=timedelta(days=1)),
        )
        async with jobs:
            job = await jobs.wait((await jobs.submit("work", 1, ttl=1)).id, timeout=5)
            clock.advance(2)
            assert (await jobs.sweep()).expired == 1
            assert (await jobs.get(job.id, include_deleted=True)).deleted_at is not None
            assert (await jobs.sweep()).expired == 0, "a soft-deleted job does not expire twice"
            clock.advance(timedelta(days=1, seconds=1))
            assert (await jobs.sweep()).purged == 1

    async def test_periodic_sweeper_runs_inside_async_with(
        self, clock: FakeClock, make_manager: ManagerFactory
    ) -> None:
        """The sweeper runs every sweep_interval while the manager is open."""
        jobs = make_manager(handlers=HANDLERS, clock=clock, sweep_interval=0.01)
        async with jobs:
            job = await jobs.wait((await jobs.submit("work", 1, ttl=1)).id, timeout=5)
            async with jobs.subscribe(job_id=job.id) as events:
                clock.advance(5)
                with anyio.fail_after(5):
                    async for event in events:
                        if event.type == "deleted":
                            break
            with pytest.raises(JobNotFound):
                await jobs.get(job.id)

    async def test_sweep_cost_follows_expired_jobs_not_kept_jobs(
        self, clock: FakeClock, make_manager: ManagerFactory
    ) -> None:
        """The sweep asks the store only for due jobs (index ordered by expiry)."""
        store = make_manager.new_store()
        calls: list[int] = []
        original = store.expired

        async def counting(now: Any, limit: int) -> Any:
            found = await original(now, limit)
            calls.append(len(found))
            return found

        store.expired = counting  # type: ignore[method-assign]
        jobs = make_manager(
            handlers=HANDLERS, clock=clock, store=store, retention=Retention(completed=timedelta(days=365))
        )
        async with jobs:
            for i in range(30):
                await jobs.wait((await jobs.submit("work", i, ttl=10 if i < 3 else None)).id, timeout=5)
            clock.advance(11)
            assert (await jobs.sweep()).expired == 3
        assert calls[0] == 3


class TestAuditRetention:
    async def test_old_audit_records_are_removed(
        self, clock: FakeClock, make_manager: ManagerFactory
    ) -> None:
        """Audit records older than audit_retention are removed by the sweeper."""
        jobs = make_manager(handlers=HANDLERS, clock=clock, audit_retention=timedelta(days=90))
        async with jobs:
            first = await jobs.wait((await jobs.submit("work", 1)).id, timeout=5)
            await jobs.delete(first.id)
            clock.advance(timedelta(days=60))
            second = await jobs.wait((await jobs.submit("work", 2)).id, timeout=5)
            await jobs.delete(second.id)
            clock.advance(timedelta(days=31))
            report = await jobs.sweep()
            assert report.audit_removed == 1
            assert [r.job_id for r in await jobs.audit()] == [second.id]
