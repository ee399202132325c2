"""A worker process for the multi-process SQLite tests (run as a script, not collected).

usage: sqlite_worker.py DB_PATH OUT_FILE
Runs "mark" jobs (append the job id to OUT_FILE) and "hang" jobs (write OUT_FILE.started,
then checkpoint forever) until no pending or running job is left.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import structlog

from jobkit import JobContext, JobManager
from jobkit.stores import SQLiteStore


async def main(db: str, out: str) -> None:
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    jobs = JobManager(SQLiteStore(db), concurrency=8, sweep_interval=None, poll_interval=0.05)
    marks = Path(out).open("a")  # noqa: SIM115 - closed below, shared by handlers

    @jobs.handler("mark")
    async def mark(ctx: JobContext, payload: Any) -> None:
        await anyio.sleep(0.001)
        marks.write(ctx.job.id + "\n")
        marks.flush()

    @jobs.handler("hang")
    async def hang(ctx: JobContext, payload: Any) -> None:
        Path(out + ".started").write_text(ctx.job.id)
        while True:
            await ctx.checkpoint()
            await anyio.sleep(0.01)

    async with jobs:
        while True:
            page = await jobs.list(status=["pending", "running", "cancelling"], limit=1)
            if not page.items:
                break
            await anyio.sleep(0.05)
    marks.close()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
