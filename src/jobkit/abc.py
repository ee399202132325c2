"""The interfaces backends implement. ``jobkit.testing`` checks an implementation against them.

A store is dumb persistence with compare-and-swap: it never decides a status change on
its own, except :meth:`JobStore.claim`, which applies exactly what
``jobkit._machine.start()`` would.

Besides the required :class:`JobStore` members, a store may offer **optional** ones, each
described by its own small protocol below; the manager uses them when they are there and
falls back to the required members when they are not:

- :class:`BatchClaimer` ``claim_many()``: claim up to the free worker slots in one call
  (fallback: ``claim()`` in a loop);
- :class:`AtomicWriter` ``apply()``: write a job change together with its audit record and
  purge-queue entry in one transaction (fallback: three calls, in that order);
- :class:`ExclusiveSections` ``exclusive()``: let one process at a time run the sweeper
  (fallback: always granted);
- :class:`SignalingStore` ``notifier()``: a :class:`Notifier` that carries wake-ups, cancel
  notes, job changes and events between processes sharing the store (fallback: the
  in-process notifier, and polling every ``poll_interval``);
- :class:`StatusCounter` ``count_jobs()``: jobs per status in one query, for ``counts()``
  and ``jobkit status`` (fallback: paging through ``list_jobs()``);
- :class:`LeaseReader` ``leases()``: who holds which running job, until when, for
  ``jobkit status`` (fallback: not shown);
- :class:`PrefixFinder` ``jobs_with_prefix()``: jobs by the start of their id, for
  ``resolve()`` (fallback: paging through ``list_jobs()``).

A blob store may add :class:`ManyDeleter` ``delete_many()``: delete keys it already
listed (fallback: ``delete_prefix()``).
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol, runtime_checkable

import attrs

from ._policies import Action
from ._records import Actor, AuditRecord, Job, JobEvent, JobStatus, Schedule

__all__ = [
    "AtomicWriter",
    "Authorizer",
    "BatchClaimer",
    "BlobStore",
    "Change",
    "ExclusiveSections",
    "JobStore",
    "Lease",
    "LeaseReader",
    "ManyDeleter",
    "Note",
    "NoteKind",
    "Notifier",
    "PrefixFinder",
    "SignalingStore",
    "StatusCounter",
]


@runtime_checkable
class JobStore(Protocol):
    """Persistence for jobs, their leases, the audit trail and the deferred purge queue.

    Jobs are ordered by a store-assigned insertion sequence (an ``int`` that only
    grows); listing is newest first by that sequence, claiming is highest priority
    first, then oldest first.
    """

    async def open(self) -> None:
        """Prepare the store (create tables, connect). Called when the manager starts.

        :raises JobkitError: the store cannot be used (wrong format, unreachable).
        """

    async def close(self) -> None:
        """Release resources. Called when the manager stops. Must be safe to call twice."""

    async def insert(self, job: Job) -> Job | None:
        """Store a new job, unless its idempotency key is taken.

        When ``job.idempotency_key`` is set and a stored job of the same tenant (soft-deleted
        ones aside) has that key, nothing is stored and that job is returned. The check and
        the insert are one atomic step, also between processes: of concurrent inserts with
        one key, exactly one stores its job (a unique index, on a database).

        :returns: None when ``job`` was stored, else the job that holds the key.
        :raises JobkitError: a job with that id already exists.
        """

    async def get(self, job_id: str) -> Job | None:
        """The job with that id (soft-deleted ones included), or ``None``."""

    async def replace(self, job: Job, *, expected_version: int) -> bool:
        """Compare-and-swap: store ``job`` only if the stored version is ``expected_version``.

        The fields fixed at insert (``id``, ``kind``, ``payload``, ``tenant``, ``created_at``,
        ``ttl``, ``timeout``, ``labels``, ``idempotency_key``, ``retry``) never change; a store
        may skip them. ``max_attempts`` and ``run_at`` do change (retries).

        :returns: False (and nothing written) when the job is gone or its version differs.
        """

    async def remove(self, job_id: str, *, expected_version: int) -> bool:
        """Delete the record only if its version is ``expected_version``; False otherwise."""

    async def claim(self, *, now: datetime, worker_id: str, lease_until: datetime) -> Job | None:
        """Atomically take the next pending job, start it and lease it to ``worker_id``.

        The next job is the one with the highest priority, then the oldest, of a kind that
        is not paused (:meth:`set_paused`). It is stored as ``jobkit._machine.start()``
        returns it. Concurrent claimers never get the same job.
        """

    async def list_jobs(
        self,
        *,
        tenant: str | None,
        statuses: Collection[JobStatus] | None,
        kind: str | None,
        include_deleted: bool,
        before: int | None,
        limit: int,
    ) -> tuple[list[Job], int | None]:
        """Up to ``limit`` jobs, newest first, with sequence below ``before`` (all when None).

        ``tenant=None`` means every tenant. Returns the jobs and the ``before`` value of
        the next page, or None when there is no next page.
        """

    async def position(self, job_id: str) -> int | None:
        """1-based place of a pending job in the claim order; None when it is not pending."""

    async def expired(self, now: datetime, limit: int) -> list[Job]:
        """Up to ``limit`` jobs with ``expires_at <= now``, earliest first.

        Must cost O(result), not O(stored jobs) (an index ordered by expiry).
        """

    async def soft_deleted_before(self, cutoff: datetime, limit: int) -> list[Job]:
        """Up to ``limit`` soft-deleted jobs with ``deleted_at <= cutoff``, earliest first."""

    async def renew_leases(self, worker_id: str, job_ids: Sequence[str], lease_until: datetime) -> list[Job]:
        """Extend the lease of those running jobs that ``worker_id`` still holds; return them.

        A job missing from the result is no longer this worker's (it was recovered); a
        returned job in ``cancelling`` was cancelled, possibly by another process.
        """

    async def expired_leases(self, now: datetime, limit: int) -> list[Job]:
        """Up to ``limit`` running or cancelling jobs whose lease ended before ``now``."""

    async def promote_due(self, now: datetime, limit: int) -> list[Job]:
        """Make up to ``limit`` scheduled jobs with ``run_at <= now`` pending, earliest first,
        as ``jobkit._machine.due()`` does (atomically per job: a job changed meanwhile is
        left alone); return them as stored.

        Must cost O(due jobs), not O(scheduled jobs) (an index ordered by ``run_at``).
        """

    async def next_due(self) -> datetime | None:
        """The earliest ``run_at`` of the scheduled jobs, or None when none waits."""

    async def set_paused(self, kind: str, paused: bool) -> bool:
        """Pause (no claim takes jobs of ``kind``) or resume a kind, for every process using
        the store; True when that changed something."""

    async def paused_kinds(self) -> frozenset[str]:
        """The kinds paused now."""

    async def put_schedule(self, schedule: Schedule) -> None:
        """Store ``schedule``, replacing the tenant's schedule of that name."""

    async def remove_schedule(self, tenant: str | None, name: str) -> bool:
        """Remove the tenant's schedule ``name``; False when there was none."""

    async def list_schedules(self, tenant: str | None) -> list[Schedule]:
        """The schedules of ``tenant`` (None: of every tenant), by name."""

    async def due_schedules(self, now: datetime, limit: int) -> list[Schedule]:
        """Up to ``limit`` schedules with ``next_run_at <= now``, earliest first."""

    async def advance_schedule(self, schedule: Schedule, next_run_at: datetime) -> bool:
        """Compare-and-swap: set the schedule's ``next_run_at`` only if the stored schedule is
        still ``schedule`` (same ``created_at`` and ``next_run_at``); False otherwise."""

    async def next_schedule(self) -> datetime | None:
        """The earliest ``next_run_at`` of every schedule, or None when there is none."""

    async def add_audit(self, record: AuditRecord) -> None:
        """Append an audit record."""

    async def list_audit(self, *, job_id: str | None, tenant: str | None, limit: int) -> list[AuditRecord]:
        """Audit records, newest first, for one job and/or one tenant (None = all)."""

    async def remove_audit_before(self, cutoff: datetime) -> int:
        """Delete audit records older than ``cutoff``; return how many."""

    async def add_purge(self, prefix: str) -> None:
        """Queue an artifact prefix whose deletion failed, for the sweeper to retry."""

    async def pending_purges(self, limit: int) -> list[str]:
        """Up to ``limit`` queued prefixes, oldest first."""

    async def remove_purge(self, prefix: str) -> None:
        """Take a prefix off the purge queue once its blobs are gone."""


