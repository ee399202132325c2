"""``jobkit status``: what a store holds now, who holds which lease, and whether the
store's cross-process signals reach this process."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from .._records import Job, JobStatus
from ..abc import JobStore, Lease, LeaseReader, Note, SignalingStore, StatusCounter

if TYPE_CHECKING:
    from ..client import JobClient

__all__ = ["LISTENER_WAIT", "SCAN_LIMIT", "StatusReport", "remote_status_report", "status_report"]

#: Jobs listed per status at the most: the count of a store without count_jobs() stops
#: there (shown as "10000+"), and the oldest pending job is looked for among them.
SCAN_LIMIT = 10_000
#: Leases listed at the most, the soonest to expire first.
LEASES_SHOWN = 50
#: How long to wait for the store's listener to connect, in seconds.
LISTENER_WAIT = 5.0
#: The unfinished statuses counted, in the order shown (scheduled last: it was added later).
_ACTIVE = (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.CANCELLING, JobStatus.SCHEDULED)


@attrs.frozen
class StatusReport:
    """What ``jobkit status`` found."""

    counts: dict[str, int]
    #: Statuses whose count stopped at :data:`SCAN_LIMIT`.
    capped: frozenset[str]
    oldest_pending: datetime | None
    #: None when the store cannot list its leases.
    leases: Sequence[Lease] | None
    #: ``listener``: "connected", "not connected", "polling" or "none"; plus ``detail``.
    listener: dict[str, Any]
    #: The kinds no worker starts now.
    paused: frozenset[str] = frozenset()
    #: The earliest ``run_at`` of the scheduled jobs.
    next_due: datetime | None = None
    #: The earliest fire time of the schedules.
    next_schedule: datetime | None = None
    #: Over ``--url``: the running and cancelling jobs (the REST API serves no leases).
    running: Sequence[Job] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "capped": sorted(self.capped),
            "oldest_pending": None if self.oldest_pending is None else self.oldest_pending.isoformat(),
            "leases": None
            if self.leases is None
            else [
                {
                    "job_id": lease.job.id,
                    "kind": lease.job.kind,
                    "status": lease.job.status.value,
                    "worker": lease.owner,
                    "lease_until": lease.until.isoformat(),
                    "attempts": lease.job.attempts,
                }
                for lease in self.leases
            ],
            "listener": self.listener,
            "paused": sorted(self.paused),
            "next_due": None if self.next_due is None else self.next_due.isoformat(),
            "next_schedule": None if self.next_schedule is None else self.next_schedule.isoformat(),
            "running": None
            if self.running is None
            else [
                {
                    "job_id": job.id,
                    "kind": job.kind,
                    "status": job.status.value,
                    "started_at": None if job.started_at is None else job.started_at.isoformat(),
                    "attempts": job.attempts,
                    "progress": job.progress,
                }
                for job in self.running
            ],
        }


async def status_report(store: JobStore) -> StatusReport:
    """Count the unfinished jobs (up to :data:`SCAN_LIMIT` each), list the leases, the paused
    kinds and the next due times, check the listener."""
    await store.open()
    try:
        # The oldest pending job is looked for among the newest SCAN_LIMIT pending ones; a
        # store that counts in one query is not paged through for the counts too.
        pending, oldest = await _count(store, JobStatus.PENDING)
        if isinstance(store, StatusCounter):
            exact = await store.count_jobs(tenant=None, kind=None)
            counts = {status.value: exact.get(status, 0) for status in _ACTIVE}
            capped: set[str] = set()
        else:
            paged = {JobStatus.PENDING: pending}
            for status in _ACTIVE[1:]:
                paged[status], _ = await _count(store, status)
            counts = {status.value: count for status, count in paged.items()}
            capped = {status for status, count in counts.items() if count >= SCAN_LIMIT}
        leases = await store.leases(LEASES_SHOWN) if isinstance(store, LeaseReader) else None
        paused = await store.paused_kinds()
        next_due = await store.next_due()
        next_schedule = await store.next_schedule()
        listener = await _listener(store)
    finally:
        await store.close()
    return StatusReport(
        counts=counts,
        capped=frozenset(capped),
        oldest_pending=oldest,
        leases=leases,
        listener=listener,
        paused=paused,
        next_due=next_due,
        next_schedule=next_schedule,
    )


async def _count(store: JobStore, status: JobStatus) -> tuple[int, datetime | None]:
    """How many jobs have ``status`` (at most SCAN_LIMIT), and the oldest one's creation
    (among the SCAN_LIMIT newest)."""
    count, cursor, oldest = 0, None, None
    while count < SCAN_LIMIT:
        page, cursor = await store.list_jobs(
            tenant=None,
            statuses=[status],
            kind=None,
            include_deleted=False,
            before=cursor,
            limit=min(1000, SCAN_LIMIT - count),
        )
        count += len(page)
        if page:
            oldest = page[-1].created_at  # newest first: the page's last is its oldest
        if cursor is None:
            break
    return count, oldest


async def _listener(store: JobStore) -> dict[str, Any]:
    """Start the store's notifier here and see whether its listener connects."""
    if not isinstance(store, SignalingStore):
        return {"listener": "none", "detail": "this store signals within one process only"}
    notifier = store.notifier()
    if not hasattr(notifier, "healthy"):
        return {"listener": "polling", "detail": f"{type(notifier).__name__} polls for changes"}
    started = time.perf_counter()
    heard = anyio.Event()

    def on_note(note: Note) -> None:
        if notifier.healthy:  # a listener that connects tells its listeners (a re-check)
            heard.set()

    connected = False
    stop_listening = notifier.listen(on_note)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.run)
            with anyio.move_on_after(LISTENER_WAIT):
                await heard.wait()
                connected = True
            tg.cancel_scope.cancel()
    finally:
        stop_listening()
    if not connected:
        return {"listener": "not connected", "detail": f"no connection within {LISTENER_WAIT:g} s"}
    took = (time.perf_counter() - started) * 1000
    return {"listener": "connected", "detail": f"{type(notifier).__name__} listening after {took:.0f} ms"}


