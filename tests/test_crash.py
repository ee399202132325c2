"""Crashes and races with real processes: SIGKILL, SIGSTOP, and two processes at once.

Every test starts ``crash_child.py`` processes on one SQLite file and one artifact folder,
waits for the line a child prints at the point that matters, then kills (or freezes) it
there and checks what a later process finds: nothing half-done, nothing orphaned, and an
audit that tells the truth.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from jobkit import JobContext, JobManager, JobNotFound, JobStatus
from jobkit._records import MAX_DURATION
from jobkit.blobs import FileBlobStore
from jobkit.blobs._file import TEMP_PREFIX
from jobkit.stores import SQLiteStore
from jobkit.testing import FakeClock

pytestmark = pytest.mark.anyio

CHILD = Path(__file__).with_name("crash_child.py")
LATER = timedelta(hours=2)  # far past any lease of the children


class Child:
    """One crash_child.py process: read the lines it prints, write it lines, kill it."""

    def __init__(self, tmp_path: Path, role: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD), role, str(tmp_path / "jobs.db"), str(tmp_path / "blobs"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    async def line(self) -> str:
        assert self.process.stdout is not None
        with anyio.fail_after(60):
            text = await anyio.to_thread.run_sync(self.process.stdout.readline, abandon_on_cancel=True)
        assert text, f"the child exited ({self.process.poll()}) instead of printing"
        return text.strip()

    async def expect(self, prefix: str) -> str:
        text = await self.line()
        assert text.startswith(prefix), text
        return text

    def send(self, text: str = "go") -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    async def stop(self) -> None:
        """Kill it (if it still runs) and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        await anyio.to_thread.run_sync(self.process.wait)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
async def children(tmp_path: Path) -> AsyncIterator[list[Child]]:
    """Children started by a test; every one is killed and reaped at the end."""
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in started:
            await child.stop()


def spawn(children: list[Child], tmp_path: Path, role: str, *args: str) -> Child:
    child = Child(tmp_path, role, *args)
    children.append(child)
    return child


async def _noop(ctx: JobContext, payload: Any) -> None:
    return None


def manager(tmp_path: Path, clock: FakeClock | None = None, **kwargs: Any) -> JobManager:
    blobs = FileBlobStore(tmp_path / "blobs")
    return JobManager(SQLiteStore(tmp_path / "jobs.db"), blobs, sweep_interval=None, clock=clock, **kwargs)


async def finished_job_with_files(jobs: JobManager, tmp_path: Path, count: int) -> str:
    """A completed job with ``count`` artifacts in nested folders (written as plain files)."""
    job = await jobs.submit("noop")
    await jobs.wait(job.id, timeout=10)
    folder = tmp_path / "blobs" / "jobs" / job.id
    for n in range(count):
        path = folder / f"part-{n % 10}" / f"{n}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert len(await jobs.artifacts(job.id)) == count
    return job.id


def left_under(tmp_path: Path, job_id: str) -> list[str]:
    """Everything (files, temp files, folders) left under a job's artifact folder."""
    folder = tmp_path / "blobs" / "jobs" / job_id
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