@attrs.frozen(kw_only=True)
class Change:
    """One atomic write: a compare-and-swap on a job, with what must be written with it.

    ``job`` is the new record (None removes the stored one), and its ``id`` is ``job_id``;
    nothing at all is written when the stored version is not ``expected_version``.
    """

    job_id: str
    expected_version: int
    job: Job | None
    audit: AuditRecord | None = None
    purge: str | None = None


@runtime_checkable
class BatchClaimer(Protocol):
    """Optional :class:`JobStore` member: claim several jobs in one call."""

    async def claim_many(
        self,
        *,
        now: datetime,
        worker_id: str,
        lease_until: datetime,
        kinds: Collection[str] | None,
        limit: int,
    ) -> list[Job]:
        """Claim up to ``limit`` pending jobs in claim order, as :meth:`JobStore.claim` does.

        Only jobs whose kind is in ``kinds`` are taken (every kind when None); the others
        stay pending for a process that can run them. Concurrent claimers never get the
        same job. Returns the started jobs, in claim order.
        """


@runtime_checkable
class AtomicWriter(Protocol):
    """Optional :class:`JobStore` member: a job change, its audit record and purge entry at once."""

    async def apply(self, change: Change) -> bool:
        """Write ``change`` atomically: all of it, or (when the version differs, the job is
        gone, or anything fails) none of it.

        :returns: False when the compare-and-swap lost (nothing written).
        :raises JobkitError: the store failed; nothing was written.
        """


