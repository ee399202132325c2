"""Deleting jobs under the DeletePolicy: the artifact cascade and the durable purge queue."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from . import _machine as machine
from ._core import Core, must_exist
from ._errors import BackendError
from ._log import get_logger
from ._policies import DeleteMode
from ._records import AuditAction, EventType, Job, JobStatus, replace_job
from ._validate import artifact_prefix
from .abc import Change, ManyDeleter

__all__ = ["Deleter"]

log = get_logger("jobkit")


class Deleter:
    """Removes jobs (hard or soft) with their artifacts; nothing is orphaned.

    Under ``on_artifact_error="defer"`` the record's removal, its audit record (with the
    number of artifacts) and the job's prefix in the purge queue are one write, and the
    blobs go after it; when that fails, the sweeper retries the queued prefix. Under
    ``"fail"`` the delete claims the job, deletes the blobs, then the record, and undoes
    the claim if the blobs cannot go. Either way only one delete ever touches the blobs,
    so the audit's count is the true one.
    """

    __slots__ = ("_core",)

    def __init__(self, core: Core) -> None:
        self._core = core

    async def delete(
        self, job: Job, actor_id: str | None, action: AuditAction, deletable: frozenset[JobStatus]
    ) -> int | None:
        """Delete ``job`` under the policy; return how many artifacts it had (None: the blob
        store could not count them; they are queued for the sweeper).

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
    ) -> int | None:
        core = self._core
        policy = core.delete_policy
        if policy.deletes_artifacts and policy.on_artifact_error == "fail":
            return await self._delete_or_fail(job, actor_id, action, deletable)
        prefix = artifact_prefix(job.id)
        while True:
            machine.check_deletable(job, deletable)
            now = core.clock()
            final = self._final(job, now)
            # Count first and write the count with the removal, the prefix queued in the same
            # write; only the delete whose write lands removes the blobs (after it), so no
            # losing delete, in this process or another, can take a share of the count.
            keys = await self.list_artifacts(prefix) if policy.deletes_artifacts else []
            deleted = None if keys is None else len(keys)
            audit = core.audit_record(action, actor_id, final, self._details(job, deleted))
            change = Change(
                job_id=job.id,
                expected_version=job.version,
                job=self._kept(final, now),
                audit=audit,
                purge=prefix if deleted != 0 else None,  # None: uncounted, queued all the same
            )
            if await core.apply(change):
                break
            job = must_exist(await core.store.get(job.id), job.id)
        core.log_audit(audit, job.kind)
        if change.purge is not None:
            await self.purge_queued(prefix, keys)  # on failure it stays queued for the sweeper
        elif policy.deletes_artifacts:
            await self.drop_artifacts(prefix)  # no artifacts: temp files, empty folders, links
        self._announce(job, final, deleted)
        return deleted

    async def _delete_or_fail(
        self, job: Job, actor_id: str | None, action: AuditAction, deletable: frozenset[JobStatus]
    ) -> int:
        """``on_artifact_error="fail"``: all of it, or the job left as it was.

        The blobs go before the record here, so the delete first claims the job: a write
        that hides it (``deleted_at``, and a pending job cancelled so no worker takes it).
        Other deletes, here or in another process, then find it gone and touch nothing, so
        the count this one makes is the whole count. If the blobs cannot be deleted the
        claim is undone.
        """
        core = self._core
        prefix = artifact_prefix(job.id)

        def claim(job: Job) -> Job:
            machine.check_deletable(job, deletable)
            now = core.clock()
            return machine.mark_deleted(self._final(job, now), now)

        job, claimed = await core.write(job, claim)
        assert isinstance(claimed, Job)
        try:
            deleted, _ = await self.drop_artifacts(prefix, fail=True)
        except BackendError:
            # Put it back exactly as it was, version included (only this delete writes a
            # claimed job, and what others may have read of it is what comes back).
            await core.store.replace(job, expected_version=claimed.version)
            raise
        now = core.clock()
        final = self._final(job, now)
        audit = core.audit_record(action, actor_id, final, self._details(job, deleted))
        kept = self._kept(final, now)
        change = Change(
            job_id=job.id,
            expected_version=claimed.version,
            job=None if kept is None else replace_job(kept, version=claimed.version + 1),
            audit=audit,
        )
        if not await core.apply(change):  # nobody else writes a claimed job
            raise BackendError(f"The claimed delete of job {job.id!r} could not be written; try again.")
        core.log_audit(audit, job.kind)
        self._announce(job, final, deleted)
        return deleted

    def _final(self, job: Job, now: datetime) -> Job:
        """The job as it ends: a pending (or scheduled) one is cancelled first."""
        if job.status is JobStatus.PENDING or job.status is JobStatus.SCHEDULED:
            return machine.cancel(job, now, self._core.retention, f"deleted while {job.status.value}")
        return job

    def _kept(self, final: Job, now: datetime) -> Job | None:
        """What stays of the record: nothing (hard) or the soft-deleted job."""
        return None if self._core.delete_policy.mode is DeleteMode.HARD else machine.mark_deleted(final, now)

    def _details(self, job: Job, deleted: int | None) -> dict[str, Any]:
        mode = self._core.delete_policy.mode.value
        return {"mode": mode, "status": job.status.value, "artifacts_deleted": deleted}

    def _announce(self, job: Job, final: Job, deleted: int | None) -> None:
        core = self._core
        if job.status is JobStatus.PENDING or job.status is JobStatus.SCHEDULED:
            core.publish(EventType.CANCELLED, final)
        mode = core.delete_policy.mode.value
        core.announce(final, EventType.DELETED, {"mode": mode, "artifacts_deleted": deleted}, removed=True)

    async def list_artifacts(self, prefix: str) -> list[str] | None:
        """The blobs under ``prefix``; None (logged) when the blob store fails."""
        try:
            return await self._core.blobs.list(prefix)
        except Exception as exc:
            log.warning("could not count artifacts; the audit says unknown", prefix=prefix, exc_info=exc)
            return None

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

    async def purge_queued(self, prefix: str, keys: list[str] | None = None) -> tuple[int, bool]:
        """Delete a queued prefix's blobs and take it off the queue: (how many, done).

        ``keys``: the blobs listed under it since nothing could be added (the job's record
        is gone); a store that can delete them without listing again does.
        """
        blobs = self._core.blobs
        if keys and isinstance(blobs, ManyDeleter):
            try:
                count, deferred = await blobs.delete_many(keys), False
            except Exception as exc:
                log.warning("artifact delete failed; deferred to the sweeper", prefix=prefix, exc_info=exc)
                count, deferred = 0, True
        else:
            count, deferred = await self.drop_artifacts(prefix)
        if deferred:
            return 0, False
        await self._core.store.remove_purge(prefix)
        return count, True
