"""Time and second chances, through the manager on every store: delayed jobs, retries with
backoff, manual retry, idempotency keys, paused kinds and cron schedules."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from jobkit import (
    Actor,
    AuditAction,
    EventType,
    InvalidInput,
    InvalidState,
    JobContext,
    JobEvent,
    JobManager,
    JobNotFound,
    JobStatus,
    PermissionDenied,
    Retry,
)
from jobkit.stores import open_store
from jobkit.testing import FakeClock
from managers import ManagerFactory

pytestmark = pytest.mark.anyio

ADMIN = Actor("root", roles=frozenset({"admin"}))
NO_JITTER = {"jitter": 0.0}


async def noop(ctx: JobContext, payload: Any) -> Any:
    return payload


@asynccontextmanager
async def collected(jobs: JobManager, **kwargs: Any) -> AsyncIterator[list[JobEvent]]:
    """Every event the manager published while the block ran, in order (filled at its end:
    this process's events are in the stream's buffer as soon as they are published)."""
    events: list[JobEvent] = []
    async with jobs.subscribe(**kwargs) as stream:
        try:
            yield events
        finally:
            events.extend(stream._buffer)


class Flaky:
    """A handler that fails ``failures`` times (with ``error``), then returns ``"done"``."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0
        self.started_at: list[datetime] = []

    async def __call__(self, ctx: JobContext, payload: Any) -> str:
        self.calls += 1
        self.started_at.append(datetime.now(UTC))
        if self.calls <= self.failures:
            raise self.error(f"try {self.calls} failed")
        return "done"


# -- delayed jobs ------------------------------------------------------------------------


class TestDelayed:
    async def test_a_delayed_job_waits_scheduled_and_is_promoted_when_due(
        self, make_manager: ManagerFactory
    ) -> None:
        """delay= makes a scheduled job with run_at; it is not pending, has no position, counts
        as scheduled; a sweep before its time leaves it; one after makes it pending, keeping
        its priority, announced as requeued."""
        clock = FakeClock()
        jobs = make_manager(handlers={"work": noop}, concurrency=0, clock=clock)
        async with jobs:
            job = await jobs.submit("work", {"n": 1}, delay=60, priority=7)
            assert job.status is JobStatus.SCHEDULED
            assert job.run_at == clock.now + timedelta(seconds=60)
            assert await jobs.position(job.id) is None
            assert (await jobs.counts())[JobStatus.SCHEDULED] == 1
            assert (await jobs.list(status="scheduled")).items == (job,)
            clock.advance(59)
            assert (await jobs.sweep()).promoted == 0
            assert (await jobs.get(job.id)).status is JobStatus.SCHEDULED
            clock.advance(1)
            async with collected(jobs) as events:
                assert (await jobs.sweep()).promoted == 1
            due = await jobs.get(job.id)
            assert due.status is JobStatus.PENDING
            assert due.run_at is None
            assert due.priority == 7
            assert await jobs.position(job.id) == 1
            assert [(e.type, e.data.get("reason")) for e in events] == [(EventType.REQUEUED, "due")]

    async def test_run_at_in_the_past_is_due_at_once_and_runs(self, make_manager: ManagerFactory) -> None:
        """A run_at already passed is scheduled and promoted straight away: the job runs."""
        jobs = make_manager(handlers={"work": noop})
        async with jobs:
            job = await jobs.submit("work", 5, run_at=datetime.now(UTC) - timedelta(hours=1))
            done = await jobs.wait(job.id, timeout=10)
            assert done.status is JobStatus.COMPLETED
            assert done.result == 5

    async def test_a_delayed_job_starts_at_its_time_not_before(self, make_manager: ManagerFactory) -> None:
        """With the real clock and no sweep, a job with delay=0.2 starts at (not before) its
        run_at: the timers wake for it."""
        started: list[datetime] = []

        async def record(ctx: JobContext, payload: Any) -> None:
            started.append(datetime.now(UTC))

        jobs = make_manager(handlers={"work": record})
        async with jobs:
            job = await jobs.submit("work", delay=0.2)
            assert job.run_at is not None
            await jobs.wait(job.id, timeout=10)
            assert started[0] >= job.run_at

    async def test_run_at_may_be_given_in_any_time_zone(self, make_manager: ManagerFactory) -> None:
        """An aware run_at in another zone is stored as the same instant, in UTC."""
        from zoneinfo import ZoneInfo

        jobs = make_manager(handlers={"work": noop}, concurrency=0)
        async with jobs:
            at = datetime(2099, 6, 1, 9, 30, tzinfo=ZoneInfo("Europe/Berlin"))
            job = await jobs.submit("work", run_at=at)
            assert job.run_at == at
            assert job.run_at is not None
            assert job.run_at.tzinfo is UTC
            assert (await jobs.get(job.id)).run_at == at

    async def test_cancelling_a_scheduled_job_is_immediate_and_it_never_runs(
        self, make_manager: ManagerFactory
    ) -> None:
        """Cancel on a scheduled job ends it cancelled at once; its time coming changes nothing."""
        clock = FakeClock()
        jobs = make_manager(handlers={"work": noop}, concurrency=0, clock=clock)
        async with jobs:
            job = await jobs.submit("work", delay=10)
            cancelled = await jobs.cancel(job.id, reason="not now")
            assert cancelled.status is JobStatus.CANCELLED
            assert cancelled.run_at is None
            assert cancelled.finished_at == clock.now
            clock.advance(60)
            assert (await jobs.sweep()).promoted == 0
            assert (await jobs.get(job.id)).status is JobStatus.CANCELLED

    async def test_a_scheduled_job_is_not_deletable_by_default(self, make_manager: ManagerFactory) -> None:
        """Like a pending job, a scheduled one must be cancelled before it can be deleted."""
        jobs = make_manager(handlers={"work": noop}, concurrency=0)
        async with jobs:
            job = await jobs.submit("work", delay=3600)
            with pytest.raises(InvalidState, match=r"Cannot delete scheduled job\. Use cancel instead\."):
                await jobs.delete(job.id)