@runtime_checkable
class ExclusiveSections(Protocol):
    """Optional :class:`JobStore` member: one holder at a time across processes."""

    def exclusive(self, name: str) -> AbstractAsyncContextManager[bool]:
        """Try to become the only holder of ``name`` among every process using the store.

        Yields True when this caller holds it for the duration of the block, False when
        another process does (it does not wait). A store may always grant (MemoryStore,
        SQLiteStore do): correctness never depends on it, only duplicate work does.
        """


class NoteKind(enum.StrEnum):
    """What a :class:`Note` says."""

    #: Jobs may be waiting: idle workers should try to claim.
    WAKE = "wake"
    #: ``job_id`` was asked to cancel: the process running it should stop it.
    CANCEL = "cancel"
    #: ``job_id`` changed (or, with ``job_id=None``, any job may have changed): waiters re-read.
    CHANGED = "changed"
    #: ``event`` happened: subscribers should see it.
    EVENT = "event"


@attrs.frozen(kw_only=True)
class Note:
    """A small message between the parts of jobkit, possibly between processes."""

    kind: NoteKind
    job_id: str | None = None
    #: The job as just written, when the sender has it (within one process).
    job: Job | None = None
    event: JobEvent | None = None


NoteCallback = Callable[[Note], None]


@runtime_checkable
class Notifier(Protocol):
    """Carries :class:`Note` s to listeners: within the process, and beyond where it can.

    Callbacks are called on the event loop and must not block or raise. Delivery is best
    effort (a lost note is made good by the next ``poll_interval`` check); a notifier that
    loses events tells event listeners with an ``overflow`` event.
    """

    async def run(self) -> None:
        """Background work (e.g. a cross-process listener), until cancelled. Never raises:
        failures are logged and retried."""

    def notify(self, note: Note) -> None:
        """Deliver ``note`` to this process's listeners now, and queue it for other processes."""

    def listen(self, callback: NoteCallback, *, events: bool = False) -> Callable[[], None]:
        """Call ``callback`` for every note but events (``events=True``: for event notes
        only); returns the function that stops it. A notifier may use the presence of event
        listeners to decide whether to receive other processes' events at all."""

    @property
    def wants_events(self) -> bool:
        """True when some listener, here or in another process, receives events."""


