"""The core every role shares: the one compare-and-swap loop, "after a write", the audit.

Every status change in jobkit is written here, through :meth:`Core.write` (or, for a
single try, :meth:`Core.apply`), and announced here, through :meth:`Core.announce`:
first the event, then the notes for workers and waiters. The audit record of a
management action travels in the same :class:`~jobkit.abc.Change` as the job change, so
a store with transactions writes both or neither.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import anyio

from ._errors import JobNotFound
from ._log import get_logger
from ._policies import DeletePolicy, Retention
from ._records import AuditAction, AuditRecord, EventType, Job, JobEvent, JobStatus, new_id
from .abc import AtomicWriter, BlobStore, Change, ExclusiveSections, JobStore, Note, NoteKind, Notifier

__all__ = ["Core", "Turns", "must_exist", "scheduled_data"]

audit_log = get_logger("jobkit.audit")

WAKE = Note(kind=NoteKind.WAKE)
RECENT = 4096


class _Turn:
    __slots__ = ("done", "lock", "users")

    def __init__(self) -> None:
        self.users = 0
        self.lock = anyio.Lock()
        self.done = anyio.Event()


class Turns:
    """Management writes on one job take turns in this process (so, e.g., only the delete
    that wins removes and counts the artifacts); the job's run can wait until none is left.
    Entries live only while someone holds or waits for a turn."""

    __slots__ = ("_by_job",)

    def __init__(self) -> None:
        self._by_job: dict[str, _Turn] = {}

    @asynccontextmanager
    async def hold(self, job_id: str) -> AsyncIterator[None]:
        turn = self._by_job.get(job_id)
        if turn is None:
            turn = self._by_job[job_id] = _Turn()
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if not turn.users:
                del self._by_job[job_id]
                turn.done.set()

    async def wait_clear(self, job_id: str) -> None:
        """Return once no management write on ``job_id`` is under way here."""
        while (turn := self._by_job.get(job_id)) is not None:
            await turn.done.wait()


def _ignore(at: datetime) -> None:
    pass


def scheduled_data(job: Job) -> dict[str, Any]:
    """The data of a ``scheduled`` event: when the job runs, and which attempt it will be."""
    assert job.run_at is not None
    return {"run_at": job.run_at.isoformat(), "attempt": job.attempts + 1, "error": job.error}


def must_exist(job: Job | None, job_id: str) -> Job:
    """The re-read rule of management writes: a job gone or soft-deleted meanwhile is not found."""
    if job is None or job.deleted_at is not None:
        raise JobNotFound(job_id)
    return job


class Core:
    """The store, blob store, clock and policies, with the write path every role uses."""

    __slots__ = (
        "_atomic",
        "blobs",
        "clock",
        "delete_policy",
        "notifier",
        "recent",
        "retention",
        "store",
        "timer_hint",
        "turns",
    )

    def __init__(
        self,
        store: JobStore,
        blobs: BlobStore,
        *,
        clock: Callable[[], datetime],
        retention: Retention,
        delete_policy: DeletePolicy,
        notifier: Notifier,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.clock = clock
        self.retention = retention
        self.delete_policy = delete_policy
        self.notifier = notifier
        self._atomic = isinstance(store, AtomicWriter)
        #: Management writes under way here, one job at a time: a handler that writes at
        #: every step holds its writes back (``turns.wait_clear``) and cannot starve a cancel.
        self.turns = Turns()
        #: The jobs this process wrote last, as written (bounded; oldest dropped first). Only a
        #: hint: another process may have changed them since.
        self.recent: OrderedDict[str, Job] = OrderedDict()
        #: Told the ``run_at`` of every scheduled job written here (the sweeper's timers).
        self.timer_hint: Callable[[datetime], None] = _ignore

    # -- writing -----------------------------------------------------------------------

    async def apply(self, change: Change) -> bool:
        """One try at ``change``: atomic where the store can, else job, purge entry, audit."""
        store = self.store
        if self._atomic:
            return await store.apply(change)  # type: ignore[attr-defined, no-any-return]
        if change.job is None:
            done = await store.remove(change.job_id, expected_version=change.expected_version)
        else:
            done = await store.replace(change.job, expected_version=change.expected_version)
        if not done:
            return False
        if change.purge is not None:
            await store.add_purge(change.purge)
        if change.audit is not None:
            await store.add_audit(change.audit)
        return True

    async def write(
        self,
        job: Job,
        decide: Callable[[Job], Job | Change | None],
        *,
        reread: Callable[[Job | None, str], Job] = must_exist,
    ) -> tuple[Job, Job | Change | None]:
        """The compare-and-swap loop: decide the change from the job, try it, re-read on a conflict.

        ``decide`` returns the change to write: a :class:`~jobkit.abc.Change`, or just the
        new job for a plain compare-and-swap (None, or the job itself: nothing to write; it
        may raise, e.g. :class:`~jobkit.InvalidState`). ``reread`` checks the job read after a conflict and
        returns it, or raises (by default :class:`~jobkit.JobNotFound` when it is gone).

        :returns: the job the written change was decided from, and what ``decide``
            returned for it (None when nothing needed writing).
        """
        store = self.store
        conflicts = 0
        while True:
            change = decide(job)
            if change is None or change is job:
                return job, None
            if isinstance(change, Job):
                if await store.replace(change, expected_version=job.version):
                    return job, change
            elif await self.apply(change):
                return job, change
            conflicts += 1
            if conflicts > 2:  # a busy writer elsewhere: step aside a little, at random
                import random

                await anyio.sleep(random.uniform(0, 0.001 * 2 ** min(conflicts, 8)))
            job = reread(await store.get(job.id), job.id)

    # -- after a write -----------------------------------------------------------------

    def publish(self, type: EventType, job: Job, data: Mapping[str, Any] | None = None) -> None:
        """Send a :class:`JobEvent` to subscribers (only built when someone listens)."""
        notifier = self.notifier
        if notifier.wants_events:
            event = JobEvent(
                type=type, job_id=job.id, tenant=job.tenant, status=job.status, at=self.clock(), data=data
            )
            notifier.notify(Note(kind=NoteKind.EVENT, job_id=job.id, event=event))

    def on_note(self, note: Note) -> None:
        """Keep :attr:`recent` true to what other processes write: a change heard of
        without the job (from another process, or a removal) drops what it may outdate."""
        if note.job is not None or note.kind is not NoteKind.CHANGED:
            return  # a note with the job: written here, and announce() kept the memory
        if note.job_id is None:
            self.recent.clear()  # something changed somewhere: nothing cached may be trusted
        else:
            self.recent.pop(note.job_id, None)

    def announce(
        self,
        job: Job,
        event: EventType | None = None,
        data: Mapping[str, Any] | None = None,
        *,
        removed: bool = False,
    ) -> None:
        """Tell everyone that ``job`` was just written (or, ``removed``, deleted).

        The event first, then the notes: the job changed (waiters), jobs are waiting
        (workers, when it is pending), or it should stop (the process running it).
        """
        if event is not None:
            self.publish(event, job, data)
        notify = self.notifier.notify
        recent = self.recent
        if removed:
            recent.pop(job.id, None)
            notify(Note(kind=NoteKind.CHANGED, job_id=job.id))
            return
        known = recent.get(job.id)
        # Never back to an older version: announcements can come out of order (a submit
        # that resumes after its job already ran).
        if known is None:
            recent[job.id] = job
            if len(recent) > RECENT:
                recent.popitem(last=False)
        elif known.version < job.version:
            recent[job.id] = job
            recent.move_to_end(job.id)
        if job.status is JobStatus.SCHEDULED and job.run_at is not None:
            self.timer_hint(job.run_at)
        if job.status is JobStatus.PENDING:
            if event is not EventType.SUBMITTED:  # nobody waits on a job that did not exist
                notify(Note(kind=NoteKind.CHANGED, job_id=job.id, job=job))
            notify(WAKE)
            return
        notify(Note(kind=NoteKind.CHANGED, job_id=job.id, job=job))
        if job.status is JobStatus.CANCELLING:
            notify(Note(kind=NoteKind.CANCEL, job_id=job.id, job=job))

    # -- audit -------------------------------------------------------------------------

    def audit_record(
        self,
        action: AuditAction,
        actor_id: str | None,
        job: Job | None,
        details: Mapping[str, Any],
        *,
        tenant: str | None = None,
    ) -> AuditRecord:
        """The record of ``action`` on ``job`` (None: on a kind or a schedule of ``tenant``)."""
        return AuditRecord(
            id=new_id(),
            at=self.clock(),
            action=action,
            actor_id=actor_id,
            tenant=tenant if job is None else job.tenant,
            job_id=None if job is None else job.id,
            details=details,
        )

    @staticmethod
    def log_audit(record: AuditRecord, kind: str | None) -> None:
        """The audit log line of a record that was stored."""
        fields: dict[str, Any] = {"kind": kind, **record.details}
        audit_log.info(
            str(record.action), job_id=record.job_id, tenant=record.tenant, actor=record.actor_id, **fields
        )

    async def record(self, record: AuditRecord, kind: str | None) -> None:
        """Store an audit record of an action that changed no job record (and log it)."""
        await self.store.add_audit(record)
        self.log_audit(record, kind)

    # -- optional store members --------------------------------------------------------

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """Whether this process alone holds ``name`` (always, for stores without sections)."""
        store = self.store
        if not isinstance(store, ExclusiveSections):
            yield True
            return
        async with store.exclusive(name) as mine:
            yield mine
