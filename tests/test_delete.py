"""Delete rules: hard and soft, the deletable allowlist, artifact cascade, defer and fail."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from jobkit import (
    Actor,
    ArtifactNotFound,
    BackendError,
    DeletePolicy,
    InvalidState,
    JobContext,
    JobManager,
    JobNotFound,
    JobStatus,
    PermissionDenied,
)
from jobkit.blobs import MemoryBlobStore
from jobkit.testing import FakeClock
from managers import ManagerFactory

pytestmark = pytest.mark.anyio


class FlakyBlobs(MemoryBlobStore):
    """A blob store whose delete_prefix fails the first ``failures`` times, then works."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0

    async def delete_prefix(self, prefix: str) -> int:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise OSError("storage unavailable")
        return await super().delete_prefix(prefix)


async def _write_two(ctx: JobContext, payload: Any) -> str:
    await ctx.put_artifact("input/audio.wav", b"RIFF")
    await ctx.put_artifact("output/transcript.txt", "hello")
    return "ok"


HANDLERS = {"transcribe": _write_two}


async def _finished(jobs: JobManager, **kwargs: Any) -> str:
    job = await jobs.submit("transcribe", {"url": "s3://x"}, **kwargs)
    await jobs.wait(job.id, timeout=5)
    return job.id


class TestHardDelete:
    async def test_deletes_record_and_every_artifact(self, make_manager: ManagerFactory) -> None:
        """A hard delete removes the job and everything under jobs/<id>/, and nothing else."""
        blobs = MemoryBlobStore()
        jobs = make_manager(handlers=HANDLERS, blobs=blobs)
        async with jobs:
            gone, kept = await _finished(jobs), await _finished(jobs)
            assert await jobs.artifacts(gone) == ["input/audio.wav", "output/transcript.txt"]
            await jobs.delete(gone)
            with pytest.raises(JobNotFound):
                await jobs.get(gone)
            assert await blobs.list(f"jobs/{gone}/") == []
            assert await jobs.artifacts(kept) == ["input/audio.wav", "output/transcript.txt"]
            [record] = await jobs.audit(gone)
            assert record.action == "delete"
            assert record.details["artifacts_deleted"] == 2
            assert "payload" not in record.details

    @pytest.mark.parametrize(
        ("status", "message"),
        [
            ("running", "Cannot delete running job. Use cancel instead."),
            ("cancelling", "Cannot delete job while cancellation is in progress."),
            ("pending", "Cannot delete pending job. Use cancel instead."),
        ],
    )
    async def test_active_jobs_cannot_be_deleted(
        self, status: str, message: str, make_manager: ManagerFactory
    ) -> None:
        """Running, cancelling and (by default) pending jobs give InvalidState with what to do."""
        jobs = make_manager(concurrency=0 if status == "pending" else 1)
        started, release = anyio.Event(), anyio.Event()

        @jobs.handler("block")
        async def block(ctx: JobContext, payload: Any) -> None:
            await ctx.put_artifact("a", b"1")
            started.set()
            await release.wait()

        async with jobs:
            job = await jobs.submit("block")
            if status != "pending":
                await started.wait()
            if status == "cancelling":
                await jobs.cancel(job.id)
            with pytest.raises(InvalidState) as raised:
                await jobs.delete(job.id)
            assert raised.value.message == message
            assert (await jobs.get(job.id)).status.value == status
            if status != "pending":
                assert await jobs.artifacts(job.id) == ["a"]
            release.set()

    async def test_pending_in_deletable_cancels_and_deletes_atomically(
        self, make_manager: ManagerFactory
    ) -> None:
        """With pending in `deletable`, deleting a pending job cancels and removes it; it never runs."""
        ran: list[str] = []
        jobs = make_manager(
            concurrency=0,
            delete_policy=DeletePolicy(deletable={"pending", "completed", "failed", "cancelled"}),
        )

        @jobs.handler("x")
        async def x(ctx: JobContext, payload: Any) -> None:
            ran.append("ran")

        async with jobs, jobs.subscribe() as events:
            job = await jobs.submit("x")
            await jobs.delete(job.id)
            with pytest.raises(JobNotFound):
                await jobs.get(job.id)
            types = [(await events.__anext__()).type for _ in range(3)]
        assert types == ["submitted", "cancelled", "deleted"]
        assert ran == []

    async def test_concurrent_deletes_exactly_one_wins(self, make_manager: ManagerFactory) -> None:
        """100 concurrent deletes of one job: one succeeds, 99 get JobNotFound."""
        blobs = MemoryBlobStore()
        jobs = make_manager(handlers=HANDLERS, blobs=blobs)
        results: list[str] = []

        async def attempt(job_id: str) -> None:
            try:
                await jobs.delete(job_id)
            except JobNotFound:
                results.append("not found")
            else:
                results.append("deleted")

        async with jobs:
            target, other = await _finished(jobs), await _finished(jobs)
            async with anyio.create_task_group() as tg:
                for _ in range(100):
                    tg.start_soon(attempt, target)
            assert sorted(results) == ["deleted"] + ["not found"] * 99
            assert (await jobs.get(other)).status is JobStatus.COMPLETED
            assert len(await jobs.artifacts(other)) == 2
            assert [r.action for r in await jobs.audit(target)] == ["delete"]