class TestDeletesAcrossProcesses:
    async def test_two_processes_deleting_the_same_jobs_audit_the_true_count(
        self, tmp_path: Path, children: list[Child]
    ) -> None:
        """Two processes delete the same 8 jobs (200 artifacts each) at the same moment:
        each time one wins and one finds it gone, the disk is clean, and the one audit
        record counts all 200 artifacts (not the share the winner removed itself)."""
        jobs = manager(tmp_path, concurrency=1)
        jobs.register("noop", _noop)
        async with jobs:
            ids = [await finished_job_with_files(jobs, tmp_path, 200) for _ in range(8)]
            deleters = [spawn(children, tmp_path, "delete", *ids) for _ in range(2)]
            for child in deleters:
                await child.expect("ready")
            for job_id in ids:
                for child in deleters:
                    child.send()
                outcomes = sorted([await child.line() for child in deleters])
                assert outcomes == ["deleted", "not found"], job_id
                with pytest.raises(JobNotFound):
                    await jobs.get(job_id)
                assert left_under(tmp_path, job_id) == []
                [record] = await jobs.audit(job_id)
                assert (record.action, record.details["artifacts_deleted"]) == ("delete", 200)

    @pytest.mark.parametrize("phase", ["counted", "half"])
    async def test_a_delete_killed_midway_is_all_or_nothing(
        self, tmp_path: Path, children: list[Child], phase: str
    ) -> None:
        """SIGKILL while the artifacts are counted: the job is whole, files and all, with no
        audit. SIGKILL half way through the files: the record and its audit (counting all
        of them) were written together, and the next sweep removes the rest."""
        jobs = manager(tmp_path, concurrency=1)
        jobs.register("noop", _noop)
        async with jobs:
            job_id = await finished_job_with_files(jobs, tmp_path, 100)
            before = await jobs.get(job_id)
            child = spawn(children, tmp_path, "delete-stuck", job_id, phase)
            await child.expect("ready")
            await child.expect(phase)
            child.signal(signal.SIGKILL)
            await child.stop()
            if phase == "counted":
                assert await jobs.get(job_id) == before
                assert len(await jobs.artifacts(job_id)) == 100
                assert await jobs.audit(job_id) == []
                await jobs.delete(job_id)  # and deleting it again just works
                [record] = await jobs.audit(job_id)
                assert record.details["artifacts_deleted"] == 100
            else:
                with pytest.raises(JobNotFound):
                    await jobs.get(job_id)
                [record] = await jobs.audit(job_id)
                assert record.details["artifacts_deleted"] == 100
                assert len(left_under(tmp_path, job_id)) > 50  # files and folders still there
                report = await jobs.sweep()
                assert report.artifacts_deleted == 50
            assert left_under(tmp_path, job_id) == []


class TestLeftovers:
    async def test_a_put_killed_before_its_rename_leaves_nothing_after_the_delete(
        self, tmp_path: Path, children: list[Child]
    ) -> None:
        """A process killed between writing a blob's temp file and renaming it: the temp
        file is there, and deleting the job removes it and its folders at once (the
        process named in it is gone), not only once it is old."""
        jobs = manager(tmp_path, concurrency=1)
        jobs.register("noop", _noop)
        async with jobs:
            job_id = await finished_job_with_files(jobs, tmp_path, 1)
            child = spawn(children, tmp_path, "put", f"jobs/{job_id}/out/big.bin")
            await child.expect("temp written")
            child.signal(signal.SIGKILL)
            await child.stop()
            [temp] = [name for name in left_under(tmp_path, job_id) if TEMP_PREFIX in name]
            assert temp.startswith(f"out/{TEMP_PREFIX}")
            assert await jobs.artifacts(job_id) == ["part-0/0.bin"]  # never listed
            await jobs.delete(job_id)
        assert left_under(tmp_path, job_id) == []
        assert not (tmp_path / "blobs" / "jobs" / job_id).exists()

    async def test_a_live_writers_temp_file_is_left_alone(self, tmp_path: Path) -> None:
        """A temp file of a process that still runs (this one) may be a put in progress:
        a prefix delete leaves it (and its folder) until it is old."""
        blobs = FileBlobStore(tmp_path / "blobs")
        await blobs.open()
        await blobs.put("jobs/j1/a.txt", b"a")
        from jobkit._process import process_tag

        live = tmp_path / "blobs" / "jobs" / "j1" / f"{TEMP_PREFIX}{process_tag()}-0123456789abcdef"
        live.write_bytes(b"in progress")
        assert await blobs.delete_prefix("jobs/j1/") == 1
        assert live.exists()
        old = os.stat(live).st_mtime - 3600
        os.utime(live, (old, old))
        assert await blobs.delete_prefix("jobs/j1/") == 0
        assert not live.parent.exists()

    async def test_a_prefix_delete_killed_half_way_leaves_no_empty_folders_after_a_retry(
        self, tmp_path: Path, children: list[Child]
    ) -> None:
        """3,000 artifacts in 300 folders; SIGKILL after half the files: the retried
        delete removes the rest and every folder it emptied."""
        folder = tmp_path / "blobs" / "jobs" / "big"
        for n in range(3000):
            path = folder / f"f{n % 300}" / f"{n}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
        child = spawn(children, tmp_path, "delete-prefix", "jobs/big/")
        await child.expect("half")
        child.signal(signal.SIGKILL)
        await child.stop()
        assert 1490 <= sum(1 for p in folder.rglob("*.bin")) <= 1510
        blobs = FileBlobStore(tmp_path / "blobs")
        assert await blobs.delete_prefix("jobs/big/") == sum(1 for _ in range(3000)) - 1500
        assert not folder.exists()
        assert not (tmp_path / "blobs" / "jobs").exists()  # emptied up to the root


