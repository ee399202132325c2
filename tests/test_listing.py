"""Listing and paging: newest first, filters, limits, stable cursors, tenants, soft deletes,
and many concurrent deletes of one job."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobkit import (
    Actor,
    DeletePolicy,
    InvalidInput,
    Job,
    JobContext,
    JobManager,
    JobNotFound,
    JobStatus,
    PermissionDenied,
)
from jobkit.abc import Change, JobStore, StatusCounter
from jobkit.blobs import MemoryBlobStore
from jobkit.stores import MemoryStore
from jobkit.testing import FakeClock
from managers import ManagerFactory

pytestmark = pytest.mark.anyio

ALICE = Actor("alice", tenant="acme")
ALICE_ADMIN = Actor("root", tenant="acme", roles={"admin"})
BOB = Actor("bob", tenant="globex")
ADMIN = Actor("ops", roles={"admin"})
USER = Actor("someone")


async def _ok(ctx: JobContext, payload: Any) -> Any:
    return payload


async def _boom(ctx: JobContext, payload: Any) -> Any:
    raise RuntimeError("boom")


async def _write_two(ctx: JobContext, payload: Any) -> str:
    await ctx.put_artifact("input.wav", b"RIFF")
    await ctx.put_artifact("out/transcript.txt", "hello")
    return "ok"


HANDLERS = {"ok": _ok, "boom": _boom}


def ids(jobs: Iterable[Job]) -> list[str]:
    return [job.id for job in jobs]


async def all_pages(jobs: JobManager, *, limit: int, **filters: Any) -> list[str]:
    """Every job the filters match, page by page; checks each page's size on the way."""
    found: list[str] = []
    cursor = None
    while True:
        page = await jobs.list(limit=limit, cursor=cursor, **filters)
        found.extend(ids(page))
        if page.next_cursor is None:
            assert len(page) <= limit
            return found
        assert len(page) == limit
        cursor = page.next_cursor


class Mixed:
    """Ten jobs in every status and three kinds, made through a running manager.

    In submission order: completed ok, failed boom, completed ok, running hold,
    cancelling hold, pending ok, pending boom, pending hold, cancelled ok, cancelled hold.
    """

    def __init__(self, jobs: JobManager, by_name: dict[str, str]) -> None:
        self.jobs = jobs
        self.by_name = by_name

    def newest_first(self, names: Iterable[str] | None = None) -> list[str]:
        """The ids of the jobs called ``names`` (all jobs when None), newest first."""
        chosen = set(self.by_name if names is None else names)
        return [job_id for name, job_id in reversed(self.by_name.items()) if name in chosen]


STATUS_OF = {
    "completed-1": JobStatus.COMPLETED,
    "failed": JobStatus.FAILED,
    "completed-2": JobStatus.COMPLETED,
    "running": JobStatus.RUNNING,
    "cancelling": JobStatus.CANCELLING,
    "pending-ok": JobStatus.PENDING,
    "pending-boom": JobStatus.PENDING,
    "pending-hold": JobStatus.PENDING,
    "cancelled-ok": JobStatus.CANCELLED,
    "cancelled-hold": JobStatus.CANCELLED,
    "scheduled": JobStatus.SCHEDULED,
}
KIND_OF = {
    "completed-1": "ok",
    "failed": "boom",
    "completed-2": "ok",
    "running": "hold",
    "cancelling": "hold",
    "pending-ok": "ok",
    "pending-boom": "boom",
    "pending-hold": "hold",
    "cancelled-ok": "ok",
    "cancelled-hold": "hold",
    "scheduled": "ok",
}


@asynccontextmanager
async def mixed_jobs(make_manager: ManagerFactory) -> AsyncIterator[Mixed]:
    """A manager with two workers, both held busy, and the eleven jobs of :class:`Mixed`."""
    clock = FakeClock()
    jobs = make_manager(handlers=HANDLERS, concurrency=2, clock=clock)
    release = anyio.Event()
    started: dict[str, anyio.Event] = {}

    @jobs.handler("hold")
    async def hold(ctx: JobContext, payload: Any) -> None:
        started[payload].set()
        await release.wait()  # ignores its token: a cancel leaves it cancelling

    by_name: dict[str, str] = {}
    async with jobs:
        try:
            for name, kind in KIND_OF.items():
                clock.advance(1)
                started[name] = anyio.Event()
                job = await jobs.submit(kind, name, delay=3600 if name == "scheduled" else None)
                by_name[name] = job.id
                if name in ("completed-1", "failed", "completed-2"):
                    await jobs.wait(job.id, timeout=5)
                elif name in ("running", "cancelling"):
                    with anyio.fail_after(5):
                        await started[name].wait()
                if name.startswith("cancel"):
                    await jobs.cancel(job.id)
            for name, job_id in by_name.items():
                assert (await jobs.get(job_id)).status is STATUS_OF[name], name
            yield Mixed(jobs, by_name)
        finally:
            release.set()