#: The listener line of a report made over ``--url``.
_REMOTE_LISTENER = {"listener": "not shown", "detail": "the REST API does not report the service's listener"}


async def remote_status_report(client: JobClient) -> StatusReport:
    """The report of :func:`status_report` from a service's REST API: exact counts
    (``GET /counts``), the oldest pending job and the next due one (among the newest
    :data:`SCAN_LIMIT` of each), the running jobs, the paused kinds and the next schedule.
    The REST API serves no leases (who runs a job until when) and no listener health."""
    found = await client.counts()
    counts = {status.value: found[status] for status in _ACTIVE}
    pending = await _scan(client, JobStatus.PENDING)
    scheduled = await _scan(client, JobStatus.SCHEDULED)
    due = [job.run_at for job in scheduled if job.run_at is not None]
    running = await client.list(status=[JobStatus.RUNNING, JobStatus.CANCELLING], limit=LEASES_SHOWN)
    schedules = await client.schedules()
    return StatusReport(
        counts=counts,
        capped=frozenset(),
        oldest_pending=min((job.created_at for job in pending), default=None),
        leases=None,
        listener=dict(_REMOTE_LISTENER),
        paused=await client.paused(),
        next_due=min(due, default=None),
        next_schedule=min((item.next_run_at for item in schedules), default=None),
        running=running.items,
    )


async def _scan(client: JobClient, status: JobStatus) -> list[Job]:
    """The newest jobs of ``status``, at most SCAN_LIMIT."""
    found: list[Job] = []
    cursor = None
    while len(found) < SCAN_LIMIT:
        page = await client.list(status=status, limit=min(1000, SCAN_LIMIT - len(found)), cursor=cursor)
        found += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    return found
