"""Timer accuracy: how late a ``delay=0.2`` job starts after its ``run_at``, in one process.

jobkit: 100 jobs submitted with ``delay=0.2``, one every 20 ms (so several timers are
pending at once), to a manager with the default timers (nothing polls faster than its
``poll_interval`` of 1 s: the start comes from the timer waking at ``run_at``). Each
no-op handler notes the time it started; the lateness is that time minus the job's
``run_at``. On MemoryStore and on SQLiteStore (a file in a temporary folder). Floor: the
same pattern with bare tasks, each ``await anyio.sleep(0.2)`` measured against its own
deadline, in the same run. p50/p95/max in milliseconds.

Target: jobkit's p95 <= 50 ms.

    .venv/bin/python bench/timer_accuracy.py [--backend asyncio|trio]
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common
import anyio

from jobkit import JobContext, JobManager, JobStatus
from jobkit.abc import JobStore
from jobkit.stores import MemoryStore, SQLiteStore

JOBS = 100
DELAY = 0.2
SPACING = 0.02
TARGET_P95_MS = 50.0
BOUND = 30.0  # seconds; the whole run of one store may not take longer


async def measure_jobkit(make_store: Callable[[], JobStore]) -> list[float]:
    """Seconds from each job's run_at to its handler's start."""
    started: dict[int, datetime] = {}

    async def note_start(ctx: JobContext, payload: Any) -> None:
        started[payload] = datetime.now(UTC)

    jobs = JobManager(make_store(), sweep_interval=None)
    jobs.register("timed", note_start)
    run_at: dict[int, datetime] = {}
    ids: list[str] = []
    async with jobs:
        with anyio.fail_after(BOUND):
            for n in range(JOBS):
                job = await jobs.submit("timed", n, delay=DELAY)
                if job.status is not JobStatus.SCHEDULED or job.run_at is None:
                    raise RuntimeError(f"a delayed submit came back {job.status}")
                run_at[n] = job.run_at
                ids.append(job.id)
                await anyio.sleep(SPACING)
            for job_id in ids:
                done = await jobs.wait(job_id)
                if done.status is not JobStatus.COMPLETED:
                    raise RuntimeError(f"a job ended {done.status}")
    return [(started[n] - run_at[n]).total_seconds() for n in range(JOBS)]


async def measure_floor() -> list[float]:
    """Seconds from each bare task's deadline (start + DELAY) to its wake-up."""
    late: list[float] = []

    async def sleeper() -> None:
        deadline = _common.now() + DELAY
        await anyio.sleep(DELAY)
        late.append(_common.now() - deadline)

    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            for _ in range(JOBS):
                tg.start_soon(sleeper)
                await anyio.sleep(SPACING)
    return late


def summary(samples: list[float]) -> tuple[float, float, float]:
    ms = [s * 1000 for s in samples]
    return _common.percentile(ms, 50), _common.percentile(ms, 95), max(ms)


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0])
    _common.quiet_logs()
    _common.header(
        f"timer accuracy: {JOBS} jobs with delay={DELAY:g} s, one submitted every {SPACING * 1000:g} ms",
        args.backend,
    )
    _common.fresh_heap()
    floor = summary(anyio.run(measure_floor, backend=args.backend))
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "memory": anyio.run(measure_jobkit, MemoryStore, backend=args.backend),
            "sqlite": anyio.run(
                measure_jobkit, lambda: SQLiteStore(Path(tmp) / "jobs.db"), backend=args.backend
            ),
        }
    line = "p50 {:.2f} ms   p95 {:.2f} ms   max {:.2f} ms"
    verdicts = []
    for name, samples in results.items():
        figures = summary(samples)
        _common.line(name, f"{line.format(*figures)}   handler start - run_at")
        verdicts.append(figures[1] <= TARGET_P95_MS)
        _common.line("ratio", f"p95 {figures[1] / floor[1]:.1f}x the floor's")
    _common.line("floor", f"{line.format(*floor)}   a bare anyio.sleep({DELAY:g}) past its deadline")
    _common.line("target", f"p95 <= {TARGET_P95_MS:g} ms: {_common.verdict(all(verdicts))}")


if __name__ == "__main__":
    main()