@runtime_checkable
class SignalingStore(Protocol):
    """Optional :class:`JobStore` member: a notifier that reaches other processes."""

    def notifier(self) -> Notifier:
        """A new :class:`Notifier` for one manager, crossing processes through the store.

        Give each manager its own store object: a store may not hear its own writes (a
        SQLite connection never sees its own commits as changes).
        """


@runtime_checkable
class StatusCounter(Protocol):
    """Optional :class:`JobStore` member: jobs per status in one query (dashboards)."""

    async def count_jobs(self, *, tenant: str | None, kind: str | None) -> dict[JobStatus, int]:
        """How many jobs (not soft-deleted) have each status, of ``tenant`` (None: all) and
        ``kind`` (None: all); statuses with none may be left out."""


@attrs.frozen
class Lease:
    """A running (or cancelling) job's lease: the worker that holds it, and until when."""

    job: Job
    owner: str
    until: datetime


@runtime_checkable
class LeaseReader(Protocol):
    """Optional :class:`JobStore` member: the leases held now, for operators (``jobkit status``)."""

    async def leases(self, limit: int) -> list[Lease]:
        """Up to ``limit`` running and cancelling jobs with their leases, soonest to expire first."""


@runtime_checkable
class PrefixFinder(Protocol):
    """Optional :class:`JobStore` member: jobs by the start of their id (short ids typed by
    operators), without reading every job."""

    async def jobs_with_prefix(
        self, prefix: str, *, tenant: str | None, include_deleted: bool, limit: int
    ) -> list[Job]:
        """Up to ``limit`` jobs whose id starts with ``prefix`` (lowercase hex), newest first,
        of ``tenant`` (None: all), soft-deleted ones only when ``include_deleted``."""


@runtime_checkable
class BlobStore(Protocol):
    """Byte storage for artifacts under ``/``-separated keys."""

    async def open(self) -> None:
        """Prepare the store. Called when the manager starts."""

    async def close(self) -> None:
        """Release resources. Must be safe to call twice."""

    async def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically, replacing what was there."""

    async def get(self, key: str) -> bytes:
        """The bytes at ``key``.

        :raises KeyError: no blob at ``key``.
        """

    async def list(self, prefix: str) -> list[str]:
        """Every key starting with ``prefix``, sorted."""

    async def list_page(
        self, prefix: str, *, after: str | None = None, limit: int = 1000
    ) -> builtins.list[str]:
        """Up to ``limit`` keys starting with ``prefix`` and sorting after ``after``, sorted.

        Page through a large prefix by passing the last key of a page as ``after``.
        """

    async def delete(self, key: str) -> bool:
        """Delete one blob; False when there was none."""

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every blob under ``prefix``; return how many were deleted."""


@runtime_checkable
class ManyDeleter(Protocol):
    """Optional :class:`BlobStore` member: delete keys already listed, without listing again.

    The manager counts a job's artifacts before the write that deletes the job, then
    deletes them after it; a store whose listing costs requests (S3) saves them here.
    """

    async def delete_many(self, keys: Sequence[str]) -> int:
        """Delete ``keys``; return how many were deleted (a missing key is no error).

        :raises BackendError: some could not be deleted (the others were).
        """


@runtime_checkable
class Authorizer(Protocol):
    """Decides whether an actor may perform an action. Tenant checks happen before this."""

    def allows(self, actor: Actor, action: Action, job: Job | None) -> bool:
        """True when ``actor`` may do ``action`` (on ``job``; None for submit and list)."""