# -- retries -----------------------------------------------------------------------------


class TestRetries:
    async def test_a_handler_retry_runs_the_job_again_after_backoff_until_it_succeeds(
        self, make_manager: ManagerFactory
    ) -> None:
        """Two failures then success: two scheduled events (run_at, next attempt), three
        starts, each after its backoff; the job ends completed with attempts 3."""
        flaky = Flaky(failures=2)
        jobs = make_manager()
        jobs.register("flaky", flaky, retry=Retry(attempts=3, backoff=0.05, factor=2.0, **NO_JITTER))
        async with jobs, collected(jobs) as events:
            job = await jobs.submit("flaky")
            assert job.max_attempts == 3
            done = await jobs.wait(job.id, timeout=10)
        assert done.status is JobStatus.COMPLETED
        assert done.result == "done"
        assert done.attempts == 3
        assert flaky.calls == 3
        scheduled = [e for e in events if e.type is EventType.SCHEDULED]
        assert [e.data["attempt"] for e in scheduled] == [2, 3]
        assert [e.data["error"] for e in scheduled] == [
            "ConnectionError: try 1 failed",
            "ConnectionError: try 2 failed",
        ]
        run_ats = [datetime.fromisoformat(e.data["run_at"]) for e in scheduled]
        assert flaky.started_at[1] >= run_ats[0]
        assert flaky.started_at[2] >= run_ats[1]
        assert flaky.started_at[2] - flaky.started_at[1] >= timedelta(seconds=0.1)  # 0.05 * 2

    async def test_failures_past_the_attempts_end_failed_with_the_last_error(
        self, make_manager: ManagerFactory
    ) -> None:
        """A job that always fails stops after `attempts` starts, failed, with the last error."""
        flaky = Flaky(failures=10)
        jobs = make_manager()
        jobs.register("flaky", flaky, retry=Retry(attempts=2, backoff=0.01, **NO_JITTER))
        async with jobs:
            done = await jobs.wait((await jobs.submit("flaky")).id, timeout=10)
        assert done.status is JobStatus.FAILED
        assert done.attempts == 2
        assert done.error == "ConnectionError: try 2 failed"
        assert flaky.calls == 2

    async def test_an_exception_outside_on_fails_at_once(self, make_manager: ManagerFactory) -> None:
        """Only the exceptions in `on` (and their subclasses) are retried."""
        flaky = Flaky(failures=1, error=ValueError)
        jobs = make_manager()
        jobs.register("flaky", flaky, retry=Retry(attempts=5, backoff=0.01, on=(OSError,)))
        async with jobs:
            done = await jobs.wait((await jobs.submit("flaky")).id, timeout=10)
        assert done.status is JobStatus.FAILED
        assert done.attempts == 1

    async def test_a_submit_retry_wins_over_the_handlers(self, make_manager: ManagerFactory) -> None:
        """retry= at submit replaces the handler's Retry (here: no second attempt)."""
        flaky = Flaky(failures=1)
        jobs = make_manager()
        jobs.register("flaky", flaky, retry=Retry(attempts=5, backoff=0.01))
        async with jobs:
            job = await jobs.submit("flaky", retry=Retry(attempts=1))
            assert job.max_attempts == 1
            assert job.retry == Retry(attempts=1)
            done = await jobs.wait(job.id, timeout=10)
        assert done.status is JobStatus.FAILED
        assert flaky.calls == 1

    async def test_a_timeout_counts_as_a_failure(self, make_manager: ManagerFactory) -> None:
        """A job that times out is retried like a failure (TimeoutError is an Exception)."""
        calls: list[int] = []

        async def slow_then_quick(ctx: JobContext, payload: Any) -> str:
            calls.append(1)
            if len(calls) == 1:
                await ctx.token.wait()
                await ctx.checkpoint()
            return "quick"

        jobs = make_manager(handlers={"slow": slow_then_quick})
        async with jobs:
            job = await jobs.submit("slow", timeout=0.05, retry=Retry(attempts=2, backoff=0.01))
            done = await jobs.wait(job.id, timeout=10)
        assert done.status is JobStatus.COMPLETED
        assert done.attempts == 2
        assert done.error is None  # succeeded in the end: the timeout of attempt 1 is cleared

    async def test_a_cancel_during_a_retrying_job_ends_it_cancelled(
        self, make_manager: ManagerFactory
    ) -> None:
        """A job cancelled while waiting for its next attempt is cancelled at once."""
        flaky = Flaky(failures=5)
        jobs = make_manager()
        jobs.register("flaky", flaky, retry=Retry(attempts=5, backoff=3600))
        async with jobs, jobs.subscribe() as events:
            job = await jobs.submit("flaky")
            with anyio.fail_after(10):
                async for event in events:
                    if event.type is EventType.SCHEDULED:
                        break
            waiting = await jobs.get(job.id)
            assert waiting.status is JobStatus.SCHEDULED
            assert waiting.attempts == 1
            assert (await jobs.cancel(job.id)).status is JobStatus.CANCELLED
        assert flaky.calls == 1

    async def test_a_handler_retry_applies_to_jobs_submitted_where_it_was_unknown(
        self, make_manager: ManagerFactory
    ) -> None:
        """A web process declares the kind (no Retry known there); the worker process's
        handler Retry still applies and raises max_attempts."""
        store = make_manager.new_store()
        web = make_manager(store=store, concurrency=0)
        web.declare("flaky")
        async with web:
            job = await web.submit("flaky")
            assert job.max_attempts == 1
        flaky = Flaky(failures=1)
        worker = make_manager(store=store)
        worker.register("flaky", flaky, retry=Retry(attempts=3, backoff=0.01))
        async with worker:
            done = await worker.wait(job.id, timeout=10)
        assert done.status is JobStatus.COMPLETED
        assert done.attempts == 2
        assert done.max_attempts == 3


