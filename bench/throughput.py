"""Throughput: 20,000 no-op async jobs through a JobManager on a MemoryStore.

jobkit: ``JobManager(MemoryStore(), concurrency=100, sweep_interval=None)``; submit every
job, then ``await jobs.wait(id)`` for each. Floor: 100 anyio worker tasks pulling the
same no-op coroutines from an anyio memory object stream (a worker pool with no
bookkeeping). Best of 3 runs each, the two alternating.

Target: jobkit's time <= 10x the floor's, and >= 30,000 jobs/s.

    .venv/bin/python bench/throughput.py [--backend asyncio|trio]
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import _common
import anyio
from anyio.abc import ObjectReceiveStream

from jobkit import JobContext, JobManager, JobStatus
from jobkit.stores import MemoryStore

JOBS = 20_000
CONCURRENCY = 100
RUNS = 3
TARGET_RATIO = 10.0
TARGET_RATE = 30_000.0


async def noop(ctx: JobContext | None, payload: Any) -> None:
    """The work: nothing at all, so only the machinery around it is measured."""


async def run_jobkit() -> float:
    """Seconds to submit JOBS no-op jobs and wait for each to complete."""
    jobs = JobManager(MemoryStore(), concurrency=CONCURRENCY, sweep_interval=None)
    jobs.register("noop", noop)
    async with jobs:
        start = _common.now()
        ids = [(await jobs.submit("noop", i)).id for i in range(JOBS)]
        for job_id in ids:
            job = await jobs.wait(job_id)
            if job.status is not JobStatus.COMPLETED:
                raise RuntimeError(f"job {job_id} ended {job.status}")
        return _common.now() - start


async def run_floor() -> float:
    """Seconds for a bare worker pool to run the same no-op coroutines."""
    send, receive = anyio.create_memory_object_stream[tuple[Callable[..., Awaitable[None]], int]](math.inf)
    done = 0

    async def worker(
        items: ObjectReceiveStream[tuple[Callable[..., Awaitable[None]], int]],
    ) -> None:
        nonlocal done
        async with items:
            async for fn, arg in items:
                await fn(None, arg)
                done += 1

    start = _common.now()
    async with anyio.create_task_group() as tg:
        for _ in range(CONCURRENCY):
            tg.start_soon(worker, receive.clone())
        async with send:
            for i in range(JOBS):
                send.send_nowait((noop, i))
        receive.close()
    elapsed = _common.now() - start
    if done != JOBS:
        raise RuntimeError(f"floor ran {done} of {JOBS} jobs")
    return elapsed


def best_of_alternating(backend: str) -> tuple[float, float]:
    """Best (jobkit, floor) seconds over RUNS rounds; alternating, so noise hits both alike."""
    jobkit, floor = [], []
    for _ in range(RUNS):
        for fn, times in ((run_floor, floor), (run_jobkit, jobkit)):
            _common.fresh_heap()
            times.append(anyio.run(fn, backend=backend))
    return min(jobkit), min(floor)


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0])
    _common.quiet_logs()
    jobkit, floor = best_of_alternating(args.backend)
    jobkit_rate = JOBS / jobkit
    floor_rate = JOBS / floor
    ratio = jobkit / floor
    _common.header(
        f"throughput: {JOBS:,} no-op async jobs, concurrency {CONCURRENCY}, best of {RUNS}",
        args.backend,
    )
    _common.line("jobkit", f"{jobkit_rate:>10,.0f} jobs/s  ({jobkit:.3f} s)  submit all, then wait each")
    _common.line(
        "floor", f"{floor_rate:>10,.0f} jobs/s  ({floor:.3f} s)  anyio worker pool on a memory stream"
    )
    _common.line(
        "ratio",
        f"{ratio:.1f}x the floor's time  "
        f"(target <= {TARGET_RATIO:g}x: {_common.verdict(ratio <= TARGET_RATIO)})",
    )
    _common.line(
        "target",
        f">= {TARGET_RATE:,.0f} jobs/s: {_common.verdict(jobkit_rate >= TARGET_RATE)}",
    )


if __name__ == "__main__":
    main()
