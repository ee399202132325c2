"""Tenants, authorization and the audit trail."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest

from jobkit import (
    Action,
    Actor,
    DefaultAuthorizer,
    Job,
    JobContext,
    JobNotFound,
    PermissionDenied,
)
from managers import ManagerFactory

pytestmark = pytest.mark.anyio

ALICE = Actor("alice", tenant="acme")
BOB = Actor("bob", tenant="globex")
ACME_ADMIN = Actor("root", tenant="acme", roles={"admin"})
GLOBEX_ADMIN = Actor("boss", tenant="globex", roles={"admin"})


async def _write(ctx: JobContext, payload: Any) -> str:
    await ctx.put_artifact("result.txt", b"secret")
    return "done"


HANDLERS = {"work": _write}


class TestTenants:
    async def test_submissions_get_the_actor_tenant(self, make_manager: ManagerFactory) -> None:
        """An actor's submission is stored under its tenant."""
        jobs = make_manager(handlers=HANDLERS, concurrency=0)
        async with jobs:
            job = await jobs.submit("work", actor=ALICE)
        assert job.tenant == "acme"

    async def test_other_tenants_jobs_are_not_found_everywhere(self, make_manager: ManagerFactory) -> None:
        """Every method reports another tenant's job as JobNotFound, never PermissionDenied."""
        jobs = make_manager(handlers=HANDLERS)
        async with jobs:
            job = await jobs.submit("work", actor=ALICE)
            await jobs.wait(job.id, timeout=5)
            calls = [
                lambda: jobs.get(job.id, actor=BOB),
                lambda: jobs.cancel(job.id, actor=BOB),
                lambda: jobs.delete(job.id, actor=BOB),
                lambda: jobs.artifacts(job.id, actor=BOB),
                lambda: jobs.read_artifact(job.id, "result.txt", actor=BOB),
                lambda: jobs.delete_artifact(job.id, "result.txt", actor=BOB),
                lambda: jobs.set_priority(job.id, 5, actor=Actor("x", tenant="globex")),
                lambda: jobs.set_priority(job.id, 5, actor=Actor("x", tenant="globex", roles={"admin"})),
                lambda: jobs.position(job.id, actor=BOB),
                lambda: jobs.wait(job.id, actor=BOB),
                lambda: jobs.get(
                    job.id, actor=Actor("x", tenant="globex", roles={"admin"}), include_deleted=True
                ),
            ]
            for call in calls:
                with pytest.raises(JobNotFound):
                    await call()
            with pytest.raises(JobNotFound):
                async with jobs.subscribe(actor=BOB, job_id=job.id):
                    pass
            assert [j.id for j in await jobs.list(actor=BOB)] == []
            assert [j.id for j in await jobs.list(actor=ALICE)] == [job.id]
            assert (await jobs.get(job.id, actor=ALICE)).status == "completed"
            assert await jobs.read_artifact(job.id, "result.txt", actor=ALICE) == b"secret"

    async def test_events_are_filtered_by_tenant(self, make_manager: ManagerFactory) -> None:
        """A subscriber sees only its tenant's events; the host sees all."""
        jobs = make_manager(handlers=HANDLERS, concurrency=0)
        async with jobs, jobs.subscribe(actor=BOB) as bobs, jobs.subscribe() as hosts:
            await jobs.submit("work", actor=ALICE)
            mine = await jobs.submit("work", actor=BOB)
            first = await bobs.__anext__()
            assert (first.job_id, first.tenant) == (mine.id, "globex")
            assert [(await hosts.__anext__()).tenant for _ in range(2)] == ["acme", "globex"]