# -- manual retry ------------------------------------------------------------------------


class TestManualRetry:
    async def test_a_failed_job_is_retried_once_more_audited_and_its_error_kept_until_then(
        self, make_manager: ManagerFactory
    ) -> None:
        """retry() puts a failed job back to pending with one more attempt; finished_at and
        expires_at are cleared, the error stays until the next outcome; one audit record."""
        flaky = Flaky(failures=1)
        jobs = make_manager(handlers={"flaky": flaky}, concurrency=1)
        async with jobs:
            failed = await jobs.wait((await jobs.submit("flaky")).id, timeout=10)
            assert failed.status is JobStatus.FAILED
            async with collected(jobs, job_id=failed.id) as events:
                again = await jobs.retry(failed.id, actor=Actor("ops"))
                assert again.status is JobStatus.PENDING or again.status is JobStatus.RUNNING
                assert again.finished_at is None
                assert again.expires_at is None
                assert again.error == "ConnectionError: try 1 failed"
                assert again.max_attempts == 2
                done = await jobs.wait(failed.id, timeout=10)
            assert done.status is JobStatus.COMPLETED
            assert done.attempts == 2
            assert events[0].type is EventType.REQUEUED
            assert events[0].data["reason"] == "retry"
            [record] = [r for r in await jobs.audit(failed.id) if r.action is AuditAction.RETRY]
            assert record.actor_id == "ops"
            assert record.details["from_status"] == "failed"
            assert record.details["to_status"] == "pending"

    async def test_a_cancelled_job_retried_for_later_is_scheduled(self, make_manager: ManagerFactory) -> None:
        """retry(run_at=...) makes the job scheduled until then."""
        clock = FakeClock()
        jobs = make_manager(handlers={"work": noop}, concurrency=0, clock=clock)
        async with jobs:
            job = await jobs.cancel((await jobs.submit("work")).id)
            later = clock.now + timedelta(hours=1)
            again = await jobs.retry(job.id, run_at=later)
            assert again.status is JobStatus.SCHEDULED
            assert again.run_at == later
            assert again.cancel_reason is None
            clock.advance(3600)
            assert (await jobs.sweep()).promoted == 1

    @pytest.mark.parametrize("status", ["completed", "pending", "scheduled"])
    async def test_only_failed_and_cancelled_jobs_can_be_retried(
        self, status: str, make_manager: ManagerFactory
    ) -> None:
        """Retrying a completed job says to submit a new one; others are not finished."""
        jobs = make_manager(handlers={"work": noop}, concurrency=1 if status == "completed" else 0)
        async with jobs:
            job = await jobs.submit("work", delay=3600 if status == "scheduled" else None)
            if status == "completed":
                job = await jobs.wait(job.id, timeout=10)
            message = "Submit a new job" if status == "completed" else "only failed and cancelled"
            with pytest.raises(InvalidState, match=message):
                await jobs.retry(job.id)
            assert (await jobs.get(job.id)).version == job.version

    async def test_another_tenants_job_is_not_found(self, make_manager: ManagerFactory) -> None:
        """Retry follows the tenant rule: another tenant's job does not exist for the actor."""
        jobs = make_manager(handlers={"work": noop}, concurrency=0)
        async with jobs:
            job = await jobs.cancel((await jobs.submit("work", actor=Actor("a", tenant="t1"))).id)
            with pytest.raises(JobNotFound):
                await jobs.retry(job.id, actor=Actor("b", tenant="t2"))
            with pytest.raises(InvalidInput, match="timezone-aware"):
                await jobs.retry(job.id, run_at=datetime(2030, 1, 1))