class TestOrder:
    async def test_newest_first(self, make_manager: ManagerFactory) -> None:
        """Jobs are listed newest first: the last submitted comes first."""
        async with mixed_jobs(make_manager) as mixed:
            page = await mixed.jobs.list()
            assert ids(page) == mixed.newest_first()
            created = [job.created_at for job in page]
            assert created == sorted(created, reverse=True)
            assert page.next_cursor is None

    async def test_newest_first_with_equal_timestamps(self, make_manager: ManagerFactory) -> None:
        """Jobs created at the same instant are still listed in reverse submission order."""
        jobs = make_manager(handlers=HANDLERS, concurrency=0, clock=FakeClock())
        async with jobs:
            submitted = [(await jobs.submit("ok", n)).id for n in range(7)]
            assert ids(await jobs.list()) == submitted[::-1]
            assert await all_pages(jobs, limit=2) == submitted[::-1]

    async def test_default_limit_is_fifty(self, make_manager: ManagerFactory) -> None:
        """Without a limit a page holds 50 jobs and points to the rest."""
        jobs = make_manager(handlers=HANDLERS, concurrency=0)
        async with jobs:
            submitted = [(await jobs.submit("ok", n)).id for n in range(60)]
            page = await jobs.list()
            assert ids(page) == submitted[:-51:-1]
            assert page.next_cursor is not None
            rest = await jobs.list(cursor=page.next_cursor)
            assert ids(rest) == submitted[9::-1]
            assert rest.next_cursor is None


class TestFilters:
    @pytest.mark.parametrize("status", list(JobStatus))
    async def test_one_status(self, status: JobStatus, make_manager: ManagerFactory) -> None:
        """Filtering by one status lists exactly the jobs in it, newest first (enum or string)."""
        async with mixed_jobs(make_manager) as mixed:
            expected = mixed.newest_first(n for n, s in STATUS_OF.items() if s is status)
            assert expected
            assert ids(await mixed.jobs.list(status=status)) == expected
            assert ids(await mixed.jobs.list(status=status.value)) == expected
            assert await all_pages(mixed.jobs, limit=1, status=status) == expected

    async def test_several_statuses(self, make_manager: ManagerFactory) -> None:
        """A list of statuses matches a job in any of them."""
        async with mixed_jobs(make_manager) as mixed:
            for statuses in (
                ["pending", "running"],
                [JobStatus.RUNNING, JobStatus.CANCELLING],
                {"completed", "failed", "cancelled"},
                ("cancelling", "cancelled"),
                list(JobStatus),
            ):
                wanted = {JobStatus(s) for s in statuses}
                expected = mixed.newest_first(n for n, s in STATUS_OF.items() if s in wanted)
                assert ids(await mixed.jobs.list(status=statuses)) == expected, statuses
                assert await all_pages(mixed.jobs, limit=2, status=statuses) == expected, statuses

    @pytest.mark.parametrize("kind", ["ok", "boom", "hold"])
    async def test_kind(self, kind: str, make_manager: ManagerFactory) -> None:
        """Filtering by kind lists exactly the jobs of that kind, whatever their status."""
        async with mixed_jobs(make_manager) as mixed:
            expected = mixed.newest_first(n for n, k in KIND_OF.items() if k == kind)
            assert ids(await mixed.jobs.list(kind=kind)) == expected
            assert await all_pages(mixed.jobs, limit=1, kind=kind) == expected

    async def test_status_and_kind_combine(self, make_manager: ManagerFactory) -> None:
        """Status and kind filters both apply; a combination nothing matches is an empty last page."""
        async with mixed_jobs(make_manager) as mixed:
            cases: list[tuple[Any, str, list[str]]] = [
                (["pending", "cancelled"], "ok", ["pending-ok", "cancelled-ok"]),
                ("completed", "ok", ["completed-1", "completed-2"]),
                (["running", "cancelling", "pending"], "hold", ["running", "cancelling", "pending-hold"]),
                (["failed", "pending"], "boom", ["failed", "pending-boom"]),
                ("completed", "boom", []),
                ("running", "ok", []),
            ]
            for status, kind, names in cases:
                page = await mixed.jobs.list(status=status, kind=kind)
                assert ids(page) == mixed.newest_first(names)
                assert page.next_cursor is None
                assert await all_pages(mixed.jobs, limit=1, status=status, kind=kind) == ids(page)

    async def test_unknown_kind_lists_nothing(self, make_manager: ManagerFactory) -> None:
        """A kind no job has is not an error: the list is empty."""
        async with mixed_jobs(make_manager) as mixed:
            page = await mixed.jobs.list(kind="no-such-kind")
            assert ids(page) == []
            assert page.next_cursor is None

    @pytest.mark.parametrize("status", ["done", "PENDING ", ["pending", "nope"], 3])
    async def test_unknown_status_is_invalid_input(self, status: Any, make_manager: ManagerFactory) -> None:
        """An unknown status is InvalidInput, naming the allowed ones."""
        jobs = make_manager(handlers=HANDLERS, concurrency=0)
        async with jobs:
            with pytest.raises(InvalidInput, match="pending"):
                await jobs.list(status=status)


