"""Deleting jobs under the DeletePolicy: the artifact cascade and the durable purge queue."""

from __future__ import annotations

from typing import Any

from . import _machine as machine
from ._core import Core, must_exist
from ._errors import BackendError
from ._log import get_logger
from ._policies import DeleteMode
from ._records import AuditAction, EventType, Job, JobStatus
from ._validate import artifact_prefix
from .abc import Change

__all__ = ["Deleter"]

log = get_logger("jobkit")


class Deleter:
    """Removes jobs (hard or soft) with their artifacts; nothing is orphaned.

    Artifacts of a finished job are deleted before its record; when that fails under
    ``on_artifact_error="defer"``, the prefix goes into the purge queue in the same write
    as the record's removal and its audit record, and the sweeper retries it.
    """

    __slots__ = ("_core",)

    def __init__(self, core: Core) -> None:
        self._core = core

    async def delete(
        self, job: Job, actor_id: str | None, action: AuditAction, deletable: frozenset[JobStatus]
    ) -> int:
        """Delete ``job`` under the policy; return how many artifacts were deleted.

        Management writes on one job in this manager take turns (:class:`~jobkit._core.Turns`),
        so only the delete that wins removes (and counts) the artifacts; the compare-and-swap
        still decides between processes.

        :raises JobNotFound: it is gone (another delete won).
        :raises InvalidState: its status is not deletable.
        :raises BackendError: ``on_artifact_error="fail"`` and the artifacts could not be
            deleted; the job is left as it was.
        """
        async with self._core.turns.hold(job.id):
            fresh = must_exist(await self._core.store.get(job.id), job.id)
            return await self._delete_now(fresh, actor_id, action, deletable)

    async def _delete_now(
        self, job: Job, actor_id: str | None, action: AuditAction, deletable: frozenset[JobStatus]
    ) -> int:
        core = self._core
        policy = core.delete_policy
        prefix = artifact_prefix(job.id)
        while True:
            machine.check_deletable(job, deletable)
            pending = job.status is JobStatus.PENDING
            now = core.clock()
            final = machine.cancel(job, now, core.retention, "deleted while pending") if pending else job
            deleted, deferred, later = 0, False, False
            if policy.deletes_artifacts:
                fail = policy.on_artifact_error == "fail"
                if pending and not fail:
                    # It may be claimed until our write lands: count now, delete after (the
                    # prefix is queued with the removal, so nothing can be orphaned).
                    deleted = len(await core.blobs.list(prefix))
                    later = deleted > 0
                else:
                    # "fail": everything goes, or the job stays as it was.
                    deleted, deferred = await self.drop_artifacts(prefix, fail=fail)
            details: dict[str, Any] = {"mode": policy.mode.value, "status": job.status.value}
            details["artifacts_deleted"] = deleted
            if deferred:
                details["artifacts_deferred"] = True
            audit = core.audit_record(action, actor_id, final, details)
            change = Change(
                job_id=job.id,
                expected_version=job.version,
                job=None if policy.mode is DeleteMode.HARD else machine.mark_deleted(final, now),
                audit=audit,
                # Queued with the removal, so a crash before the blobs are gone orphans nothing.
                purge=prefix if deferred or later else None,
            )
            if await core.apply(change):
                break
            job = must_exist(await core.store.get(job.id), job.id)
        core.log_audit(audit, job.kind)
        if pending:
            core.publish(EventType.CANCELLED, final)
            if change.purge is not None:
                await self.purge_queued(prefix)
        core.announce(
            final, EventType.DELETED, {"mode": policy.mode.value, "artifacts_deleted": deleted}, removed=True
        )
        return deleted

    async def drop_artifacts(self, prefix: str, *, fail: bool = False) -> tuple[int, bool]:
        """Delete the blobs under ``prefix``: (how many, False), or (0, True) when that failed
        and the prefix must be queued for the sweeper.

        :raises BackendError: it failed and ``fail`` is true.
        """
        try:
            return await self._core.blobs.delete_prefix(prefix), False
        except Exception as exc:
            if fail:
                raise BackendError(
                    f"Could not delete the artifacts under {prefix!r}: {exc}. "
                    "The job was not deleted; try again."
                ) from exc
            log.warning("artifact delete failed; deferred to the sweeper", prefix=prefix, exc_info=exc)
            return 0, True

    async def purge_queued(self, prefix: str) -> tuple[int, bool]:
        """Delete a queued prefix's blobs and take it off the queue: (how many, done)."""
        count, deferred = await self.drop_artifacts(prefix)
        if deferred:
            return 0, False
        await self._core.store.remove_purge(prefix)
        return count, True