# -- idempotency keys --------------------------------------------------------------------


class TestIdempotency:
    async def test_the_same_key_returns_the_same_job(self, make_manager: ManagerFactory) -> None:
        """A repeated submit with a key returns the stored job; submit_once says it is not new;
        another tenant's key is another key; once deleted, the key is free."""
        jobs = make_manager(handlers={"work": noop}, concurrency=0)
        async with jobs:
            first, created = await jobs.submit_once("work", {"n": 1}, idempotency_key="order-1")
            assert created
            again, created = await jobs.submit_once("work", {"n": 1}, idempotency_key="order-1")
            assert not created
            assert again == first
            other = await jobs.submit(
                "work", {"n": 1}, idempotency_key="order-1", actor=Actor("a", tenant="t")
            )
            assert other.id != first.id
            assert len(await jobs.list(limit=100)) == 2  # one per tenant
            await jobs.cancel(first.id)
            await jobs.delete(first.id)
            fresh = await jobs.submit("work", {"n": 1}, idempotency_key="order-1")
            assert fresh.id not in (first.id, other.id)

    @pytest.mark.parametrize(
        ("kind", "payload", "what"), [("other", {"n": 1}, "kind"), ("work", {"n": 2}, "payload")]
    )
    async def test_a_key_reused_for_another_job_is_refused(
        self, kind: str, payload: Any, what: str, make_manager: ManagerFactory
    ) -> None:
        """The same key with another kind or payload is InvalidInput; nothing more is stored."""
        jobs = make_manager(handlers={"work": noop, "other": noop}, concurrency=0)
        async with jobs:
            first = await jobs.submit("work", {"n": 1}, idempotency_key="k")
            with pytest.raises(InvalidInput, match=f"another {what}"):
                await jobs.submit(kind, payload, idempotency_key="k")
            assert [job.id for job in await jobs.list()] == [first.id]

    async def test_concurrent_submits_with_one_key_store_one_job(self, make_manager: ManagerFactory) -> None:
        """Twenty submits at once, from two managers sharing the store: one job."""
        store_a = make_manager.new_store()
        managers = [make_manager(store=store_a, handlers={"work": noop}, concurrency=0)]
        if make_manager.kind != "memory":  # a second connection to the same database
            managers.append(make_manager(store=_same(make_manager, store_a), handlers={"work": noop}))
        ids: list[str] = []
        async with managers[0], managers[-1] if len(managers) > 1 else _nothing():

            async def submit(i: int) -> None:
                ids.append((await managers[i % len(managers)].submit("work", "x", idempotency_key="k")).id)

            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(submit, i)
            assert len(set(ids)) == 1
            assert len(await managers[0].list(limit=100)) == 1