class TestLimit:
    async def test_limit_bounds_the_page(self, make_manager: ManagerFactory) -> None:
        """A page never holds more than `limit` jobs; 1 and 1000 are both accepted."""
        jobs = make_manager(handlers=HANDLERS, concurrency=0)
        async with jobs:
            submitted = [(await jobs.submit("ok", n)).id for n in range(5)]
            one = await jobs.list(limit=1)
            assert ids(one) == [submitted[-1]]
            assert one.next_cursor is not None
            assert ids(await jobs.list(limit=3)) == submitted[:1:-1]
            everything = await jobs.list(limit=1000)
            assert ids(everything) == submitted[::-1]
            assert everything.next_cursor is None

    async def test_page_that_ends_at_the_last_job_has_no_cursor(self, make_manager: ManagerFactory) -> None:
        """When exactly `limit` jobs remain, the page holds them all and has no next cursor."""
        jobs = make_manager(handlers=HANDLERS, concurrency=0)
        async with jobs:
            submitted = [(await jobs.submit("ok", n)).id for n in range(4)]
            full = await jobs.list(limit=4)
            assert ids(full) == submitted[::-1]
            assert full.next_cursor is None
            first = await jobs.list(limit=2)
            second = await jobs.list(limit=2, cursor=first.next_cursor)
            assert ids(second) == submitted[1::-1]
            assert second.next_cursor is None

    @pytest.mark.parametrize("limit", [0, -1, 1001, True, 2.5, "10", None])
    async def test_limit_out_of_range_is_invalid_input(
        self, limit: Any, make_manager: ManagerFactory
    ) -> None:
        """A limit that is not an integer from 1 to 1000 is InvalidInput."""
        jobs = make_manager(handlers=HANDLERS, concurrency=0)
        async with jobs:
            with pytest.raises(InvalidInput, match="limit"):
                await jobs.list(limit=limit)

    @pytest.mark.parametrize("cursor", ["", "not-a-cursor", "ajEuMTI=", "ajEuLTE", "ajEuMDEy", "x" * 65, 12])
    async def test_malformed_cursor_is_invalid_input(self, cursor: Any, make_manager: ManagerFactory) -> None:
        """A cursor not handed out by `list` is InvalidInput."""
        jobs = make_manager(handlers=HANDLERS, concurrency=0)
        async with jobs:
            await jobs.submit("ok")
            with pytest.raises(InvalidInput, match="cursor"):
                await jobs.list(cursor=cursor)


class TestCursorPaging:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        initial=st.lists(st.sampled_from(["a", "b"]), max_size=25),
        rounds=st.lists(
            st.tuples(st.integers(1, 6), st.lists(st.sampled_from(["a", "b"]), max_size=3)),
            min_size=1,
            max_size=10,
        ),
        kind=st.sampled_from([None, "a"]),
    )
    async def test_pages_never_repeat_or_skip_while_jobs_are_added(
        self,
        initial: list[str],
        rounds: list[tuple[int, list[str]]],
        kind: str | None,
        make_manager: ManagerFactory,
    ) -> None:
        """Pages read with random sizes, while jobs keep arriving, hold exactly the jobs that
        existed when paging started, newest first, each once."""
        jobs = make_manager(concurrency=0, handlers={"a": _ok, "b": _ok})
        async with jobs:
            existing = []
            for k in initial:
                job = await jobs.submit(k)
                if kind is None or k == kind:
                    existing.append(job.id)
            expected = existing[::-1]
            seen: list[str] = []
            cursor = None
            for turn in range(len(expected) + 1):
                size, arriving = rounds[turn % len(rounds)]
                page = await jobs.list(kind=kind, limit=size, cursor=cursor)
                assert len(page) <= size
                seen.extend(ids(page))
                for k in arriving:
                    await jobs.submit(k)
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert cursor is None, "paging did not end"
            assert seen == expected


