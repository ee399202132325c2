"""The interfaces backends implement. ``jobkit.testing`` checks an implementation against them.

A store is dumb persistence with compare-and-swap: it never decides a status change on
its own, except :meth:`JobStore.claim`, which applies exactly what
:func:`jobkit._machine.start` would.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from ._policies import Action
from ._records import Actor, AuditRecord, Job, JobStatus

__all__ = ["Authorizer", "BlobStore", "JobStore"]


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

    async def insert(self, job: Job) -> None:
        """Store a new job.

        :raises JobkitError: a job with that id already exists.
        """

    async def get(self, job_id: str) -> Job | None:
        """The job with that id (soft-deleted ones included), or ``None``."""

    async def replace(self, job: Job, *, expected_version: int) -> bool:
        """Compare-and-swap: store ``job`` only if the stored version is ``expected_version``.

        The fields fixed at insert (``id``, ``kind``, ``payload``, ``tenant``, ``created_at``,
        ``max_attempts``, ``ttl``, ``timeout``, ``labels``) never change; a store may skip them.

        :returns: False (and nothing written) when the job is gone or its version differs.
        """

    async def remove(self, job_id: str, *, expected_version: int) -> bool:
        """Delete the record only if its version is ``expected_version``; False otherwise."""

    async def claim(self, *, now: datetime, worker_id: str, lease_until: datetime) -> Job | None:
        """Atomically take the next pending job, start it and lease it to ``worker_id``.

        The next job is the one with the highest priority, then the oldest. It is stored
        as :func:`jobkit._machine.start` returns it. Concurrent claimers never get the same job.
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
class Authorizer(Protocol):
    """Decides whether an actor may perform an action. Tenant checks happen before this."""

    def allows(self, actor: Actor, action: Action, job: Job | None) -> bool:
        """True when ``actor`` may do ``action`` (on ``job``; None for submit and list)."""
