"""The JobStore conformance suite: every store, ours or yours, must pass it.

Subclass :class:`JobStoreSuite` in your tests and provide a ``store`` fixture that
yields an opened store, empty at the start of each test::

    import pytest
    from jobkit.testing import JobStoreSuite

    class TestMyStore(JobStoreSuite):
        @pytest.fixture
        async def store(self, tmp_path):
            store = MyStore(tmp_path / "jobs")
            await store.open()
            yield store
            await store.close()

The tests are async and run through anyio's pytest plugin, on whatever ``anyio_backend``
your test session provides. Tests of the optional members (``claim_many``, ``apply``,
``exclusive``, ``notifier``: see :mod:`jobkit.abc`) skip, saying so, when the store has
no such member.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import attrs
import pytest

from .. import _machine as machine
from .._errors import JobkitError
from .._policies import Retention
from .._records import AuditAction, AuditRecord, EventType, Job, JobEvent, JobStatus, Retry, Schedule
from ..abc import Change, JobStore, Note, NoteKind, Notifier

__all__ = ["JobStoreSuite"]

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def make_job(**changes: Any) -> Job:
    """A pending job with sensible defaults; ``changes`` override any field."""
    fields: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "kind": "work",
        "status": JobStatus.PENDING,
        "payload": {"n": 1, "nested": [1, 2.5, None, True, "x"]},
        "created_at": T0,
    }
    fields.update(changes)
    return Job(**fields)


def finished(
    job: Job, at: datetime, *, status: JobStatus = JobStatus.COMPLETED, keep: float | None = None
) -> Job:
    """``job`` as a finished job at ``at`` that expires ``keep`` seconds later."""
    return attrs.evolve(
        job,
        status=status,
        started_at=at,
        finished_at=at,
        attempts=1,
        expires_at=None if keep is None else at + timedelta(seconds=keep),
        version=job.version + 1,
    )


def audit_record(job_id: str | None, **changes: Any) -> AuditRecord:
    """An audit record about ``job_id``; ``changes`` override any field."""
    fields: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "at": T0,
        "action": AuditAction.DELETE,
        "actor_id": "u1",
        "tenant": None,
        "job_id": job_id,
        "details": {"artifacts_deleted": 0},
    }
    fields.update(changes)
    return AuditRecord(**fields)


def optional(store: object, name: str) -> Any:
    """The optional member ``name`` of ``store``; skips the test when the store has none."""
    member = getattr(store, name, None)
    if member is None:
        pytest.skip(f"{type(store).__name__} has no optional {name}() (see jobkit.abc)")
    return member


def assert_same_fields(actual: Job | None, expected: Job) -> None:
    """``actual`` equals ``expected`` field by field; the message names the first difference."""
    assert actual is not None, "expected a job, got None"
    for field in attrs.fields(Job):
        got, want = getattr(actual, field.name), getattr(expected, field.name)
        assert got == want, f"field {field.name!r}: store has {got!r}, machine.start gives {want!r}"


class SchedulingSuite:
    """Scheduled jobs, idempotency keys, paused kinds and cron schedules: part of the
    :class:`jobkit.abc.JobStore` contract (:class:`JobStoreSuite` includes it)."""

    pytestmark = pytest.mark.anyio

    # -- scheduled jobs ----------------------------------------------------------------

    async def test_replace_writes_run_at_and_max_attempts(self, store: JobStore) -> None:
        """A retry changes run_at and max_attempts through replace(): both are stored."""
        job = finished(make_job(), T0, status=JobStatus.FAILED)
        await store.insert(job)
        later = T0 + timedelta(minutes=5)
        retried = machine.retry(job, T0, run_at=later)
        assert await store.replace(retried, expected_version=job.version)
        assert await store.get(job.id) == retried
        assert retried.max_attempts == 2
        assert retried.run_at == later

    async def test_promote_due_makes_due_jobs_pending_earliest_first(self, store: JobStore) -> None:
        """promote_due() takes scheduled jobs whose run_at passed, earliest first, up to the
        limit, as machine.due() makes them; later ones and other statuses stay."""
        times = [T0 + timedelta(seconds=s) for s in (30, 10, 20, 40)]
        jobs = [make_job(status=JobStatus.SCHEDULED, run_at=at, priority=i) for i, at in enumerate(times)]
        for job in jobs:
            await store.insert(job)
        await store.insert(make_job())  # pending: never "promoted"
        assert await store.next_due() == times[1]
        now = T0 + timedelta(seconds=30)
        first = await store.promote_due(now, 2)
        assert [job.id for job in first] == [jobs[1].id, jobs[2].id]
        for got, job in zip(first, (jobs[1], jobs[2]), strict=True):
            assert_same_fields(got, machine.due(job))
            assert_same_fields(await store.get(job.id), machine.due(job))
        assert [job.id for job in await store.promote_due(now, 10)] == [jobs[0].id]
        assert await store.promote_due(now, 10) == []
        assert await store.next_due() == times[3]
        assert (await store.get(jobs[3].id)).status is JobStatus.SCHEDULED  # type: ignore[union-attr]

    async def test_promote_due_leaves_cancelled_and_rescheduled_jobs(self, store: JobStore) -> None:
        """A scheduled job cancelled, or moved to a later run_at, is not promoted at its old time."""
        gone = make_job(status=JobStatus.SCHEDULED, run_at=T0)
        moved = make_job(status=JobStatus.SCHEDULED, run_at=T0)
        for job in (gone, moved):
            await store.insert(job)
        await store.replace(machine.cancel(gone, T0, Retention()), expected_version=gone.version)
        later = attrs.evolve(moved, run_at=T0 + timedelta(hours=1), version=moved.version + 1)
        await store.replace(later, expected_version=moved.version)
        assert await store.next_due() == later.run_at
        assert await store.promote_due(T0 + timedelta(minutes=1), 10) == []
        assert [job.id for job in await store.promote_due(T0 + timedelta(hours=1), 10)] == [moved.id]
        assert await store.next_due() is None

    async def test_promoted_jobs_are_claimed_in_priority_order(self, store: JobStore) -> None:
        """Once due, a job keeps its priority: claim order applies from then on."""
        low = make_job(status=JobStatus.SCHEDULED, run_at=T0, priority=0)
        high = make_job(status=JobStatus.SCHEDULED, run_at=T0 + timedelta(seconds=1), priority=9)
        waiting = make_job(priority=5)
        for job in (low, waiting, high):
            await store.insert(job)
        assert await store.claim(now=T0, worker_id="w", lease_until=T0) == machine.start(waiting, T0)
        await store.promote_due(T0 + timedelta(seconds=1), 10)
        order = [await store.claim(now=T0, worker_id="w", lease_until=T0) for _ in range(3)]
        assert [None if job is None else job.id for job in order] == [high.id, low.id, None]

    # -- idempotency keys --------------------------------------------------------------

    async def test_an_idempotency_key_is_held_by_one_job_per_tenant(self, store: JobStore) -> None:
        """A second insert with a taken key stores nothing and returns the holder; another
        tenant's key, or no tenant's, is another key."""
        first = make_job(idempotency_key="k")
        assert await store.insert(first) is None
        again = make_job(idempotency_key="k", payload={"other": True})
        assert await store.insert(again) == first
        assert await store.get(again.id) is None
        for tenant in ("acme", "globex"):
            job = make_job(idempotency_key="k", tenant=tenant)
            assert await store.insert(job) is None
            assert await store.insert(make_job(idempotency_key="k", tenant=tenant)) == job
        assert await store.insert(make_job(idempotency_key="K")) is None  # keys are exact
        assert await store.insert(make_job()) is None  # no key: never a conflict
        assert await store.insert(make_job()) is None

    async def test_a_deleted_job_frees_its_key(self, store: JobStore) -> None:
        """Once the holder is removed or soft-deleted, the key is free again."""
        holder = finished(make_job(idempotency_key="k"), T0)
        await store.insert(holder)
        soft = machine.mark_deleted(holder, T0)
        assert await store.replace(soft, expected_version=holder.version)
        second = make_job(idempotency_key="k")
        assert await store.insert(second) is None
        assert await store.remove(second.id, expected_version=second.version)
        third = make_job(idempotency_key="k")
        assert await store.insert(third) is None
        assert await store.insert(make_job(idempotency_key="k")) == third

    async def test_concurrent_inserts_with_one_key_store_exactly_one_job(self, store: JobStore) -> None:
        """Twenty inserts with one key at once: one stores its job, every other gets it back."""
        candidates = [make_job(idempotency_key="race", tenant="t") for _ in range(20)]
        answers: list[Job | None] = [None] * len(candidates)

        async def insert(i: int) -> None:
            answers[i] = await store.insert(candidates[i])

        async with anyio.create_task_group() as tg:
            for i in range(len(candidates)):
                tg.start_soon(insert, i)
        stored = [job for job, answer in zip(candidates, answers, strict=True) if answer is None]
        assert len(stored) == 1
        assert all(answer == stored[0] for answer in answers if answer is not None)
        jobs, _ = await store.list_jobs(
            tenant="t", statuses=None, kind=None, include_deleted=True, before=None, limit=100
        )
        assert [job.id for job in jobs] == [stored[0].id]

    # -- paused kinds ------------------------------------------------------------------

    async def test_paused_kinds_are_not_claimed_until_resumed(self, store: JobStore) -> None:
        """No claim takes a paused kind's jobs, and they do not block the jobs behind them;
        once resumed they are claimed in their old order."""
        paused = [make_job(kind="report", priority=9), make_job(kind="report", priority=8)]
        other = make_job(kind="mail", priority=1)
        for job in (*paused, other):
            await store.insert(job)
        assert await store.set_paused("report", True) is True
        assert await store.set_paused("report", True) is False
        assert await store.paused_kinds() == frozenset({"report"})
        claimed = await store.claim(now=T0, worker_id="w", lease_until=T0)
        assert claimed is not None
        assert claimed.id == other.id
        assert await store.claim(now=T0, worker_id="w", lease_until=T0) is None
        claim_many = getattr(store, "claim_many", None)
        if claim_many is not None:
            for kinds in (None, ["report"]):
                assert await claim_many(now=T0, worker_id="w", lease_until=T0, kinds=kinds, limit=5) == []
        assert (await store.get(paused[0].id)).status is JobStatus.PENDING  # type: ignore[union-attr]
        assert await store.set_paused("report", False) is True
        assert await store.set_paused("report", False) is False
        assert await store.paused_kinds() == frozenset()
        again = [await store.claim(now=T0, worker_id="w", lease_until=T0) for _ in range(2)]
        assert [None if job is None else job.id for job in again] == [job.id for job in paused]

    async def test_unknown_kinds_can_be_paused(self, store: JobStore) -> None:
        """Pausing is by name: a kind with no jobs yet is paused for the jobs to come."""
        assert await store.set_paused("later", True)
        job = make_job(kind="later")
        await store.insert(job)
        assert await store.claim(now=T0, worker_id="w", lease_until=T0) is None
        await store.set_paused("later", False)
        assert await store.claim(now=T0, worker_id="w", lease_until=T0) == machine.start(job, T0)

    # -- schedules ---------------------------------------------------------------------

    @staticmethod
    def schedule(name: str = "nightly", **changes: Any) -> Schedule:
        fields: dict[str, Any] = {
            "name": name,
            "kind": "report",
            "payload": {"x": [1, "ü"]},
            "cron": "0 3 * * *",
            "timezone": "Europe/Berlin",
            "next_run_at": T0 + timedelta(hours=2),
            "created_at": T0,
        }
        fields.update(changes)
        return Schedule(**fields)

    async def test_schedules_are_stored_replaced_listed_and_removed(self, store: JobStore) -> None:
        """put_schedule() stores or replaces by (tenant, name); list by tenant, by name."""
        nightly = self.schedule(priority=3)
        hourly = self.schedule("hourly", cron="0 * * * *", timezone="UTC")
        acme = self.schedule(tenant="acme")
        for item in (nightly, hourly, acme):
            await store.put_schedule(item)
        assert await store.list_schedules(None) == [hourly, nightly, acme]
        assert await store.list_schedules("acme") == [acme]
        replaced = attrs.evolve(nightly, cron="30 4 * * *", created_at=T0 + timedelta(seconds=1))
        await store.put_schedule(replaced)
        assert await store.list_schedules(None) == [hourly, replaced, acme]
        assert await store.remove_schedule(None, "nightly") is True
        assert await store.remove_schedule(None, "nightly") is False
        assert await store.list_schedules("acme") == [acme]  # the other tenant's stays
        assert await store.remove_schedule("acme", "nightly") is True
        assert await store.list_schedules(None) == [hourly]

    async def test_due_schedules_and_advance_is_compare_and_swap(self, store: JobStore) -> None:
        """due_schedules() lists the due ones earliest first; advance_schedule() moves
        next_run_at only from the value read (a second advance, or a replaced schedule, loses)."""
        early = self.schedule("early", next_run_at=T0)
        late = self.schedule("late", next_run_at=T0 + timedelta(hours=1))
        for item in (late, early):
            await store.put_schedule(item)
        assert await store.next_schedule() == T0
        assert await store.due_schedules(T0 + timedelta(hours=1), 10) == [early, late]
        assert await store.due_schedules(T0 + timedelta(hours=1), 1) == [early]
        nxt = T0 + timedelta(days=1)
        assert await store.advance_schedule(early, nxt) is True
        assert await store.advance_schedule(early, nxt + timedelta(days=1)) is False
        assert await store.next_schedule() == late.next_run_at
        assert await store.due_schedules(T0 + timedelta(hours=1), 10) == [late]
        await store.put_schedule(attrs.evolve(late, created_at=T0 + timedelta(seconds=5)))
        assert await store.advance_schedule(late, nxt) is False  # replaced meanwhile

    async def test_audit_records_without_a_job(self, store: JobStore) -> None:
        """Actions on a kind or a schedule leave audit records with job_id None."""
        record = audit_record(None, action=AuditAction.PAUSE, details={"kind": "report"})
        await store.add_audit(record)
        assert await store.list_audit(job_id=None, tenant=None, limit=10) == [record]
        assert await store.list_audit(job_id="x", tenant=None, limit=10) == []


class JobStoreSuite(SchedulingSuite):
    """The contract of :class:`jobkit.abc.JobStore`. Subclass it and provide a ``store`` fixture."""

    pytestmark = pytest.mark.anyio

    # -- records -----------------------------------------------------------------------

    async def test_insert_then_get_round_trips_every_field(self, store: JobStore) -> None:
        """A stored job comes back equal, field by field (datetimes, JSON, labels, durations)."""
        job = make_job(
            tenant="acme",
            priority=-7,
            progress=0.25,
            progress_message="quarter",
            result={"partial": [1, 2]},
            error=None,
            cancel_reason="why",
            started_at=T0 + timedelta(microseconds=1),
            deleted_at=None,
            version=3,
            attempts=2,
            max_attempts=5,
            ttl=timedelta(seconds=90, microseconds=5),
            timeout=timedelta(hours=1),
            labels={"team": "a", "ünï": "çødé"},
            idempotency_key="order-42 ✓",
            retry=Retry(attempts=4, backoff=0.5, factor=3.0, max_backoff=60.0, jitter=0.2, on=(OSError,)),
        )
        assert await store.insert(job) is None
        assert await store.get(job.id) == job
        scheduled = make_job(status=JobStatus.SCHEDULED, run_at=T0 + timedelta(seconds=1, microseconds=3))
        await store.insert(scheduled)
        assert await store.get(scheduled.id) == scheduled

    async def test_get_missing_is_none(self, store: JobStore) -> None:
        """Getting an unknown id returns None."""
        assert await store.get("nope") is None

    async def test_duplicate_insert_is_refused(self, store: JobStore) -> None:
        """Inserting an id twice raises JobkitError and keeps the first job."""
        job = make_job()
        await store.insert(job)
        with pytest.raises(JobkitError):
            await store.insert(attrs.evolve(job, kind="other"))
        assert await store.get(job.id) == job

    async def test_replace_is_compare_and_swap(self, store: JobStore) -> None:
        """A write with the stored version applies; a stale one is refused and changes nothing."""
        job = make_job()
        await store.insert(job)
        newer = attrs.evolve(job, priority=5, version=2)
        assert await store.replace(newer, expected_version=1) is True
        stale = attrs.evolve(job, priority=9, version=2)
        assert await store.replace(stale, expected_version=1) is False
        assert await store.get(job.id) == newer
        assert await store.replace(make_job(version=2), expected_version=1) is False

    async def test_remove_is_compare_and_swap(self, store: JobStore) -> None:
        """remove() needs the stored version; a stale remove keeps the job."""
        job = make_job(version=4)
        await store.insert(job)
        assert await store.remove(job.id, expected_version=3) is False
        assert await store.get(job.id) == job
        assert await store.remove(job.id, expected_version=4) is True
        assert await store.get(job.id) is None
        assert await store.remove(job.id, expected_version=4) is False

    # -- claiming ----------------------------------------------------------------------

    async def test_claim_takes_highest_priority_then_oldest(self, store: JobStore) -> None:
        """Claim order is priority (high first), then insertion order."""
        names = [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1)]
        ids = {}
        for name, priority in names:
            job = make_job(priority=priority, payload=name)
            ids[job.id] = name
            await store.insert(job)
        order = []
        while (claimed := await store.claim(now=T0, worker_id="w", lease_until=T0)) is not None:
            order.append(claimed.payload)
        assert order == ["b", "d", "a", "c", "e"]

    async def test_claim_starts_the_job_like_the_machine(self, store: JobStore) -> None:
        """A claimed job is exactly what the state machine's start() makes of it."""
        job = make_job()
        await store.insert(job)
        now = T0 + timedelta(seconds=3)
        claimed = await store.claim(now=now, worker_id="w", lease_until=now + timedelta(seconds=30))
        assert claimed == machine.start(job, now)
        assert await store.get(job.id) == claimed
        assert await store.claim(now=now, worker_id="w", lease_until=now) is None

    async def test_claim_matches_machine_start_field_by_field(self, store: JobStore) -> None:
        """A claimed job is machine.start(job, now), field by field, for a job with every field set
        (a second attempt: attempts counts up, progress is cleared, the partial result stays)."""
        job = make_job(
            tenant="acme", priority=3, progress=0.5, progress_message="half", result={"partial": 1},
            error="first attempt failed", cancel_reason=None, attempts=1, max_attempts=3, version=7,
            started_at=T0, ttl=timedelta(minutes=5), timeout=timedelta(seconds=9), labels={"a": "b"},
        )  # fmt: skip
        await store.insert(job)
        now = T0 + timedelta(seconds=4, microseconds=321)
        claimed = await store.claim(now=now, worker_id="w", lease_until=now + timedelta(seconds=30))
        assert_same_fields(claimed, machine.start(job, now))
        assert_same_fields(await store.get(job.id), machine.start(job, now))

    async def test_claim_skips_non_pending_and_follows_priority_changes(self, store: JobStore) -> None:
        """Only pending jobs are claimed; a priority change through replace() reorders."""
        first, second = make_job(), make_job()
        done = finished(make_job(), T0)
        for job in (first, second, done):
            await store.insert(job)
        boosted = attrs.evolve(second, priority=10, version=2)
        assert await store.replace(boosted, expected_version=1)
        claimed = await store.claim(now=T0, worker_id="w", lease_until=T0)
        assert claimed is not None
        assert claimed.id == second.id
        claimed = await store.claim(now=T0, worker_id="w", lease_until=T0)
        assert claimed is not None
        assert claimed.id == first.id
        assert await store.claim(now=T0, worker_id="w", lease_until=T0) is None

    async def test_concurrent_claimers_get_each_job_exactly_once(self, store: JobStore) -> None:
        """N concurrent claimers: every job is claimed once, none twice, none left."""
        ids = set()
        for i in range(200):
            job = make_job(priority=i % 3)
            ids.add(job.id)
            await store.insert(job)
        claimed: list[str] = []

        async def claimer(worker: int) -> None:
            while (job := await store.claim(now=T0, worker_id=f"w{worker}", lease_until=T0)) is not None:
                claimed.append(job.id)

        async with anyio.create_task_group() as tg:
            for worker in range(16):
                tg.start_soon(claimer, worker)
        assert sorted(claimed) == sorted(ids)

    async def test_position_counts_jobs_ahead(self, store: JobStore) -> None:
        """position() is 1 + pending jobs claimed before it; None when not pending."""
        jobs = [make_job(priority=p) for p in (0, 0, 3, -2)]
        for job in jobs:
            await store.insert(job)
        assert [await store.position(j.id) for j in jobs] == [2, 3, 1, 4]
        await store.claim(now=T0, worker_id="w", lease_until=T0)
        assert [await store.position(j.id) for j in jobs] == [1, 2, None, 3]
        assert await store.position("missing") is None

    # -- listing -----------------------------------------------------------------------

    async def test_list_newest_first_with_filters(self, store: JobStore) -> None:
        """Listing is newest first and filters by tenant, statuses, kind and deletion."""
        a = make_job(tenant="acme", kind="x")
        b = make_job(tenant="globex", kind="y")
        c = finished(make_job(tenant="acme", kind="y"), T0)
        d = attrs.evolve(finished(make_job(tenant="acme", kind="x"), T0), deleted_at=T0)
        for job in (a, b, c, d):
            await store.insert(job)

        async def ids(**kwargs: Any) -> list[str]:
            options: dict[str, Any] = {
                "tenant": None, "statuses": None, "kind": None, "include_deleted": False,
                "before": None, "limit": 100,
            }  # fmt: skip
            options.update(kwargs)
            jobs, next_before = await store.list_jobs(**options)
            assert next_before is None
            return [job.id for job in jobs]

        assert await ids() == [c.id, b.id, a.id]
        assert await ids(include_deleted=True) == [d.id, c.id, b.id, a.id]
        assert await ids(tenant="acme") == [c.id, a.id]
        assert await ids(statuses={JobStatus.PENDING}) == [b.id, a.id]
        assert await ids(statuses={JobStatus.PENDING, JobStatus.COMPLETED}, kind="y") == [c.id, b.id]
        assert await ids(tenant="nobody") == []

    async def test_list_pages_are_stable_while_jobs_are_added(self, store: JobStore) -> None:
        """Paging with `before` never repeats or skips a job, even with inserts between pages."""
        existing = [make_job() for _ in range(25)]
        for job in existing:
            await store.insert(job)
        seen: list[str] = []
        before: int | None = None
        while True:
            jobs, before = await store.list_jobs(
                tenant=None, statuses=None, kind=None, include_deleted=False, before=before, limit=7
            )
            seen.extend(job.id for job in jobs)
            await store.insert(make_job())  # a newer job must not show up in later pages
            if before is None:
                break
        assert seen == [job.id for job in reversed(existing)]

    # -- expiry, deletion and leases ------------------------------------------------------

    async def test_expired_returns_only_due_jobs_earliest_first(self, store: JobStore) -> None:
        """expired(now) lists jobs with expires_at <= now, by expiry, up to the limit."""
        late = finished(make_job(), T0, keep=300)
        soon = finished(make_job(), T0, keep=10)
        never = finished(make_job(), T0)
        mid = finished(make_job(), T0, keep=100)
        for job in (late, soon, never, mid, make_job()):
            await store.insert(job)
        now = T0 + timedelta(seconds=200)
        assert [j.id for j in await store.expired(now, 10)] == [soon.id, mid.id]
        assert [j.id for j in await store.expired(now, 1)] == [soon.id]
        assert await store.remove(soon.id, expected_version=soon.version)
        assert [j.id for j in await store.expired(now, 10)] == [mid.id]
        cleared = attrs.evolve(mid, expires_at=None, deleted_at=now, version=mid.version + 1)
        assert await store.replace(cleared, expected_version=mid.version)
        assert await store.expired(now, 10) == []

    async def test_soft_deleted_before(self, store: JobStore) -> None:
        """soft_deleted_before(cutoff) lists soft-deleted jobs with deleted_at <= cutoff."""
        old = attrs.evolve(finished(make_job(), T0), deleted_at=T0)
        new = attrs.evolve(finished(make_job(), T0), deleted_at=T0 + timedelta(days=2))
        for job in (old, new, finished(make_job(), T0)):
            await store.insert(job)
        assert [j.id for j in await store.soft_deleted_before(T0 + timedelta(days=1), 10)] == [old.id]

    async def test_leases_renew_expire_and_clear(self, store: JobStore) -> None:
        """A claim leases the job; renewals extend it; expiry lists it; finishing clears it."""
        one, two = make_job(), make_job()
        await store.insert(one)
        await store.insert(two)
        lease = T0 + timedelta(seconds=30)
        first = await store.claim(now=T0, worker_id="w1", lease_until=lease)
        second = await store.claim(now=T0, worker_id="w2", lease_until=lease)
        assert first is not None
        assert second is not None
        held = await store.renew_leases("w1", [first.id, second.id], T0 + timedelta(seconds=90))
        assert [j.id for j in held] == [first.id]
        at_60 = T0 + timedelta(seconds=60)
        assert [j.id for j in await store.expired_leases(at_60, 10)] == [second.id]
        done = machine.complete(first, T0, Retention(), "ok")
        assert await store.replace(done, expected_version=first.version)
        assert await store.renew_leases("w1", [first.id], T0 + timedelta(seconds=500)) == []
        assert [j.id for j in await store.expired_leases(T0 + timedelta(seconds=400), 10)] == [second.id]

    async def test_cancelling_jobs_keep_their_lease(self, store: JobStore) -> None:
        """A cancelling job is still leased to its worker and is returned by renew_leases."""
        await store.insert(make_job())
        job = await store.claim(now=T0, worker_id="w", lease_until=T0 + timedelta(seconds=30))
        assert job is not None
        cancelling = machine.cancel(job, T0, Retention(), "stop")
        assert await store.replace(cancelling, expected_version=job.version)
        [held] = await store.renew_leases("w", [job.id], T0 + timedelta(seconds=60))
        assert held.status is JobStatus.CANCELLING
        assert [j.id for j in await store.expired_leases(T0 + timedelta(seconds=61), 10)] == [job.id]

    # -- audit and purge queue ----------------------------------------------------------

    async def test_audit_records_newest_first_with_filters_and_retention(self, store: JobStore) -> None:
        """Audit records list newest first, filter by job and tenant, and are removed by age."""
        records = [
            AuditRecord(
                id=uuid.uuid4().hex, at=T0 + timedelta(days=i), action=AuditAction.DELETE,
                actor_id=f"u{i}", tenant="acme" if i % 2 else "globex", job_id=f"job{i % 3}",
                details={"artifacts_deleted": i, "nested": {"ok": True}},
            )
            for i in range(6)
        ]  # fmt: skip
        for record in records:
            await store.add_audit(record)
        assert await store.list_audit(job_id=None, tenant=None, limit=100) == records[::-1]
        assert await store.list_audit(job_id="job1", tenant=None, limit=100) == [records[4], records[1]]
        assert await store.list_audit(job_id=None, tenant="acme", limit=2) == [records[5], records[3]]
        assert await store.remove_audit_before(T0 + timedelta(days=2)) == 2
        assert await store.list_audit(job_id=None, tenant=None, limit=100) == records[:1:-1]

    async def test_purge_queue(self, store: JobStore) -> None:
        """Queued prefixes come back oldest first, once each, until removed."""
        for prefix in ("jobs/a/", "jobs/b/", "jobs/a/", "jobs/c/"):
            await store.add_purge(prefix)
        assert await store.pending_purges(10) == ["jobs/a/", "jobs/b/", "jobs/c/"]
        assert await store.pending_purges(2) == ["jobs/a/", "jobs/b/"]
        await store.remove_purge("jobs/b/")
        await store.remove_purge("jobs/unknown/")
        assert await store.pending_purges(10) == ["jobs/a/", "jobs/c/"]

    # -- optional: claim_many ---------------------------------------------------------

    async def test_claim_many_takes_claim_order_up_to_the_limit(self, store: JobStore) -> None:
        """claim_many() starts up to `limit` pending jobs, highest priority then oldest, in that order."""
        claim_many = optional(store, "claim_many")
        names = [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1)]
        for name, priority in names:
            await store.insert(make_job(priority=priority, payload=name))
        done = finished(make_job(priority=9), T0)
        await store.insert(done)

        async def take(limit: int) -> list[Any]:
            jobs = await claim_many(now=T0, worker_id="w", lease_until=T0, kinds=None, limit=limit)
            return [job.payload for job in jobs]

        assert await take(3) == ["b", "d", "a"]
        assert await take(10) == ["c", "e"]
        assert await take(10) == []
        assert await take(0) == []

    async def test_claim_many_matches_machine_start_field_by_field(self, store: JobStore) -> None:
        """Every job claim_many() returns is machine.start(job, now), field by field, and so stored."""
        claim_many = optional(store, "claim_many")
        jobs = [
            make_job(priority=2, tenant="acme", result=[1], progress=0.1, attempts=1, max_attempts=2),
            make_job(priority=1, labels={"x": "y"}, ttl=timedelta(seconds=5), version=4),
        ]
        for job in jobs:
            await store.insert(job)
        now = T0 + timedelta(hours=1, microseconds=7)
        claimed = await claim_many(
            now=now, worker_id="w", lease_until=now + timedelta(seconds=30), kinds=None, limit=5
        )
        assert len(claimed) == 2
        for got, job in zip(claimed, jobs, strict=True):
            assert_same_fields(got, machine.start(job, now))
            assert_same_fields(await store.get(job.id), machine.start(job, now))

    async def test_claim_many_kinds_leave_other_kinds_pending(self, store: JobStore) -> None:
        """With `kinds`, only those kinds start; other kinds stay pending in place and do not
        block the jobs behind them."""
        claim_many = optional(store, "claim_many")
        blocker = make_job(kind="other", priority=10)
        mine = [make_job(kind="mine", priority=p) for p in (5, 0)]
        third = make_job(kind="third", priority=1)
        for job in (blocker, *mine, third):
            await store.insert(job)
        claimed = await claim_many(now=T0, worker_id="w", lease_until=T0, kinds=["mine", "absent"], limit=10)
        assert [job.id for job in claimed] == [job.id for job in mine]
        assert (await store.get(blocker.id)).status is JobStatus.PENDING  # type: ignore[union-attr]
        assert await store.position(blocker.id) == 1
        assert await store.position(third.id) == 2
        assert await claim_many(now=T0, worker_id="w", lease_until=T0, kinds=(), limit=10) == []
        both = await claim_many(now=T0, worker_id="w", lease_until=T0, kinds={"third", "other"}, limit=10)
        assert [job.id for job in both] == [blocker.id, third.id]

    async def test_count_jobs_per_status_by_tenant_and_kind(self, store: JobStore) -> None:
        """count_jobs() (optional): jobs per status, by tenant and kind, soft-deleted left out."""
        count_jobs = optional(store, "count_jobs")
        made = [
            make_job(kind="a", tenant="t1"),
            make_job(kind="a", tenant="t1"),
            make_job(kind="b", tenant="t2"),
            make_job(kind="b"),
        ]
        for job in made:
            await store.insert(job)
        claimed = await store.claim(now=T0, worker_id="w", lease_until=T0 + timedelta(seconds=30))
        assert claimed is not None
        done = machine.complete(claimed, T0, Retention(), "ok")
        assert await store.replace(done, expected_version=claimed.version)
        gone = machine.mark_deleted(done, T0)
        assert await store.replace(gone, expected_version=done.version)  # soft-deleted: not counted

        def clean(found: dict[JobStatus, int]) -> dict[JobStatus, int]:
            return {status: n for status, n in found.items() if n}

        assert clean(await count_jobs(tenant=None, kind=None)) == {JobStatus.PENDING: 3}
        assert sum((await count_jobs(tenant="t1", kind=None)).values()) == 2 - (claimed.tenant == "t1")
        assert clean(await count_jobs(tenant=None, kind="b")) == {
            JobStatus.PENDING: 2 - (claimed.kind == "b")
        }
        assert clean(await count_jobs(tenant="nobody", kind=None)) == {}

    async def test_jobs_with_prefix_finds_jobs_by_the_start_of_their_id(self, store: JobStore) -> None:
        """jobs_with_prefix() (optional): the jobs whose id starts with the prefix, newest
        first, of one tenant or all, soft-deleted ones only when asked, at most ``limit``."""
        jobs_with_prefix = optional(store, "jobs_with_prefix")
        ids = ["abcd" + "0" * 28, "abcd" + "1" * 28, "abce" + "0" * 28, "0abc" + "0" * 28, "abcc" + "f" * 28]
        tenants = ["t1", "t2", "t1", "t1", None]
        for job_id, tenant in zip(ids, tenants, strict=True):
            await store.insert(make_job(id=job_id, tenant=tenant))

        async def found(prefix: str, **options: Any) -> list[str]:
            arguments = {"tenant": None, "include_deleted": False, "limit": 10, **options}
            return [job.id for job in await jobs_with_prefix(prefix, **arguments)]

        assert await found("abc") == [ids[4], ids[2], ids[1], ids[0]]
        assert await found("abcd") == [ids[1], ids[0]]
        assert await found("abcd", tenant="t1") == [ids[0]]
        assert await found("abc", limit=2) == [ids[4], ids[2]]
        assert await found(ids[3]) == [ids[3]]
        assert await found("ffff") == []
        stored = await store.get(ids[2])
        assert stored is not None
        gone = attrs.evolve(stored, deleted_at=T0, version=stored.version + 1)
        assert await store.replace(gone, expected_version=stored.version)
        assert await found("abce") == []
        assert await found("abce", include_deleted=True) == [ids[2]]

    async def test_leases_lists_who_holds_which_job_until_when(self, store: JobStore) -> None:
        """leases() (optional): running and cancelling jobs with their owner and lease end,
        soonest to expire first; renewals move them; a finished job has none."""
        leases = optional(store, "leases")
        for _ in range(3):
            await store.insert(make_job())
        a = await store.claim(now=T0, worker_id="w1", lease_until=T0 + timedelta(seconds=30))
        b = await store.claim(now=T0, worker_id="w2", lease_until=T0 + timedelta(seconds=20))
        assert a is not None
        assert b is not None
        found = await leases(10)
        assert [(lease.job.id, lease.owner, lease.until) for lease in found] == [
            (b.id, "w2", T0 + timedelta(seconds=20)),
            (a.id, "w1", T0 + timedelta(seconds=30)),
        ]
        assert found[0].job == b
        await store.renew_leases("w2", [b.id], T0 + timedelta(seconds=90))
        cancelling = machine.cancel(a, T0, Retention(), "stop")
        assert await store.replace(cancelling, expected_version=a.version)
        assert [(lease.job.id, lease.job.status) for lease in await leases(10)] == [
            (a.id, JobStatus.CANCELLING),
            (b.id, JobStatus.RUNNING),
        ]
        assert [lease.job.id for lease in await leases(1)] == [a.id]
        done = machine.complete(b, T0, Retention(), "ok")
        assert await store.replace(done, expected_version=b.version)
        assert [lease.job.id for lease in await leases(10)] == [a.id]

    async def test_claim_many_leases_to_the_worker(self, store: JobStore) -> None:
        """Jobs from claim_many() are leased like claimed ones: renewed by their worker, expiring."""
        claim_many = optional(store, "claim_many")
        for _ in range(3):
            await store.insert(make_job())
        lease = T0 + timedelta(seconds=30)
        claimed = await claim_many(now=T0, worker_id="w1", lease_until=lease, kinds=None, limit=3)
        ids = [job.id for job in claimed]
        held = await store.renew_leases("w1", ids[:2], T0 + timedelta(seconds=90))
        assert sorted(job.id for job in held) == sorted(ids[:2])
        assert await store.renew_leases("w2", ids, T0 + timedelta(seconds=90)) == []
        expired = await store.expired_leases(T0 + timedelta(seconds=60), 10)
        assert [job.id for job in expired] == [ids[2]]

    async def test_concurrent_claim_many_get_each_job_exactly_once(self, store: JobStore) -> None:
        """Concurrent claim_many() callers: every job is claimed once, none twice, none left."""
        claim_many = optional(store, "claim_many")
        ids = set()
        for i in range(200):
            job = make_job(priority=i % 3, kind="a" if i % 2 else "b")
            ids.add(job.id)
            await store.insert(job)
        claimed: list[str] = []

        async def claimer(worker: int) -> None:
            kinds = None if worker % 3 == 0 else ["a"] if worker % 3 == 1 else ["b"]
            while jobs := await claim_many(
                now=T0, worker_id=f"w{worker}", lease_until=T0, kinds=kinds, limit=7
            ):
                claimed.extend(job.id for job in jobs)

        async with anyio.create_task_group() as tg:
            for worker in range(12):
                tg.start_soon(claimer, worker)
        assert sorted(claimed) == sorted(ids)

    # -- optional: apply --------------------------------------------------------------

    async def test_apply_writes_the_job_its_audit_record_and_purge_entry(self, store: JobStore) -> None:
        """apply() of a replacement stores the job, appends the audit record and queues the prefix."""
        apply = optional(store, "apply")
        job = make_job()
        await store.insert(job)
        new = finished(job, T0, keep=60)
        record = audit_record(job.id, action=AuditAction.CANCEL)
        change = Change(job_id=job.id, expected_version=1, job=new, audit=record, purge="jobs/x/")
        assert await apply(change) is True
        assert await store.get(job.id) == new
        assert await store.list_audit(job_id=job.id, tenant=None, limit=10) == [record]
        assert await store.pending_purges(10) == ["jobs/x/"]
        assert [j.id for j in await store.expired(T0 + timedelta(seconds=61), 10)] == [job.id]

    async def test_apply_removes_with_its_audit_record(self, store: JobStore) -> None:
        """apply() with job=None removes the record and appends the audit record."""
        apply = optional(store, "apply")
        job = finished(make_job(), T0, keep=1)
        other = make_job()
        await store.insert(job)
        await store.insert(other)
        record = audit_record(job.id)
        assert await apply(Change(job_id=job.id, expected_version=job.version, job=None, audit=record))
        assert await store.get(job.id) is None
        assert await store.expired(T0 + timedelta(days=1), 10) == []
        assert await store.list_audit(job_id=job.id, tenant=None, limit=10) == [record]
        assert await store.get(other.id) == other
        assert await store.pending_purges(10) == []

    async def test_apply_that_loses_the_race_writes_nothing(self, store: JobStore) -> None:
        """A stale or missing job: apply() returns False and writes neither job, audit nor purge."""
        apply = optional(store, "apply")
        job = make_job(version=3)
        await store.insert(job)
        stale = [
            Change(job_id=job.id, expected_version=2, job=finished(job, T0), audit=audit_record(job.id)),
            Change(job_id=job.id, expected_version=2, job=None, audit=audit_record(job.id), purge="p/"),
            Change(job_id="missing", expected_version=1, job=None, audit=audit_record("missing")),
        ]
        for change in stale:
            assert await apply(change) is False
        assert await store.get(job.id) == job
        assert await store.list_audit(job_id=None, tenant=None, limit=10) == []
        assert await store.pending_purges(10) == []

    async def test_apply_keeps_claim_order_and_indexes_current(self, store: JobStore) -> None:
        """Jobs changed through apply() are claimed, listed and positioned like replaced ones."""
        apply = optional(store, "apply")
        first, second, gone = make_job(), make_job(), make_job()
        for job in (first, second, gone):
            await store.insert(job)
        boosted = attrs.evolve(second, priority=4, version=2)
        assert await apply(Change(job_id=second.id, expected_version=1, job=boosted))
        assert await apply(Change(job_id=gone.id, expected_version=1, job=None))
        assert await store.position(second.id) == 1
        assert await store.position(gone.id) is None
        claimed = await store.claim(now=T0, worker_id="w", lease_until=T0)
        assert claimed is not None
        assert claimed.id == second.id
        jobs, _ = await store.list_jobs(
            tenant=None, statuses=None, kind=None, include_deleted=False, before=None, limit=10
        )
        assert [job.id for job in jobs] == [second.id, first.id]

    # -- optional: exclusive ----------------------------------------------------------

    async def test_exclusive_is_granted_when_nobody_holds_it(self, store: JobStore) -> None:
        """exclusive(name) yields True when no other process holds the name, again after release."""
        exclusive = optional(store, "exclusive")
        for _ in range(2):
            async with exclusive("jobkit.sweeper") as mine:
                assert mine is True
        async with exclusive("another name") as mine:
            assert mine is True

    # -- optional: notifier -----------------------------------------------------------

    async def test_notifier_delivers_notes_to_local_listeners(self, store: JobStore) -> None:
        """A store's notifier is a Notifier that delivers notes in this process at once: event
        notes to event listeners only, the others to the rest; stop() ends a listener."""
        notifier = optional(store, "notifier")()
        assert isinstance(notifier, Notifier)
        notes: list[Note] = []
        events: list[Note] = []
        stop = notifier.listen(notes.append)
        wanted = [notifier.wants_events]
        stop_events = notifier.listen(events.append, events=True)
        wanted.append(notifier.wants_events)
        assert wanted == [False, True]
        event = JobEvent(type=EventType.SUBMITTED, job_id="j", tenant=None, status=JobStatus.PENDING, at=T0)
        sent = [
            Note(kind=NoteKind.WAKE),
            Note(kind=NoteKind.CANCEL, job_id="j"),
            Note(kind=NoteKind.CHANGED, job_id=None),
            Note(kind=NoteKind.EVENT, event=event),
        ]
        for note in sent:
            notifier.notify(note)
        assert notes == sent[:3]
        assert events == sent[3:]
        stop()
        stop_events()
        notifier.notify(Note(kind=NoteKind.WAKE))
        assert len(notes) == 3

    async def test_notifier_runs_until_cancelled(self, store: JobStore) -> None:
        """notifier.run() keeps running (it never returns or raises on its own) until cancelled."""
        notifier = optional(store, "notifier")()
        with anyio.move_on_after(0.05) as scope:
            await notifier.run()
        assert scope.cancelled_caught