class TestAuthorization:
    async def test_set_priority_is_admin_only_by_default(self, make_manager: ManagerFactory) -> None:
        """A non-admin gets PermissionDenied for set_priority; an admin of the tenant may."""
        jobs = make_manager(handlers=HANDLERS, concurrency=0)
        async with jobs:
            job = await jobs.submit("work", actor=ALICE)
            with pytest.raises(PermissionDenied):
                await jobs.set_priority(job.id, 10, actor=ALICE)
            boosted, position = await jobs.set_priority(job.id, 10, actor=ACME_ADMIN)
            assert (boosted.priority, position) == (10, 1)

    async def test_host_can_make_cancel_and_delete_admin_only(self, make_manager: ManagerFactory) -> None:
        """With a stricter authorizer, cancel and delete need the admin role."""
        strict = DefaultAuthorizer(
            admin_actions={*DefaultAuthorizer().admin_actions, Action.CANCEL, Action.DELETE}
        )
        jobs = make_manager(handlers=HANDLERS, concurrency=0, authorizer=strict)
        async with jobs:
            job = await jobs.submit("work", actor=ALICE)
            with pytest.raises(PermissionDenied):
                await jobs.cancel(job.id, actor=ALICE)
            await jobs.cancel(job.id, actor=ACME_ADMIN)
            with pytest.raises(PermissionDenied):
                await jobs.delete(job.id, actor=ALICE)
            await jobs.delete(job.id, actor=ACME_ADMIN)

    async def test_custom_authorizer_protocol(self, make_manager: ManagerFactory) -> None:
        """Any object with allows(actor, action, job) is an Authorizer."""
        decisions: list[tuple[str, str, str | None]] = []

        class ReadOnlyForInterns:
            def allows(self, actor: Actor, action: Action, job: Job | None) -> bool:
                decisions.append((actor.id, action.value, None if job is None else job.id))
                return "intern" not in actor.roles or action is Action.READ

        jobs = make_manager(handlers=HANDLERS, concurrency=0, authorizer=ReadOnlyForInterns())
        intern = Actor("ian", tenant="acme", roles={"intern"})
        async with jobs:
            with pytest.raises(PermissionDenied):
                await jobs.submit("work", actor=intern)
            job = await jobs.submit("work", actor=ALICE)
            assert (await jobs.get(job.id, actor=intern)).id == job.id
            with pytest.raises(PermissionDenied):
                await jobs.cancel(job.id, actor=intern)
        assert ("ian", "cancel", job.id) in decisions

    async def test_tenant_check_comes_before_permission(self, make_manager: ManagerFactory) -> None:
        """A non-admin of another tenant gets JobNotFound, not PermissionDenied, for admin actions."""
        jobs = make_manager(handlers=HANDLERS, concurrency=0)
        async with jobs:
            job = await jobs.submit("work", actor=ALICE)
            with pytest.raises(JobNotFound):
                await jobs.set_priority(job.id, 1, actor=BOB)

    async def test_audit_trail_is_admin_only_and_tenant_scoped(self, make_manager: ManagerFactory) -> None:
        """Reading the audit trail needs admin; a tenant admin sees only its tenant's records."""
        jobs = make_manager(handlers=HANDLERS, concurrency=0)
        async with jobs:
            a = await jobs.submit("work", actor=ALICE)
            b = await jobs.submit("work", actor=BOB)
            await jobs.cancel(a.id, actor=ALICE)
            await jobs.cancel(b.id, actor=BOB)
            with pytest.raises(PermissionDenied):
                await jobs.audit(actor=ALICE)
            assert [r.job_id for r in await jobs.audit(actor=ACME_ADMIN)] == [a.id]
            assert {r.job_id for r in await jobs.audit()} == {a.id, b.id}


@contextmanager
def audit_lines() -> Iterator[list[logging.LogRecord]]:
    """The records the 'jobkit.audit' logger emits meanwhile (at info level)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("jobkit.audit")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class TestAudit:
    async def test_every_management_action_is_audited(self, make_manager: ManagerFactory) -> None:
        """cancel, delete, delete_artifact and set_priority each leave a record with who/when/what."""
        jobs = make_manager(handlers=HANDLERS, concurrency=1)
        running, gate = anyio.Event(), anyio.Event()

        @jobs.handler("gate")
        async def gate_handler(ctx: JobContext, payload: Any) -> None:
            running.set()
            await gate.wait()

        async with jobs:
            blocker = await jobs.submit("gate")
            # The one slot must be taken before the priority change: a "work" job raised to
            # 7 would otherwise be claimed first and finish before it is cancelled (and the
            # gate job, never released, would hold up the manager's exit for good).
            await running.wait()
            done = await jobs.submit("work", {"card": "4111-1111"}, actor=ALICE)
            queued = await jobs.submit("work", {"card": "4111-1111"}, actor=ALICE)
            await jobs.set_priority(queued.id, 7, actor=ACME_ADMIN)
            await jobs.cancel(queued.id, actor=ALICE, reason="dup")
            gate.set()
            await jobs.wait(blocker.id, timeout=5)
            await jobs.wait(done.id, timeout=5)
            await jobs.delete_artifact(done.id, "result.txt", actor=ALICE)
            with audit_lines() as lines:
                await jobs.delete(done.id, actor=ALICE)
            records = await jobs.audit()
        actions = [(r.action.value, r.actor_id, r.tenant) for r in records]
        assert actions == [
            ("delete", "alice", "acme"),
            ("delete_artifact", "alice", "acme"),
            ("cancel", "alice", "acme"),
            ("set_priority", "root", "acme"),
        ]
        by_action = {r.action.value: r for r in records}
        assert by_action["set_priority"].details["to"] == 7
        assert by_action["cancel"].details["reason"] == "dup"
        for record in records:
            assert "4111-1111" not in repr(record), "the payload never reaches the audit trail"
            assert record.at.tzinfo is not None
        [logged] = [r for r in lines if r.jobkit_event == "delete"]
        assert logged.jobkit["job_id"] == done.id
        assert logged.jobkit["actor"] == "alice"
        assert logged.levelno == logging.INFO
        assert logged.getMessage().startswith(f"delete job_id={done.id!r}")

    async def test_audit_outlives_hard_delete(self, make_manager: ManagerFactory) -> None:
        """After a hard delete the job is gone but its audit records remain."""
        jobs = make_manager(handlers=HANDLERS)
        async with jobs:
            job = await jobs.submit("work")
            await jobs.wait(job.id, timeout=5)
            await jobs.delete(job.id)
            with pytest.raises(JobNotFound):
                await jobs.get(job.id)
            assert [r.action for r in await jobs.audit(job.id)] == ["delete"]