class TestTenants:
    async def _three_tenants(self, jobs: JobManager) -> dict[str | None, list[str]]:
        submitted: dict[str | None, list[str]] = {"acme": [], "globex": [], None: []}
        for n, actor in enumerate([ALICE, BOB, None, ALICE, BOB, ALICE, None, ALICE]):
            job = await jobs.submit("ok", n, actor=actor)
            submitted[job.tenant].append(job.id)
        return submitted

    async def test_actor_with_a_tenant_sees_only_its_jobs(self, make_manager: ManagerFactory) -> None:
        """An actor with a tenant lists only its tenant's jobs, page after page."""
        jobs = make_manager(handlers=HANDLERS, concurrency=0)
        async with jobs:
            submitted = await self._three_tenants(jobs)
            for actor in (ALICE, BOB, ALICE_ADMIN):
                mine = submitted[actor.tenant][::-1]
                assert ids(await jobs.list(actor=actor)) == mine
                assert await all_pages(jobs, limit=1, actor=actor) == mine
                assert await all_pages(jobs, limit=3, actor=actor) == mine
            assert ids(await jobs.list(actor=Actor("nobody", tenant="initech"))) == []

    async def test_host_sees_every_tenant(self, make_manager: ManagerFactory) -> None:
        """The host (no actor) and an actor without a tenant list every tenant's jobs."""
        jobs = make_manager(handlers=HANDLERS, concurrency=0)
        async with jobs:
            submitted = await self._three_tenants(jobs)
            everyone = {job_id for group in submitted.values() for job_id in group}
            for actor in (None, USER, ADMIN):
                listed = await all_pages(jobs, limit=3, actor=actor)
                assert set(listed) == everyone
                assert len(listed) == len(everyone)

    async def test_filters_apply_inside_the_tenant(self, make_manager: ManagerFactory) -> None:
        """Status and kind filters never reach past the actor's tenant."""
        jobs = make_manager(handlers=HANDLERS, concurrency=1)
        async with jobs:
            alice_done = await jobs.submit("ok", actor=ALICE)
            bob_done = await jobs.submit("ok", actor=BOB)
            bob_failed = await jobs.submit("boom", actor=BOB)
            for job in (alice_done, bob_done, bob_failed):
                await jobs.wait(job.id, timeout=5)
            assert ids(await jobs.list(actor=ALICE, status="completed")) == [alice_done.id]
            assert ids(await jobs.list(actor=ALICE, status="failed")) == []
            assert ids(await jobs.list(actor=ALICE, kind="boom")) == []
            assert ids(await jobs.list(actor=BOB, status=["completed", "failed"])) == [
                bob_failed.id,
                bob_done.id,
            ]

    async def test_a_cursor_does_not_cross_tenants(self, make_manager: ManagerFactory) -> None:
        """A cursor from one tenant's paging, used by another, shows only the other's jobs."""
        jobs = make_manager(handlers=HANDLERS, concurrency=0)
        async with jobs:
            submitted = await self._three_tenants(jobs)
            first = await jobs.list(actor=ALICE, limit=1)
            assert first.next_cursor is not None
            page = await jobs.list(actor=BOB, cursor=first.next_cursor, limit=1000)
            assert set(ids(page)) <= set(submitted["globex"])


@asynccontextmanager
async def soft_deleting(make_manager: ManagerFactory) -> AsyncIterator[tuple[JobManager, dict[str, str]]]:
    """A soft-deleting manager with four finished jobs of two tenants; one of each deleted."""
    jobs = make_manager(handlers=HANDLERS, concurrency=1, delete_policy=DeletePolicy(mode="soft"))
    async with jobs:
        made: dict[str, str] = {}
        for name, actor in [
            ("acme-kept", ALICE),
            ("acme-gone", ALICE),
            ("globex-kept", BOB),
            ("globex-gone", BOB),
        ]:
            job = await jobs.submit("ok", name, actor=actor)
            await jobs.wait(job.id, timeout=5)
            made[name] = job.id
        await jobs.delete(made["acme-gone"], actor=ALICE)
        await jobs.delete(made["globex-gone"])
        yield jobs, made


