"""A status change and its audit record are written together or not at all (SQLite).

A real process is SIGKILLed in the middle of the store's transaction, after one of the two
writes and before the other; the database must then hold neither. Done in-process, the
same action leaves both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from jobkit import AuditAction, JobContext, JobManager, JobNotFound, JobStatus
from jobkit.stores import SQLiteStore

pytestmark = pytest.mark.anyio

CHILD = Path(__file__).with_name("atomic_child.py")


async def noop(ctx: JobContext, payload: Any) -> None:
    pass


async def prepared_job(path: Path, action: str) -> str:
    """A completed job to delete, or a pending one to cancel."""
    jobs = JobManager(SQLiteStore(path), sweep_interval=None, concurrency=1 if action == "delete" else 0)
    jobs.register("noop", noop)
    async with jobs:
        job = await jobs.submit("noop")
        if action == "delete":
            await jobs.wait(job.id, timeout=10)
        return job.id


async def kill_halfway(path: Path, job_id: str, action: str) -> None:
    process = subprocess.Popen(
        [sys.executable, str(CHILD), str(path), job_id, action],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        with anyio.fail_after(60):
            line = await anyio.to_thread.run_sync(process.stdout.readline)
        assert line == "frozen\n", line
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode == -signal.SIGKILL


@pytest.mark.parametrize(
    ("action", "audit_action"), [("delete", AuditAction.DELETE), ("cancel", AuditAction.CANCEL)]
)
async def test_a_process_killed_between_the_change_and_its_audit_wrote_neither(
    tmp_path: Path, action: str, audit_action: AuditAction
) -> None:
    """SIGKILL between the job write and the audit write: the job is as it was, no audit record."""
    path = tmp_path / "jobs.db"
    job_id = await prepared_job(path, action)
    await kill_halfway(path, job_id, action)

    jobs = JobManager(SQLiteStore(path), sweep_interval=None, concurrency=0)
    jobs.register("noop", noop)
    async with jobs:
        job = await jobs.get(job_id)
        assert job.status is (JobStatus.COMPLETED if action == "delete" else JobStatus.PENDING)
        assert [r.action for r in await jobs.audit(job_id=job_id)] == []
        # The same action, not interrupted, writes both.
        if action == "delete":
            await jobs.delete(job_id)
            with pytest.raises(JobNotFound):
                await jobs.get(job_id)
        else:
            assert (await jobs.cancel(job_id)).status is JobStatus.CANCELLED
        assert [r.action for r in await jobs.audit(job_id=job_id)] == [audit_action]