def _same(make_manager: ManagerFactory, store: Any) -> Any:
    """Another store object on the database of ``store`` (a second connection)."""
    from jobkit.stores import SQLiteStore

    if isinstance(store, SQLiteStore):
        return SQLiteStore(store.path)
    from jobkit.stores.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    return PostgresStore(store.dsn, schema=store.schema)


@asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


# -- paused kinds ------------------------------------------------------------------------


class TestPause:
    async def test_a_paused_kind_waits_while_others_run_and_resumes(
        self, make_manager: ManagerFactory
    ) -> None:
        """No worker starts a paused kind's jobs, even of the highest priority; other kinds go
        on; resume lets them run. Both are audited without a job, and admin-only."""
        jobs = make_manager(handlers={"report": noop, "mail": noop}, concurrency=1)
        async with jobs:
            await jobs.pause("report", actor=ADMIN)
            assert await jobs.paused() == frozenset({"report"})
            held = await jobs.submit("report", priority=100)
            mail = await jobs.submit("mail")
            assert (await jobs.wait(mail.id, timeout=10)).status is JobStatus.COMPLETED
            assert (await jobs.get(held.id)).status is JobStatus.PENDING
            with pytest.raises(PermissionDenied):
                await jobs.resume("report", actor=Actor("someone"))
            await jobs.resume("report", actor=ADMIN)
            assert (await jobs.wait(held.id, timeout=10)).status is JobStatus.COMPLETED
            assert await jobs.paused() == frozenset()
            records = [r for r in await jobs.audit() if r.job_id is None]
            assert [(r.action, r.details["kind"], r.actor_id) for r in records] == [
                (AuditAction.RESUME, "report", "root"),
                (AuditAction.PAUSE, "report", "root"),
            ]

    async def test_pausing_is_stored_for_every_manager_of_the_store(
        self, make_manager: ManagerFactory
    ) -> None:
        """A kind paused by one manager is paused for another one on the same store (and after
        a restart): its jobs wait there while the other kind's jobs run."""
        if make_manager.kind == "memory":
            pytest.skip("a MemoryStore lives in one manager's process only")
        store = make_manager.new_store()
        admin = make_manager(store=store, concurrency=0)
        admin.declare("report")
        async with admin:
            await admin.pause("report")
            held = await admin.submit("report", priority=100)
        worker = make_manager(store=_same(make_manager, store), handlers={"report": noop, "mail": noop})
        async with worker:
            assert await worker.paused() == frozenset({"report"})
            mail = await worker.submit("mail")
            await worker.wait(mail.id, timeout=10)
            assert (await worker.get(held.id)).status is JobStatus.PENDING

    async def test_unknown_kinds_cannot_be_paused(self, make_manager: ManagerFactory) -> None:
        """A kind with no handler, no declaration and no job here is InvalidInput; nothing is
        stored or audited."""
        jobs = make_manager(handlers={"work": noop}, concurrency=0)
        async with jobs:
            with pytest.raises(InvalidInput, match="Unknown job kind 'nope'"):
                await jobs.pause("nope")
            assert await jobs.paused() == frozenset()
            assert await jobs.audit() == []


