"""Cancel latency: from ``await jobs.cancel(id)`` to the job observed ``cancelled``.

jobkit: a running async job loops ``await ctx.checkpoint(); await anyio.sleep(0.001)``;
the clock starts just before ``await jobs.cancel(id)`` and stops when ``await
jobs.wait(id)`` returns the cancelled job. Floor: the same loop in a plain task, stopped
by a bare ``anyio.Event`` (from ``event.set()`` to the task's exit, as seen by the
caller). 200 repetitions each, the two alternating; p50/p95/p99 in milliseconds.

Target: jobkit's p95 <= 3 ms.

    .venv/bin/python bench/cancel_latency.py [--backend asyncio|trio]
"""

from __future__ import annotations

from typing import Any

import _common
import anyio
from anyio.abc import TaskGroup

from jobkit import JobContext, JobManager, JobStatus
from jobkit.stores import MemoryStore

REPETITIONS = 200
WARMUP = 10
TICK = 0.001
TARGET_P95_MS = 3.0
BOUND = 10.0  # seconds; no single repetition may take longer


async def measure() -> tuple[list[float], list[float]]:
    """Seconds to the observed stop, per repetition: (jobkit, floor), measured alternately."""
    started: dict[int, anyio.Event] = {}

    async def spin_job(ctx: JobContext, payload: Any) -> None:
        started[payload].set()
        while True:
            await ctx.checkpoint()
            await anyio.sleep(TICK)

    async def spin_task(stop: anyio.Event, running: anyio.Event, exited: anyio.Event) -> None:
        running.set()
        while not stop.is_set():
            await anyio.lowlevel.checkpoint()
            await anyio.sleep(TICK)
        exited.set()

    async def one_job(jobs: JobManager, n: int) -> float:
        started[n] = anyio.Event()
        job = await jobs.submit("spin", n)
        await started[n].wait()
        begin = _common.now()
        await jobs.cancel(job.id)
        done = await jobs.wait(job.id)
        elapsed = _common.now() - begin
        del started[n]
        if done.status is not JobStatus.CANCELLED:
            raise RuntimeError(f"job ended {done.status}, not cancelled")
        return elapsed

    async def one_task(tg: TaskGroup) -> float:
        stop, running, exited = anyio.Event(), anyio.Event(), anyio.Event()
        tg.start_soon(spin_task, stop, running, exited)
        await running.wait()
        begin = _common.now()
        stop.set()
        await exited.wait()
        return _common.now() - begin

    jobs = JobManager(MemoryStore(), concurrency=1, sweep_interval=None)
    jobs.register("spin", spin_job)
    jobkit: list[float] = []
    floor: list[float] = []
    async with jobs, anyio.create_task_group() as tg:
        for n in range(WARMUP + REPETITIONS):
            with anyio.fail_after(BOUND):
                job_latency = await one_job(jobs, n)
                task_latency = await one_task(tg)
            if n >= WARMUP:
                jobkit.append(job_latency)
                floor.append(task_latency)
    return jobkit, floor


def summary(samples: list[float]) -> tuple[float, float, float]:
    ms = [s * 1000 for s in samples]
    return _common.percentile(ms, 50), _common.percentile(ms, 95), _common.percentile(ms, 99)


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0])
    _common.quiet_logs()
    _common.fresh_heap()
    jobkit_samples, floor_samples = anyio.run(measure, backend=args.backend)
    jobkit, floor = summary(jobkit_samples), summary(floor_samples)
    _common.header(
        f"cancel latency: job checkpointing every {TICK * 1000:g} ms, {REPETITIONS} repetitions",
        args.backend,
    )
    _common.line(
        "jobkit",
        "p50 {:.3f} ms   p95 {:.3f} ms   p99 {:.3f} ms   cancel() to wait() -> cancelled".format(*jobkit),
    )
    _common.line(
        "floor",
        "p50 {:.3f} ms   p95 {:.3f} ms   p99 {:.3f} ms   Event.set() to the task's exit".format(*floor),
    )
    ratios = "   ".join(
        f"{name} {j / f:.2f}x" for name, j, f in zip(("p50", "p95", "p99"), jobkit, floor, strict=True)
    )
    _common.line("ratio", ratios)
    _common.line("target", f"p95 <= {TARGET_P95_MS:g} ms: {_common.verdict(jobkit[1] <= TARGET_P95_MS)}")


if __name__ == "__main__":
    main()
