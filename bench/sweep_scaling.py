"""Sweep scaling: 1,000 expired jobs swept among 10,000 kept jobs, then among 1,000,000.

Finished jobs (status ``completed``) go straight into a MemoryStore with ``await
store.insert(job)``: the kept ones expire a year from now, the expired ones a second ago
(time from a FakeClock). Only ``await jobs.sweep()`` is timed; each size runs a few
rounds of 1,000 fresh expired jobs and keeps the best; the two sizes live side by side
and their sweeps alternate, so a busy machine slows both alike. Floor: the data-structure cost
alone, popping 1,000 entries from a plain ``heapq`` of the same sizes.

Target: time(1M) / time(10k) <= 1.5 (a sweep costs what there is to sweep, not what is kept).

    .venv/bin/python bench/sweep_scaling.py [--backend asyncio|trio]
"""

from __future__ import annotations

import gc
import heapq
from datetime import datetime, timedelta

import _common
import anyio

from jobkit import Job, JobManager, JobStatus
from jobkit.stores import MemoryStore
from jobkit.testing import FakeClock

SMALL = 10_000
LARGE = 1_000_000
EXPIRED = 1_000
ROUNDS = 7
TARGET_RATIO = 1.5


def finished_job(job_id: str, created: datetime, expires: datetime) -> Job:
    """A completed job as a worker would have left it (datetimes shared to keep memory low)."""
    return Job(
        id=job_id,
        kind="bench",
        status=JobStatus.COMPLETED,
        payload=None,
        created_at=created,
        started_at=created,
        finished_at=created,
        expires_at=expires,
        version=3,
        attempts=1,
    )


class Fixture:
    """A manager over a MemoryStore holding ``kept`` finished jobs that will not expire soon."""

    def __init__(self, kept: int) -> None:
        self.kept = kept
        self.clock = FakeClock()
        self.store = MemoryStore()
        self.jobs = JobManager(self.store, concurrency=0, sweep_interval=None, clock=self.clock)
        now = self.clock()
        self.created = now - timedelta(hours=1)
        self.keep_until = now + timedelta(days=365)
        self.expired_at = now - timedelta(seconds=1)
        self.rounds = 0
        self.best = float("inf")
        self.setup = 0.0

    async def fill(self) -> None:
        began = _common.now()
        insert = self.store.insert
        created, keep_until = self.created, self.keep_until
        for i in range(self.kept):
            await insert(finished_job(f"{i:032x}", created, keep_until))
        self.setup = _common.now() - began

    async def sweep_once(self) -> None:
        """Add EXPIRED expired jobs, then time one sweep (and only the sweep)."""
        r = self.rounds
        self.rounds += 1
        for i in range(EXPIRED):
            await self.store.insert(finished_job(f"x{r:03d}{i:028x}", self.created, self.expired_at))
        gc.collect()
        began = _common.now()
        report = await self.jobs.sweep()
        self.best = min(self.best, _common.now() - began)
        if report.expired != EXPIRED:
            raise RuntimeError(f"swept {report.expired} jobs, expected {EXPIRED}")

    async def check_kept(self) -> None:
        newest = await self.jobs.list(limit=1)
        if not newest.items or newest.items[0].expires_at != self.keep_until:
            raise RuntimeError("the kept jobs were not kept")


async def measure_sweeps() -> tuple[Fixture, Fixture]:
    """Both sizes side by side, their sweeps alternating so machine noise hits both alike."""
    small, large = Fixture(SMALL), Fixture(LARGE)
    await small.fill()
    await large.fill()
    async with small.jobs, large.jobs:
        for _ in range(ROUNDS):
            await small.sweep_once()
            await large.sweep_once()
        await small.check_kept()
        await large.check_kept()
    return small, large


def measure_heap_floor(kept: int) -> float:
    """Best time to pop EXPIRED due entries off a heap that also holds ``kept`` future ones."""
    heap = [(1, i) for i in range(kept)]  # sorted, hence already a heap
    best = float("inf")
    for r in range(ROUNDS):
        for i in range(EXPIRED):
            heapq.heappush(heap, (0, -(r * EXPIRED + i)))
        began = _common.now()
        for _ in range(EXPIRED):
            heapq.heappop(heap)
        best = min(best, _common.now() - began)
    return best


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0])
    _common.quiet_logs()
    small_fixture, large_fixture = anyio.run(measure_sweeps, backend=args.backend)
    small, large = small_fixture.best, large_fixture.best
    small_setup, large_setup = small_fixture.setup, large_fixture.setup
    del small_fixture, large_fixture
    gc.collect()
    floor_small = measure_heap_floor(SMALL)
    floor_large = measure_heap_floor(LARGE)
    ratio = large / small
    floor_ratio = floor_large / floor_small
    _common.header(f"sweep scaling: {EXPIRED:,} expired jobs, best of {ROUNDS} sweeps", args.backend)
    _common.line(
        "jobkit",
        f"among {SMALL:,} kept: {small * 1000:.2f} ms   among {LARGE:,} kept: {large * 1000:.2f} ms"
        f"   (setup {small_setup:.2f} s / {large_setup:.2f} s)",
    )
    _common.line(
        "floor",
        f"heapq pops, {SMALL:,}: {floor_small * 1000:.3f} ms   {LARGE:,}: {floor_large * 1000:.3f} ms"
        f"   ratio {floor_ratio:.2f}",
    )
    _common.line(
        "ratio",
        f"time(1M) / time(10k) = {ratio:.2f}  "
        f"(target <= {TARGET_RATIO:g}: {_common.verdict(ratio <= TARGET_RATIO)})",
    )
    _common.line(
        "per job", f"{small / EXPIRED * 1e6:.1f} us / {large / EXPIRED * 1e6:.1f} us per expired job"
    )


if __name__ == "__main__":
    main()