class TestSoftDeleted:
    async def test_hidden_from_everyone_by_default(self, make_manager: ManagerFactory) -> None:
        """Soft-deleted jobs are left out of every plain listing, the host's included."""
        async with soft_deleting(make_manager) as (jobs, made):
            assert ids(await jobs.list()) == [made["globex-kept"], made["acme-kept"]]
            assert ids(await jobs.list(actor=ADMIN)) == [made["globex-kept"], made["acme-kept"]]
            assert ids(await jobs.list(actor=ALICE)) == [made["acme-kept"]]
            assert ids(await jobs.list(status="completed")) == [made["globex-kept"], made["acme-kept"]]

    async def test_host_and_admins_see_them_with_include_deleted(self, make_manager: ManagerFactory) -> None:
        """With include_deleted, the host and admins also list soft-deleted jobs, marked deleted."""
        async with soft_deleting(make_manager) as (jobs, made):
            everything = [made[n] for n in ("globex-gone", "globex-kept", "acme-gone", "acme-kept")]
            for actor in (None, ADMIN):
                page = await jobs.list(actor=actor, include_deleted=True)
                assert ids(page) == everything
                deleted = {job.id for job in page if job.deleted_at is not None}
                assert deleted == {made["acme-gone"], made["globex-gone"]}
                assert (
                    ids(await jobs.list(actor=actor, include_deleted=True, status="completed")) == everything
                )
                assert await all_pages(jobs, limit=1, actor=actor, include_deleted=True) == everything

    async def test_tenant_admin_sees_only_its_tenants_deleted_jobs(
        self, make_manager: ManagerFactory
    ) -> None:
        """An admin with a tenant lists its own tenant's deleted jobs, never another's."""
        async with soft_deleting(make_manager) as (jobs, made):
            page = await jobs.list(actor=ALICE_ADMIN, include_deleted=True)
            assert ids(page) == [made["acme-gone"], made["acme-kept"]]

    @pytest.mark.parametrize("actor", [USER, ALICE, BOB], ids=["no-tenant", "acme", "globex"])
    async def test_non_admin_asking_for_deleted_is_denied(
        self, actor: Actor, make_manager: ManagerFactory
    ) -> None:
        """A non-admin passing include_deleted=True gets PermissionDenied."""
        async with soft_deleting(make_manager) as (jobs, _):
            with pytest.raises(PermissionDenied):
                await jobs.list(actor=actor, include_deleted=True)

    async def test_hard_deleted_jobs_never_come_back(self, make_manager: ManagerFactory) -> None:
        """A hard-deleted job is not listed, even with include_deleted."""
        jobs = make_manager(handlers=HANDLERS, concurrency=1)
        async with jobs:
            kept, gone = await jobs.submit("ok"), await jobs.submit("ok")
            await jobs.wait(kept.id, timeout=5)
            await jobs.wait(gone.id, timeout=5)
            await jobs.delete(gone.id)
            assert ids(await jobs.list(include_deleted=True)) == [kept.id]
            assert ids(await jobs.list()) == [kept.id]


class Writes:
    """How many writes a store made, counted by :func:`yielding`."""

    count = 0


def yielding(store: JobStore) -> Writes:
    """Make ``store`` let other tasks run before every read and write, so that concurrent
    callers interleave as they would over a network; count its writes."""
    writes = Writes()
    get, replace, remove = store.get, store.replace, store.remove

    async def yielding_get(job_id: str) -> Job | None:
        await anyio.lowlevel.checkpoint()
        return await get(job_id)

    async def yielding_replace(job: Job, *, expected_version: int) -> bool:
        await anyio.lowlevel.checkpoint()
        writes.count += 1
        return await replace(job, expected_version=expected_version)

    async def yielding_remove(job_id: str, *, expected_version: int) -> bool:
        await anyio.lowlevel.checkpoint()
        writes.count += 1
        return await remove(job_id, expected_version=expected_version)

    store.get = yielding_get  # type: ignore[method-assign]
    store.replace = yielding_replace  # type: ignore[method-assign]
    store.remove = yielding_remove  # type: ignore[method-assign]
    apply = getattr(store, "apply", None)
    if apply is not None:  # the atomic write path the manager prefers

        async def yielding_apply(change: Change) -> bool:
            await anyio.lowlevel.checkpoint()
            writes.count += 1
            return await apply(change)  # type: ignore[no-any-return]

        store.apply = yielding_apply  # type: ignore[attr-defined]
    return writes


class YieldingBlobs(MemoryBlobStore):
    """A MemoryBlobStore that lets other tasks run before deleting."""

    async def delete_prefix(self, prefix: str) -> int:
        await anyio.lowlevel.checkpoint()
        return await super().delete_prefix(prefix)