class TestKilledWorkers:
    async def test_a_killed_worker_with_the_longest_ttl_is_recovered_and_the_sweep_goes_on(
        self, tmp_path: Path, children: list[Child]
    ) -> None:
        """A worker is SIGKILLed running a job whose ttl is the longest allowed; a later
        sweep (hours on) recovers it without overflowing and still expires another job."""
        jobs = manager(tmp_path, concurrency=1)
        jobs.register("noop", _noop)
        async with jobs:
            expired = await jobs.submit("noop", ttl=60)
            await jobs.wait(expired.id, timeout=10)
        submitter = manager(tmp_path, concurrency=0)
        submitter.declare("hang")
        async with submitter:
            victim = await submitter.submit("hang", ttl=MAX_DURATION, timeout=MAX_DURATION)
        worker = spawn(children, tmp_path, "hang")
        assert await worker.line() == f"started {victim.id}"
        worker.signal(signal.SIGKILL)
        await worker.stop()
        later = manager(tmp_path, FakeClock(datetime.now(UTC) + LATER), concurrency=0)
        async with later:
            report = await later.sweep()
            assert (report.recovered, report.expired) == (1, 1)
            job = await later.get(victim.id)
            assert (job.status, job.error) == (JobStatus.FAILED, "worker lost")
            assert job.expires_at is not None
            with pytest.raises(JobNotFound):
                await later.get(expired.id)
            assert (await later.sweep()).recovered == 0

    async def test_a_frozen_worker_that_lost_its_job_cannot_write_artifacts(
        self, tmp_path: Path, children: list[Child]
    ) -> None:
        """A worker frozen (SIGSTOP) past its lease: another process recovers the job and
        deletes it. Thawed, its handler's put_artifact is refused (it is told) and nothing
        is left under the job's folder; then it is killed."""
        submitter = manager(tmp_path, concurrency=0)
        submitter.declare("slow")
        async with submitter:
            job = await submitter.submit("slow")
        worker = spawn(children, tmp_path, "late-writer")
        assert await worker.line() == f"started {job.id}"
        worker.signal(signal.SIGSTOP)
        try:
            later = manager(tmp_path, FakeClock(datetime.now(UTC) + LATER), concurrency=0)
            later.declare("slow")
            async with later:
                assert (await later.sweep()).recovered == 1
                assert (await later.get(job.id)).status is JobStatus.FAILED
                await later.delete(job.id)
        finally:
            worker.signal(signal.SIGCONT)
        worker.send("write")
        assert await worker.line() == "JobCancelled"
        worker.signal(signal.SIGKILL)
        await worker.stop()
        assert left_under(tmp_path, job.id) == []


class TestHandlerSets:
    async def test_two_workers_with_different_handlers_each_run_only_their_kinds(
        self, tmp_path: Path, children: list[Child]
    ) -> None:
        """A GPU process (transcode) and a CPU process (report) share one store: every job
        runs once, in the process that has its handler; none fails for want of one. (The
        submitter never polls: its waits learn of the finishes from the other processes'
        change notes, also of jobs that finished before the wait began.)"""
        submitter = manager(tmp_path, concurrency=0, poll_interval=3600)
        submitter.declare("transcode")
        submitter.declare("report")
        async with submitter:
            ids = {}
            for n in range(40):
                for kind in ("transcode", "report"):
                    ids[(await submitter.submit(kind, n)).id] = kind
            workers = [spawn(children, tmp_path, "run", kinds) for kinds in ("transcode", "report")]
            for worker in workers:
                await worker.expect("running")
            for job_id in ids:
                assert (await submitter.wait(job_id, timeout=30)).status is JobStatus.COMPLETED
        for worker in workers:
            worker.send("stop")
            await anyio.to_thread.run_sync(worker.process.wait)
        runs = [line.split() for line in (tmp_path / "jobs.db.runs").read_text().splitlines()]
        assert Counter(job_id for job_id, _, _ in runs) == Counter(set(ids))
        assert all(kind == ids[job_id] == ran_by for job_id, kind, ran_by in runs)
