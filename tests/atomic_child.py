"""A process that deletes a job and freezes between the two writes of that delete.

usage: atomic_child.py DB_PATH JOB_ID ACTION   (ACTION: delete or cancel)
Inside the store's transaction, once the job's row has been written and before the audit
record is (or the other way round), it prints "frozen" and sleeps: the test SIGKILLs it
there. Run as a script, not collected.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import anyio
import structlog

from jobkit import JobManager
from jobkit.stores import SQLiteStore

#: The statements that write the job's row, and the one that writes its audit record.
JOB_WRITES = ("DELETE FROM jobs", "UPDATE jobs")
AUDIT_WRITE = "INSERT INTO audit"


async def main(db: str, job_id: str, action: str) -> None:
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    store = SQLiteStore(db)
    jobs = JobManager(store, concurrency=0, sweep_interval=None)
    seen: set[str] = set()

    def trace(statement: str) -> None:
        text = statement.lstrip()
        kind = "job" if text.startswith(JOB_WRITES) else "audit" if text.startswith(AUDIT_WRITE) else None
        if kind is None:
            return
        seen.add(kind)
        if len(seen) == 2:  # one of the two writes done, the other about to run: in between
            sys.stdout.write("frozen\n")
            sys.stdout.flush()
            time.sleep(600)

    async with jobs:
        connection: Any = store._conn  # the one connection the store writes through
        connection.set_trace_callback(trace)
        if action == "delete":
            await jobs.delete(job_id)
        else:
            await jobs.cancel(job_id, reason="killed halfway")
    sys.stdout.write("done\n")


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4])