class HeldRemoveStore(MemoryStore):
    """Holds the first record removal until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.first_remove_started = anyio.Event()
        self.release = anyio.Event()
        self._removes = 0

    async def remove(self, job_id: str, *, expected_version: int) -> bool:
        await self._hold()
        return await super().remove(job_id, expected_version=expected_version)

    async def apply(self, change: Change) -> bool:
        if change.job is None:
            await self._hold()
        return await super().apply(change)

    async def _hold(self) -> None:
        self._removes += 1
        if self._removes == 1:
            self.first_remove_started.set()
            await self.release.wait()


class TestConcurrentDeletes:
    @pytest.mark.parametrize("mode", ["hard", "soft"])
    async def test_hundred_deletes_of_one_job_one_wins(self, mode: str, make_manager: ManagerFactory) -> None:
        """Of 100 concurrent deletes of one finished job exactly one succeeds and 99 get
        JobNotFound; other jobs and their artifacts are untouched; one delete is audited."""
        store, blobs = make_manager.new_store(), YieldingBlobs()
        writes = yielding(store)
        jobs = make_manager(
            store=store,
            blobs=blobs,
            concurrency=1,
            delete_policy=DeletePolicy(mode=mode),
            handlers={"write": _write_two},
        )
        async with jobs:
            made = [await jobs.submit("write", n) for n in range(3)]
            for job in made:
                await jobs.wait(job.id, timeout=5)
            target, others = made[1].id, [job.id for job in made if job.id != made[1].id]
            before = {job_id: await jobs.get(job_id) for job_id in others}
            writes_before = writes.count
            outcomes: list[str] = []

            async def delete() -> None:
                try:
                    await jobs.delete(target)
                except JobNotFound:
                    outcomes.append("not found")
                else:
                    outcomes.append("deleted")

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    for _ in range(100):
                        tg.start_soon(delete)

            assert writes.count > writes_before
            assert sorted(outcomes) == ["deleted"] + ["not found"] * 99
            with pytest.raises(JobNotFound):
                await jobs.get(target)
            for job_id in others:
                assert await jobs.get(job_id) == before[job_id]
                assert await jobs.artifacts(job_id) == ["input.wav", "out/transcript.txt"]
            left = await blobs.list(f"jobs/{target}/")
            if mode == "hard":
                assert left == []
            else:
                assert left == [f"jobs/{target}/input.wav", f"jobs/{target}/out/transcript.txt"]
                assert (await jobs.get(target, include_deleted=True)).deleted_at is not None
            records = await jobs.audit(limit=1000)
            assert [(r.action, r.job_id) for r in records] == [("delete", target)]
            assert ids(await jobs.list()) == others[::-1]

    @pytest.mark.store(
        "memory",
        reason="a MemoryStore subclass holds the removal; its wait_all_tasks_blocked() step would "
        "not wait for a delete that is waiting on a SQLite thread",
    )
    async def test_winning_delete_audits_the_artifacts_removed(self, make_manager: ManagerFactory) -> None:
        """When a losing concurrent delete removed the files, the audit still counts them."""
        store = HeldRemoveStore()
        jobs = make_manager(
            store=store, blobs=MemoryBlobStore(), concurrency=1, handlers={"write": _write_two}
        )
        async with jobs:
            job = await jobs.submit("write")
            await jobs.wait(job.id, timeout=5)
            outcomes: list[str] = []

            async def delete() -> None:
                try:
                    await jobs.delete(job.id)
                except JobNotFound:
                    outcomes.append("not found")
                else:
                    outcomes.append("deleted")

            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(delete)  # deletes the files, then its record removal is held
                    await store.first_remove_started.wait()
                    tg.start_soon(delete)  # must not remove the files the first one counts
                    await anyio.wait_all_tasks_blocked()
                    store.release.set()
            assert sorted(outcomes) == ["deleted", "not found"]
            [record] = await jobs.audit(job.id)
            assert record.details["artifacts_deleted"] == 2


class TestCounts:
    async def test_every_status_is_counted_by_kind_too(self, make_manager: ManagerFactory) -> None:
        """counts() gives every status (zeros included), agrees with list(), and filters by kind."""
        async with mixed_jobs(make_manager) as mixed:
            counts = await mixed.jobs.counts()
            expected = dict.fromkeys(JobStatus, 0)
            for status in STATUS_OF.values():
                expected[status] += 1
            assert counts == expected
            hold = await mixed.jobs.counts(kind="hold")
            assert hold[JobStatus.RUNNING] == 1
            assert hold[JobStatus.CANCELLING] == 1
            assert hold[JobStatus.PENDING] == 1
            assert hold[JobStatus.COMPLETED] == 0
            assert sum((await mixed.jobs.counts(kind="nothing-like-it")).values()) == 0

    async def test_tenants_count_their_own_and_soft_deleted_jobs_are_left_out(
        self, make_manager: ManagerFactory
    ) -> None:
        """An actor counts only its tenant's jobs; a soft-deleted job counts for nobody."""
        jobs = make_manager(handlers=HANDLERS, delete_policy=DeletePolicy(mode="soft"))
        alice, bob = Actor("alice", tenant="acme"), Actor("bob", tenant="globex")
        async with jobs:
            mine = [await jobs.submit("ok", actor=alice) for _ in range(2)]
            await jobs.submit("ok", actor=bob)
            for job in mine:
                await jobs.wait(job.id, timeout=5)
            await jobs.delete(mine[0].id, actor=alice)
            assert (await jobs.counts(actor=alice))[JobStatus.COMPLETED] == 1
            assert sum((await jobs.counts(actor=bob)).values()) == 1
            assert sum((await jobs.counts()).values()) == 2  # the host: every tenant

    @pytest.mark.parametrize("kind", ["", "  ", "\ud800", "a\x00b", 7])
    async def test_a_bad_kind_is_invalid_input(self, kind: Any, make_manager: ManagerFactory) -> None:
        jobs = make_manager(handlers=HANDLERS, concurrency=0)
        async with jobs:
            with pytest.raises(InvalidInput):
                await jobs.counts(kind=kind)

    async def test_a_store_without_count_jobs_gives_the_same_counts(self) -> None:
        """The fallback pages through list_jobs(): the same answer, for any JobStore."""

        class Plain(MemoryStore):
            count_jobs = None  # type: ignore[assignment]

        store = Plain()
        assert not isinstance(store, StatusCounter)
        jobs = JobManager(store, sweep_interval=None, concurrency=0)
        jobs.declare("later")
        async with jobs:
            for _ in range(1203):
                await jobs.submit("later")
            counts = await jobs.counts()
        assert counts[JobStatus.PENDING] == 1203