# -- schedules ---------------------------------------------------------------------------


BERLIN_MORNING = datetime(2030, 1, 1, 1, 0, tzinfo=UTC)  # 02:00 in Berlin (UTC+1 in winter)


class TestSchedules:
    async def test_a_schedule_fires_once_per_fire_time_and_coalesces_missed_ones(
        self, make_manager: ManagerFactory
    ) -> None:
        """A nightly 03:00 Berlin schedule: next_run_at is 02:00 UTC; a sweep after it submits
        one job with the schedule's key and label; three missed nights make one job; the
        schedule moves past now each time."""
        clock = FakeClock(BERLIN_MORNING)
        jobs = make_manager(handlers={"report": noop}, concurrency=0, clock=clock)
        async with jobs:
            item = await jobs.schedule(
                "nightly", "report", {"x": 1}, cron="0 3 * * *", timezone="Europe/Berlin", priority=4
            )
            assert item.next_run_at == datetime(2030, 1, 1, 2, 0, tzinfo=UTC)
            assert (await jobs.sweep()).fired == 0
            clock.advance(timedelta(hours=1))
            assert (await jobs.sweep()).fired == 1
            assert (await jobs.sweep()).fired == 0
            [job] = (await jobs.list()).items
            assert job.idempotency_key == "schedule:nightly:2030-01-01T02:00:00+00:00"
            assert job.labels == {"jobkit.schedule": "nightly"}
            assert (job.kind, job.payload, job.priority) == ("report", {"x": 1}, 4)
            [moved] = await jobs.schedules()
            assert moved.next_run_at == datetime(2030, 1, 2, 2, 0, tzinfo=UTC)
            clock.advance(timedelta(days=3))
            assert (await jobs.sweep()).fired == 1  # three nights missed: one job
            assert len(await jobs.list()) == 2
            [moved] = await jobs.schedules()
            assert moved.next_run_at == datetime(2030, 1, 5, 2, 0, tzinfo=UTC)

    async def test_two_managers_firing_at_once_store_one_job(self, make_manager: ManagerFactory) -> None:
        """Two managers on one store sweep the due schedule at the same moment: one job."""
        if make_manager.kind == "memory":
            pytest.skip("a MemoryStore lives in one manager's process only")
        clock = FakeClock(BERLIN_MORNING)
        store = make_manager.new_store()
        first = make_manager(store=store, handlers={"report": noop}, concurrency=0, clock=clock)
        second = make_manager(
            store=_same(make_manager, store), handlers={"report": noop}, concurrency=0, clock=clock
        )
        async with first, second:
            await first.schedule("nightly", "report", cron="0 3 * * *", timezone="Europe/Berlin")
            clock.advance(timedelta(hours=2))
            fired: list[int] = []

            async def sweep(jobs: JobManager) -> None:
                fired.append((await jobs.sweep()).fired)

            async with anyio.create_task_group() as tg:
                tg.start_soon(sweep, first)
                tg.start_soon(sweep, second)
            assert sum(fired) == 1
            assert len(await first.list()) == 1

    async def test_the_timers_fire_a_due_schedule_without_a_sweep(self, make_manager: ManagerFactory) -> None:
        """Between sweeps, the timers notice a due schedule (within poll_interval) and fire it."""
        clock = FakeClock(BERLIN_MORNING)
        jobs = make_manager(handlers={"report": noop}, concurrency=0, clock=clock, poll_interval=0.02)
        async with jobs:
            await jobs.schedule("hourly", "report", cron="0 * * * *")
            async with jobs.subscribe() as events:
                clock.advance(timedelta(hours=1))
                with anyio.fail_after(10):
                    event = await anext(aiter(events))
            assert event.type is EventType.SUBMITTED
            assert event.data["schedule"] == "hourly"

    async def test_schedules_are_per_tenant_replaced_by_name_removed_and_audited(
        self, make_manager: ManagerFactory
    ) -> None:
        """schedule() of an existing name replaces it; schedules() shows the tenant's own;
        unschedule() of an unknown name is JobNotFound; each change leaves an audit record."""
        jobs = make_manager(handlers={"report": noop}, concurrency=0)
        acme = Actor("boss", tenant="acme", roles=frozenset({"admin"}))
        async with jobs:
            await jobs.schedule("nightly", "report", cron="0 3 * * *")
            await jobs.schedule("nightly", "report", cron="0 3 * * *", actor=acme)
            replaced = await jobs.schedule("nightly", "report", cron="30 4 * * 1-5", actor=acme)
            assert [s.cron for s in await jobs.schedules(actor=acme)] == ["30 4 * * 1-5"]
            assert {(s.tenant, s.cron) for s in await jobs.schedules()} == {
                (None, "0 3 * * *"),
                ("acme", "30 4 * * 1-5"),
            }
            assert replaced.tenant == "acme"
            await jobs.unschedule("nightly", actor=acme)
            with pytest.raises(JobNotFound, match="No schedule named 'nightly'"):
                await jobs.unschedule("nightly", actor=acme)
            assert [s.tenant for s in await jobs.schedules()] == [None]
            actions = [r.action for r in await jobs.audit(actor=ADMIN)]
            assert actions == [AuditAction.UNSCHEDULE, *[AuditAction.SCHEDULE] * 3]

    async def test_schedules_are_admin_only(self, make_manager: ManagerFactory) -> None:
        """A non-admin may read the schedules but not create or remove them."""
        jobs = make_manager(handlers={"report": noop}, concurrency=0)
        user = Actor("u")
        async with jobs:
            with pytest.raises(PermissionDenied):
                await jobs.schedule("nightly", "report", cron="0 3 * * *", actor=user)
            with pytest.raises(PermissionDenied):
                await jobs.unschedule("nightly", actor=user)
            assert await jobs.schedules(actor=user) == []