class TestArtifactErrors:
    async def test_defer_deletes_job_and_sweeper_retries_until_gone(
        self, make_manager: ManagerFactory
    ) -> None:
        """on_artifact_error='defer': the job goes at once, the prefix is queued, sweeps retry until empty."""
        blobs = FlakyBlobs(failures=2)
        jobs = make_manager(
            handlers=HANDLERS, blobs=blobs, delete_policy=DeletePolicy(on_artifact_error="defer")
        )
        async with jobs:
            job_id = await _finished(jobs)
            await jobs.delete(job_id)
            with pytest.raises(JobNotFound):
                await jobs.get(job_id)
            [record] = await jobs.audit(job_id)
            assert record.details["artifacts_deleted"] == 2, "the count the job had, queued with its removal"
            assert len(await blobs.list(f"jobs/{job_id}/")) == 2, "still there until a sweep succeeds"
            first = await jobs.sweep()
            assert first.artifacts_deleted == 0
            second = await jobs.sweep()
            assert second.artifacts_deleted == 2
            assert await blobs.list(f"jobs/{job_id}/") == []
            third = await jobs.sweep()
            assert third.artifacts_deleted == 0
        assert blobs.attempts == 3, "the delete, one failing sweep, one successful; then no retries"

    async def test_fail_leaves_job_intact_and_retry_works(self, make_manager: ManagerFactory) -> None:
        """on_artifact_error='fail': delete raises, the job and its artifacts stay; retrying succeeds."""
        blobs = FlakyBlobs(failures=1)
        jobs = make_manager(
            handlers=HANDLERS, blobs=blobs, delete_policy=DeletePolicy(on_artifact_error="fail")
        )
        async with jobs:
            job_id = await _finished(jobs)
            before = await jobs.get(job_id)
            with pytest.raises(BackendError, match="not deleted"):
                await jobs.delete(job_id)
            assert await jobs.get(job_id) == before
            assert await jobs.audit(job_id) == []
            await jobs.delete(job_id)
            with pytest.raises(JobNotFound):
                await jobs.get(job_id)
            assert await blobs.list(f"jobs/{job_id}/") == []