class CraftedIds:
    """Job ids chosen by the test (submit draws them from ``new_id()``); once they are used
    up, random ids that start with ``9``, so that none shares a chosen id's prefix."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, chosen: Iterable[str]) -> None:
        import jobkit._manager

        self._chosen = list(chosen)
        real = jobkit._manager.new_id

        def new_id(nbytes: int = 16) -> str:
            if nbytes != 16:
                return real(nbytes)
            return self._chosen.pop(0) if self._chosen else "9" + real(nbytes)[1:]

        monkeypatch.setattr("jobkit._manager.new_id", new_id)


SHARED = ["abcd" + "0" * 27 + "1", "abcd" + "0" * 27 + "2", "abce" + "f" * 28, "0123" + "4" * 28]


class TestIdPrefixes:
    async def test_a_unique_prefix_resolves_in_any_case(
        self, make_manager: ManagerFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """resolve() turns a unique start of an id (4+ characters, any case) into the id; a full id
        is itself; a prefix that starts several ids is InvalidInput naming them; none: JobNotFound."""
        CraftedIds(monkeypatch, SHARED)
        jobs = make_manager(handlers=HANDLERS, concurrency=0)
        async with jobs:
            made = [(await jobs.submit("ok", n)).id for n in range(4)]
            assert made == SHARED
            assert await jobs.resolve("abce") == SHARED[2]
            assert await jobs.resolve("ABCEFF") == SHARED[2]
            assert await jobs.resolve("abcd" + "0" * 27 + "1") == SHARED[0]
            assert await jobs.resolve("0123") == SHARED[3]
            with pytest.raises(InvalidInput, match="several") as raised:
                await jobs.resolve("abcd")
            assert "abcd0000" in str(raised.value)
            with pytest.raises(JobNotFound):
                await jobs.resolve("ffff")
            for bad in ("abc", "abcz", "ab cd", "a" * 33, ""):
                with pytest.raises((InvalidInput, JobNotFound)):
                    await jobs.resolve(bad)
            with pytest.raises(InvalidInput, match="4 to 32"):
                await jobs.resolve("abc")

    async def test_prefixes_stay_inside_the_tenant_and_skip_deleted_jobs(
        self, make_manager: ManagerFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Another tenant's job never matches, so it neither resolves nor makes a prefix ambiguous;
        a soft-deleted job is left out."""
        CraftedIds(monkeypatch, SHARED)
        jobs = make_manager(handlers=HANDLERS, concurrency=0, delete_policy=DeletePolicy(mode="soft"))
        async with jobs:
            await jobs.submit("ok", actor=ALICE)
            await jobs.submit("ok", actor=BOB)
            third = await jobs.submit("ok", actor=ALICE)
            assert await jobs.resolve("abcd", actor=ALICE) == SHARED[0]
            assert await jobs.resolve("abcd", actor=BOB) == SHARED[1]
            with pytest.raises(JobNotFound):
                await jobs.resolve(SHARED[1], actor=ALICE)  # a full id of another tenant
            with pytest.raises(InvalidInput, match="several"):
                await jobs.resolve("abcd")  # the host sees both
            await jobs.cancel(third.id)
            await jobs.delete(third.id)
            with pytest.raises(JobNotFound):
                await jobs.resolve("abce")

    async def test_list_by_id_prefix_is_one_filtered_page(
        self, make_manager: ManagerFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """list(id_prefix=) gives the matching jobs newest first, with the other filters, on
        one page of at most ``limit``; a cursor with it is InvalidInput."""
        CraftedIds(monkeypatch, SHARED)
        jobs = make_manager(handlers=HANDLERS, concurrency=0)
        async with jobs:
            for n in range(4):
                await jobs.submit("ok" if n != 1 else "boom", n)
            await jobs.submit("ok")  # a random id
            page = await jobs.list(id_prefix="ABC")
            assert ids(page) == SHARED[2::-1]
            assert page.next_cursor is None
            assert ids(await jobs.list(id_prefix="abc", limit=2)) == SHARED[2:0:-1]
            assert ids(await jobs.list(id_prefix="abc", kind="boom")) == [SHARED[1]]
            assert ids(await jobs.list(id_prefix="abc", status="completed")) == []
            assert ids(await jobs.list(id_prefix=SHARED[3])) == [SHARED[3]]
            cursor = (await jobs.list(limit=1)).next_cursor
            for bad in ({"cursor": cursor}, {"id_prefix": "xyz"}, {"id_prefix": ""}):
                with pytest.raises(InvalidInput):
                    await jobs.list(**{"id_prefix": "abc", **bad})

    async def test_a_store_without_the_prefix_lookup_gives_the_same_answers(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The fallback pages through list_jobs(): the same answers for any JobStore."""
        from jobkit.abc import PrefixFinder

        class Plain(MemoryStore):
            jobs_with_prefix = None  # type: ignore[assignment]

        store = Plain()
        assert not isinstance(store, PrefixFinder)
        CraftedIds(monkeypatch, SHARED)
        jobs = JobManager(store, sweep_interval=None, concurrency=0)
        jobs.declare("later")
        async with jobs:
            for _ in range(1203):
                await jobs.submit("later")
            assert await jobs.resolve("abce") == SHARED[2]
            assert ids(await jobs.list(id_prefix="abc")) == SHARED[2::-1]
            with pytest.raises(InvalidInput, match="several"):
                await jobs.resolve("abcd")


class TestTenantFilter:
    async def test_the_host_and_untenanted_admins_narrow_to_one_tenant(
        self, make_manager: ManagerFactory
    ) -> None:
        """tenant= narrows list() and counts() to one tenant for the host and actors without a
        tenant; a tenant's actor may name its own tenant and gets PermissionDenied for another."""
        jobs = make_manager(handlers=HANDLERS, concurrency=0)
        async with jobs:
            made: dict[str | None, list[str]] = {"acme": [], "globex": [], None: []}
            for n, actor in enumerate([ALICE, BOB, None, ALICE, BOB]):
                job = await jobs.submit("ok", n, actor=actor)
                made[job.tenant].insert(0, job.id)
            for actor in (None, ADMIN, USER):
                assert ids(await jobs.list(actor=actor, tenant="acme")) == made["acme"]
                assert (await jobs.counts(actor=actor, tenant="globex"))[JobStatus.PENDING] == 2
                assert ids(await jobs.list(actor=actor, tenant="initech")) == []
            assert ids(await jobs.list(actor=ALICE, tenant="acme")) == made["acme"]
            assert (await jobs.counts(actor=ALICE, tenant="acme"))[JobStatus.PENDING] == 2
            for call in (jobs.list, jobs.counts):
                with pytest.raises(PermissionDenied):
                    await call(actor=ALICE, tenant="globex")
                with pytest.raises(PermissionDenied):
                    await call(actor=ALICE_ADMIN, tenant="globex")
                for bad in ("", 7, "a\x00b", "x" * 201):
                    with pytest.raises(InvalidInput):
                        await call(tenant=bad)