# -- across processes --------------------------------------------------------------------


CHILD = Path(__file__).with_name("scheduling_child.py")


async def _race(url: str, mode: str, arg: str, processes: int = 4) -> list[str]:
    """Start ``processes`` children, let them all write at once, return their answers."""
    children = [
        subprocess.Popen(
            [sys.executable, str(CHILD), url, mode, arg],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for child in children:  # every child has opened the store and waits
            assert child.stdout is not None
            assert await anyio.to_thread.run_sync(child.stdout.readline) == "ready\n"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        answers = []
        for child in children:
            out, _ = await anyio.to_thread.run_sync(child.communicate, None, 60)
            assert child.returncode == 0
            answers.append(out.strip())
        return answers
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the children are what is tested
class TestAcrossProcesses:
    @pytest.mark.store("sqlite", reason="processes share a SQLite file here (PostgreSQL has its own)")
    async def test_processes_submitting_one_key_at_once_store_one_job(
        self, make_manager: ManagerFactory, tmp_path: Path
    ) -> None:
        """Four processes submit with the same key at the same moment: one job, one id."""
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
        jobs = make_manager(store=open_store(url), concurrency=0)
        async with jobs:  # the file exists, migrated, before the children race
            pass
        ids = await _race(url, "submit", "order-7")
        assert len(set(ids)) == 1
        jobs = make_manager(store=open_store(url), concurrency=0)
        async with jobs:
            assert [job.id for job in await jobs.list()] == ids[:1]

    @pytest.mark.store("sqlite", reason="processes share a SQLite file here (PostgreSQL has its own)")
    async def test_processes_sweeping_a_due_schedule_at_once_fire_it_once(
        self, make_manager: ManagerFactory, tmp_path: Path
    ) -> None:
        """Four processes find a schedule due (SQLite grants every one the sweeper section;
        their timers see it as they start, then each sweeps): one job for the fire time."""
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
        clock = FakeClock(BERLIN_MORNING)
        jobs = make_manager(store=open_store(url), concurrency=0, clock=clock)
        jobs.declare("work")
        async with jobs:
            await jobs.schedule("nightly", "work", cron="0 3 * * *", timezone="Europe/Berlin")
        fired = await _race(url, "sweep", (BERLIN_MORNING + timedelta(hours=2)).isoformat())
        assert sum(int(count) for count in fired) <= 1  # the timers may have fired it first
        jobs = make_manager(store=open_store(url), concurrency=0)
        async with jobs:
            [job] = (await jobs.list()).items
            assert job.idempotency_key == "schedule:nightly:2030-01-01T02:00:00+00:00"