class TestSoftDelete:
    async def test_soft_delete_hides_job_but_keeps_it_for_admins(self, make_manager: ManagerFactory) -> None:
        """Soft delete sets deleted_at; the job is JobNotFound unless include_deleted by host or admin."""
        jobs = make_manager(handlers=HANDLERS, delete_policy=DeletePolicy(mode="soft"))
        user = Actor("u1", tenant="acme")
        admin = Actor("root", tenant="acme", roles={"admin"})
        async with jobs:
            job_id = await _finished(jobs, actor=user)
            await jobs.delete(job_id, actor=user)
            for call in (jobs.get, jobs.cancel, jobs.delete, jobs.artifacts):
                with pytest.raises(JobNotFound):
                    await call(job_id, actor=user)  # type: ignore[operator]
            assert job_id not in [j.id for j in await jobs.list()]
            with pytest.raises(PermissionDenied):
                await jobs.get(job_id, actor=user, include_deleted=True)
            kept = await jobs.get(job_id, actor=admin, include_deleted=True)
            assert kept.deleted_at is not None
            assert kept.expires_at is None
            host_view = await jobs.list(include_deleted=True)
            assert [j.id for j in host_view] == [job_id]
            # artifacts are kept by default in soft mode, readable by the host and admins
            assert len(await jobs.artifacts(job_id, actor=admin, include_deleted=True)) == 2
            assert await jobs.read_artifact(job_id, "output/transcript.txt", include_deleted=True) == b"hello"
            with pytest.raises(PermissionDenied, match="admins only"):
                await jobs.artifacts(job_id, actor=user, include_deleted=True)

    async def test_soft_delete_can_delete_artifacts(self, make_manager: ManagerFactory) -> None:
        """artifacts='delete' removes the blobs even in soft mode."""
        blobs = MemoryBlobStore()
        jobs = make_manager(
            handlers=HANDLERS, blobs=blobs, delete_policy=DeletePolicy(mode="soft", artifacts="delete")
        )
        async with jobs:
            job_id = await _finished(jobs)
            await jobs.delete(job_id)
            assert await blobs.list(f"jobs/{job_id}/") == []
            assert (await jobs.get(job_id, include_deleted=True)).deleted_at is not None

    async def test_soft_deleted_rows_are_purged_after_the_delay(
        self, clock: FakeClock, make_manager: ManagerFactory
    ) -> None:
        """purge_soft_deleted_after: the sweeper hard-purges old soft-deleted rows and their artifacts."""
        blobs = MemoryBlobStore()
        jobs = make_manager(
            handlers=HANDLERS,
            blobs=blobs,
            clock=clock,
            delete_policy=DeletePolicy(mode="soft", purge_soft_deleted_after=3600),
        )
        async with jobs:
            job_id = await _finished(jobs)
            await jobs.delete(job_id)
            clock.advance(3599)
            assert (await jobs.sweep()).purged == 0
            clock.advance(2)
            report = await jobs.sweep()
            assert report.purged == 1
            assert report.artifacts_deleted == 2
            with pytest.raises(JobNotFound):
                await jobs.get(job_id, include_deleted=True)
            assert [r.action for r in await jobs.audit(job_id)] == ["purge", "delete"]


class TestArtifactDelete:
    async def test_delete_one_artifact(self, make_manager: ManagerFactory) -> None:
        """delete_artifact removes one blob, audits it and leaves the rest."""
        jobs = make_manager(handlers=HANDLERS)
        async with jobs, jobs.subscribe() as events:
            job_id = await _finished(jobs)
            await jobs.delete_artifact(job_id, "input/audio.wav")
            assert await jobs.artifacts(job_id) == ["output/transcript.txt"]
            assert await jobs.read_artifact(job_id, "output/transcript.txt") == b"hello"
            with pytest.raises(ArtifactNotFound):
                await jobs.read_artifact(job_id, "input/audio.wav")
            with pytest.raises(ArtifactNotFound):
                await jobs.delete_artifact(job_id, "input/audio.wav")
            [record] = await jobs.audit(job_id)
            assert (record.action, record.details["name"]) == ("delete_artifact", "input/audio.wav")
            seen = [e.type async for e in _take(events, 4)]
        assert seen[-1] == "artifact_deleted"

    async def test_cannot_delete_artifact_of_running_job(self, make_manager: ManagerFactory) -> None:
        """Deleting an artifact of a running job is InvalidState."""
        jobs = make_manager()
        started, release = anyio.Event(), anyio.Event()

        @jobs.handler("block")
        async def block(ctx: JobContext, payload: Any) -> None:
            await ctx.put_artifact("a", b"1")
            started.set()
            await release.wait()

        async with jobs:
            job = await jobs.submit("block")
            await started.wait()
            with pytest.raises(InvalidState, match="running"):
                await jobs.delete_artifact(job.id, "a")
            release.set()


async def _take(stream: Any, n: int) -> Any:
    for _ in range(n):
        yield await stream.__anext__()
