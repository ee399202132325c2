"""A process for the crash test of SQLiteStore.apply() (run as a script, not collected).

usage: sqlite_apply_worker.py DB_PATH
Forever: store job number i (id "job-<i>"), then delete it through apply() together with
its audit record; prints "deleting" once, then a line per deleted job. The test SIGKILLs it.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import anyio

from jobkit import AuditRecord, Job, JobStatus
from jobkit._records import AuditAction
from jobkit.abc import Change
from jobkit.stores import SQLiteStore

T0 = datetime(2030, 1, 1, tzinfo=UTC)


async def main(db: str) -> None:
    store = SQLiteStore(db)
    await store.open()
    print("deleting", flush=True)
    i = 0
    while True:
        job = Job(id=f"job-{i:07d}", kind="work", status=JobStatus.COMPLETED, created_at=T0, version=2)
        await store.insert(job)
        record = AuditRecord(
            id=f"audit-{i:07d}", at=T0, action=AuditAction.DELETE, actor_id=None, tenant=None, job_id=job.id
        )
        assert await store.apply(Change(job_id=job.id, expected_version=2, job=None, audit=record))
        print(i, flush=True)
        i += 1


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
