"""The sweeper: one method per maintenance duty, each batched and returning its count.

``sweep()`` takes the store's exclusive section (one sweeper at a time across processes,
where the store has sections), runs the duties in order and builds the report. Its cost
follows the work to do, never the number of jobs kept. Correctness never depends on the
section: every change is still a compare-and-swap.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

import anyio
import attrs

from . import _machine as machine
from ._core import Core
from ._deleter import Deleter
from ._errors import BackendError, InvalidState, JobkitError, JobNotFound
from ._log import get_logger
from ._records import TERMINAL, AuditAction, EventType, Job, JobStatus, Retry, Schedule, SweepReport, new_id
from ._validate import artifact_prefix
from .abc import Change

__all__ = ["SWEEPER", "Sweeper"]

log = get_logger("jobkit")

#: The actor id of the sweeper in audit records.
SWEEPER = "system:sweeper"
BATCH = 500
T = TypeVar("T")


#: The label a job fired by a schedule carries (its value: the schedule's name).
SCHEDULE_LABEL = "jobkit.schedule"


def schedule_key(schedule: Schedule) -> str:
    """The idempotency key of the job for the schedule's next fire time."""
    return f"schedule:{schedule.name}:{schedule.next_run_at.isoformat()}"


class Sweeper:
    """Expires, purges, retries deferred artifact deletes, recovers lost jobs, trims the audit;
    makes due jobs pending and fires due schedules (also between sweeps, at their time)."""

    __slots__ = (
        "_audit_retention",
        "_core",
        "_deleter",
        "_is_ours",
        "_retry_for",
        "_sleep_until",
        "_wake",
    )

    def __init__(
        self,
        core: Core,
        deleter: Deleter,
        *,
        audit_retention: timedelta | None,
        is_ours: Callable[[str], bool],
        retry_for: Callable[[str], Retry | None] = lambda kind: None,
    ) -> None:
        self._core = core
        self._deleter = deleter
        self._audit_retention = audit_retention
        self._is_ours = is_ours
        self._retry_for = retry_for
        self._wake = anyio.Event()
        self._sleep_until: datetime | None = None

    async def sweep(self) -> SweepReport:
        async with self._core.exclusive("jobkit.sweeper") as mine:
            if not mine:
                return SweepReport()
            now = self._core.clock()
            # Each duty on its own: one that fails (a store error) never stops the others.
            expired, from_expired = await _duty("expire", self.expire(now), (0, 0))
            from_queue = await _duty("retry purges", self.retry_purges(), 0)
            purged, from_purged = await _duty("purge soft-deleted", self.purge_soft_deleted(now), (0, 0))
            report = SweepReport(
                expired=expired,
                purged=purged,
                artifacts_deleted=from_expired + from_queue + from_purged,
                recovered=await _duty("recover leases", self.recover_leases(now), 0),
                audit_removed=await _duty("trim audit", self.trim_audit(now), 0),
                promoted=await _duty("promote due jobs", self.promote(now), 0),
                fired=await _duty("fire schedules", self.fire_schedules(now), 0),
            )
        if any(attrs.astuple(report)):
            log.info("swept", **attrs.asdict(report))
        return report

    async def run_forever(self, interval: float, is_open: Callable[[], bool]) -> None:
        """Sweep every ``interval`` seconds; a failing sweep is logged and tried again."""
        while True:
            await anyio.sleep(interval)
            try:
                await self.sweep()
            except JobkitError as exc:
                if not is_open():
                    return
                log.warning("sweep failed; retrying next interval", error=str(exc))
            except Exception:
                log.exception("sweep failed; retrying next interval")

    # -- timers: due jobs and schedules between sweeps ---------------------------------

    def hint(self, at: datetime) -> None:
        """Something is due at ``at`` (a delayed job, a retry, a schedule): wake in time for it."""
        if self._sleep_until is None or at < self._sleep_until:
            self._wake.set()

    async def run_timers(self, poll: float) -> None:
        """Promote due jobs and fire due schedules at their time: sleep until the earliest
        ``run_at`` or fire time the store knows of, a :meth:`hint`, or ``poll`` seconds (another
        process may have scheduled something). Every process promotes (each job once: the
        store's write is atomic); one at a time fires schedules."""
        core = self._core
        store = core.store
        while True:
            # A fresh event before reading the store: a hint that comes after the read (a
            # job scheduled meanwhile) wakes the sleep below instead of being lost.
            self._wake = anyio.Event()
            self._sleep_until = None
            now = core.clock()
            try:
                due, fire = await store.next_due(), await store.next_schedule()
            except Exception:
                log.exception("could not read the next due job or schedule; retrying")
                due = fire = None
            worked = False
            if due is not None and due <= now:
                worked = await _duty("promote due jobs", self.promote(now), 0) > 0
            if fire is not None and fire <= now:
                async with core.exclusive("jobkit.schedules") as mine:
                    if mine:
                        worked = await _duty("fire schedules", self.fire_schedules(now), 0) > 0 or worked
            if worked:
                await anyio.lowlevel.checkpoint()
                continue
            wait = poll
            for at in (due, fire):
                if at is not None and at > now:
                    wait = min(wait, (at - now).total_seconds())
            self._sleep_until = now + timedelta(seconds=wait)
            with anyio.move_on_after(wait):
                await self._wake.wait()

    async def promote(self, now: datetime) -> int:
        """Make scheduled jobs whose ``run_at`` came pending; return how many."""
        core = self._core
        total = 0
        while True:
            jobs = await core.store.promote_due(now, BATCH)
            for job in jobs:
                core.announce(job, EventType.REQUEUED, {"reason": "due"})
            total += len(jobs)
            if len(jobs) < BATCH:
                return total
            await anyio.lowlevel.checkpoint()

    async def fire_schedules(self, now: datetime) -> int:
        """Submit one job for each due schedule (missed fire times make one job) and move the
        schedule to its next fire time; return how many jobs were stored."""
        fired = 0
        for schedule in await self._core.store.due_schedules(now, BATCH):
            try:
                fired += await self._fire(schedule, now)
            except Exception:
                log.exception("could not fire a schedule; retrying", schedule=schedule.name)
        return fired

    async def _fire(self, schedule: Schedule, now: datetime) -> int:
        from ._cron import next_fire

        core = self._core
        following = next_fire(schedule.cron, schedule.timezone, now)
        retry = self._retry_for(schedule.kind)
        job = Job(
            id=new_id(),
            kind=schedule.kind,
            status=JobStatus.PENDING,
            payload=schedule.payload,
            tenant=schedule.tenant,
            priority=schedule.priority,
            created_at=now,
            max_attempts=1 if retry is None else retry.attempts,
            labels={SCHEDULE_LABEL: schedule.name},
            idempotency_key=schedule_key(schedule),
            retry=retry,
        )
        # The key makes this safe to repeat: another process that fired this time first, or
        # this one before a crash, already holds it, and no second job is stored.
        holder = await core.store.insert(job)
        if holder is None:
            core.announce(job, EventType.SUBMITTED, {"schedule": schedule.name})
            log.info("schedule fired", schedule=schedule.name, job_id=job.id, tenant=schedule.tenant)
        await core.store.advance_schedule(schedule, following)
        self.hint(following)
        return 1 if holder is None else 0

    # -- the duties --------------------------------------------------------------------

    async def expire(self, now: datetime) -> tuple[int, int]:
        """Delete finished jobs whose ``expires_at`` passed: (jobs, artifacts deleted)."""
        return await _each(lambda: self._core.store.expired(now, BATCH), self._expire_one)

    async def _expire_one(self, job: Job) -> int | None:
        if not job.is_terminal or job.deleted_at is not None:
            return None
        try:
            # Expiry ignores `deletable`: every finished job expires.
            deleted = await self._deleter.delete(job, SWEEPER, AuditAction.EXPIRE, TERMINAL)
            return 0 if deleted is None else deleted  # None: uncounted (queued for later)
        except (JobNotFound, InvalidState):
            return None  # deleted or changed meanwhile
        except BackendError:
            return None  # on_artifact_error="fail": keep it, retry next sweep

    async def retry_purges(self) -> int:
        """Retry the queued artifact deletes; return how many artifacts went."""
        total = 0
        store = self._core.store
        while prefixes := await store.pending_purges(BATCH):
            done = 0
            for prefix in prefixes:
                count, gone = await self._deleter.purge_queued(prefix)
                total += count
                done += gone
            if done < len(prefixes):
                break
        return total

    async def purge_soft_deleted(self, now: datetime) -> tuple[int, int]:
        """Hard-remove soft-deleted jobs after ``purge_soft_deleted_after``: (jobs, artifacts)."""
        after = self._core.delete_policy.purge_soft_deleted_after
        if after is None:
            return 0, 0
        cutoff = now - after
        return await _each(lambda: self._core.store.soft_deleted_before(cutoff, BATCH), self._purge_one)

    async def _purge_one(self, job: Job) -> int | None:
        core = self._core
        prefix = artifact_prefix(job.id)
        # Counted before, deleted after the write that removes the record (and queues the
        # prefix): a sweeper in another process that loses the write touches nothing.
        keys = await self._deleter.list_artifacts(prefix)
        count = None if keys is None else len(keys)
        audit = core.audit_record(AuditAction.PURGE, SWEEPER, job, {"artifacts_deleted": count})
        change = Change(
            job_id=job.id,
            expected_version=job.version,
            job=None,
            audit=audit,
            purge=prefix if count != 0 else None,  # None: uncounted, queued all the same
        )
        if not await core.apply(change):
            return None
        core.log_audit(audit, job.kind)
        if change.purge is not None:
            await self._deleter.purge_queued(prefix, keys)
        core.announce(job, EventType.DELETED, {"mode": "purge", "artifacts_deleted": count}, removed=True)
        return 0 if count is None else count

    async def recover_leases(self, now: datetime) -> int:
        """Put back (or fail) jobs whose worker's lease ran out; return how many."""
        recovered, _ = await _each(lambda: self._core.store.expired_leases(now, BATCH), self._recover_one)
        return recovered

    async def _recover_one(self, job: Job) -> int | None:
        if self._is_ours(job.id):
            return None  # ours and alive: the heartbeat is just late
        core = self._core
        new = machine.lose_lease(job, core.clock(), core.retention)
        audit = core.audit_record(
            AuditAction.RECOVER, SWEEPER, new, {"to_status": new.status.value, "attempts": new.attempts}
        )
        if not await core.apply(Change(job_id=job.id, expected_version=job.version, job=new, audit=audit)):
            return None
        core.log_audit(audit, job.kind)
        core.announce(new, machine.event_for(new), {"reason": machine.WORKER_LOST})
        return 0

    async def trim_audit(self, now: datetime) -> int:
        """Remove audit records older than ``audit_retention``; return how many."""
        if self._audit_retention is None:
            return 0
        return await self._core.store.remove_audit_before(now - self._audit_retention)


async def _each(
    fetch: Callable[[], Awaitable[list[Job]]], one: Callable[[Job], Awaitable[int | None]]
) -> tuple[int, int]:
    """Run ``one`` on batch after batch from ``fetch`` until a batch makes no progress.

    ``one`` returns None for a job it left alone, else a count (e.g. artifacts deleted).
    Returns (jobs handled, sum of the counts).
    """
    handled = total = 0
    while batch := await fetch():
        await anyio.lowlevel.checkpoint()  # a long sweep never starves the loop
        progressed = False
        for job in batch:
            try:
                count = await one(job)
            except Exception:
                # One bad row never stops a sweep: log it, leave it, go on.
                log.exception("sweep could not handle a job; skipped", job_id=job.id)
                continue
            if count is None:
                continue
            progressed = True
            handled += 1
            total += count
        if not progressed:
            break
    return handled, total


async def _duty(name: str, work: Awaitable[T], nothing: T) -> T:
    """Run one duty of the sweep; when it fails, log it and count nothing."""
    try:
        return await work
    except Exception:
        log.exception("sweep duty failed; the others go on", duty=name)
        return nothing
