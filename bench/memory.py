"""Memory: bytes each finished job keeps in a MemoryStore.

jobkit: 20,000 jobs with a small payload (``{"n": i}``) run to completion through a
JobManager on a MemoryStore; traced memory (tracemalloc) after they finished, minus the
baseline before they were submitted, divided by the number of jobs. Everything the
manager keeps per job counts: the record, the payload copy, the store's indexes, the
expiry heap entry. Floor: the same finished Job records (with the same payloads and
their own datetimes) kept in a plain dict by id, and nothing else.

Target: <= 2 KiB per job.

    .venv/bin/python bench/memory.py [--backend asyncio|trio]
"""

from __future__ import annotations

import gc
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import _common
import anyio

import jobkit
from jobkit import Job, JobContext, JobManager, JobStatus
from jobkit.stores import MemoryStore

JOBS = 20_000
WARMUP = 500
BATCH = 1_000
TARGET = 2048
TOP_SITES = 8
_PACKAGE_ROOT = Path(jobkit.__file__).resolve().parent.parent


async def noop(ctx: JobContext, payload: Any) -> None:
    """Nothing to do: the job's footprint is what the manager keeps."""


async def run(jobs: JobManager, count: int, offset: int) -> None:
    """Run ``count`` jobs to completion, in batches, keeping no references to them."""
    for first in range(offset, offset + count, BATCH):
        ids = [(await jobs.submit("noop", {"n": i})).id for i in range(first, first + BATCH)]
        for job_id in ids:
            if (await jobs.wait(job_id)).status is not JobStatus.COMPLETED:
                raise RuntimeError(f"job {job_id} did not complete")


async def measure_jobkit() -> tuple[float, list[tracemalloc.StatisticDiff]]:
    """Traced bytes per finished job, and the allocation sites that grew most."""
    jobs = JobManager(MemoryStore(), sweep_interval=None)
    jobs.register("noop", noop)
    async with jobs:
        await run(jobs, WARMUP, 0)  # first-use allocations are not per job
        gc.collect()
        before = tracemalloc.take_snapshot()
        baseline = tracemalloc.get_traced_memory()[0]
        await run(jobs, JOBS, WARMUP)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        sites = tracemalloc.take_snapshot().compare_to(before, "lineno")
        kept = await jobs.list(limit=1)
        if not kept.items or kept.items[0].payload != {"n": WARMUP + JOBS - 1}:
            raise RuntimeError("the finished jobs were not kept")
    return (after - baseline) / JOBS, sites[:TOP_SITES]


def measure_floor() -> float:
    """Traced bytes per job for the bare records in a dict."""
    gc.collect()
    baseline = tracemalloc.get_traced_memory()[0]
    records: dict[str, Job] = {}
    for i in range(JOBS):
        created = datetime.now(UTC)
        job = Job(
            id=uuid.uuid4().hex,
            kind="noop",
            status=JobStatus.COMPLETED,
            payload={"n": i},
            progress=1.0,
            created_at=created,
            started_at=datetime.now(UTC),
            finished_at=datetime.now(UTC),
            expires_at=datetime.now(UTC) + timedelta(days=7),
            version=3,
            attempts=1,
        )
        records[job.id] = job
    gc.collect()
    per_job = (tracemalloc.get_traced_memory()[0] - baseline) / JOBS
    del records
    return per_job


def where(stat: tracemalloc.StatisticDiff) -> str:
    frame = stat.traceback[0]
    path = Path(frame.filename)
    try:
        name = str(path.resolve().relative_to(_PACKAGE_ROOT))
    except ValueError:
        name = path.name
    return f"{name}:{frame.lineno}"


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0])
    _common.quiet_logs()
    tracemalloc.start()
    try:
        floor = measure_floor()
        per_job, sites = anyio.run(measure_jobkit, backend=args.backend)
    finally:
        tracemalloc.stop()
    _common.header(f"memory: {JOBS:,} finished jobs kept in a MemoryStore (tracemalloc)", args.backend)
    _common.line("jobkit", f"{per_job:,.0f} bytes per job")
    _common.line("floor", f"{floor:,.0f} bytes per job  (the same finished Job records in a dict)")
    _common.line("ratio", f"{per_job / floor:.2f}x the floor;  {per_job / TARGET:.2f}x the target")
    _common.line("target", f"<= {TARGET:,} bytes (2 KiB) per job: {_common.verdict(per_job <= TARGET)}")
    print("  largest growth by allocation site (bytes per job):")
    for stat in sites:
        print(f"    {stat.size_diff / JOBS:>8,.1f}  {where(stat)}")


if __name__ == "__main__":
    main()
