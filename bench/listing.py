"""Listing latency: one page of 50 among 100,000 jobs, filtered by tenant and status.

Jobs are spread evenly over 20 tenants and, within each tenant, over the six statuses;
each measurement lists the first page of one tenant's failed jobs (and, for paging, the
page after a cursor). Floor: the
same query written by hand against the same SQLite file (for SQLite) and a plain list
comprehension over the same jobs (for memory).

Targets: p95 <= 5 ms on SQLite, <= 1 ms on memory.

    .venv/bin/python bench/listing.py [--backend asyncio|trio]
"""

from __future__ import annotations

import sqlite3
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import _common
import anyio

from jobkit import Actor, Job, JobManager, JobStatus
from jobkit.abc import JobStore
from jobkit.stores import MemoryStore, SQLiteStore

JOBS = 100_000
TENANTS = 20
RUNS = 200
STATUSES = list(JobStatus)
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def make_jobs() -> list[Job]:
    return [
        Job(
            id=uuid.uuid4().hex, kind="work", status=STATUSES[(i // TENANTS) % len(STATUSES)],
            payload={"n": i}, tenant=f"t{i % TENANTS}", created_at=T0 + timedelta(seconds=i),
        )
        for i in range(JOBS)
    ]  # fmt: skip


async def fill(store: JobStore, jobs: list[Job]) -> None:
    await store.open()
    if isinstance(store, SQLiteStore):
        # One transaction for the setup: 100,000 separate commits would take minutes.
        from jobkit.stores import _sqlite

        def bulk(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
            conn.executemany(_sqlite._INSERT, rows)

        await store._run(bulk, [_sqlite._row(job) for job in jobs])
    else:
        for job in jobs:
            await store.insert(job)


async def measure(store: JobStore) -> tuple[list[float], list[float]]:
    jobs = JobManager(store, concurrency=0, sweep_interval=None)
    actor = Actor("bench", tenant="t7")
    first: list[float] = []
    second: list[float] = []
    async with jobs:
        for _ in range(RUNS):
            start = _common.now()
            page = await jobs.list(actor=actor, status="failed", limit=50)
            first.append(_common.now() - start)
            start = _common.now()
            await jobs.list(actor=actor, status="failed", limit=50, cursor=page.next_cursor)
            second.append(_common.now() - start)
    return first, second


def sqlite_floor(path: Path) -> list[float]:
    conn = sqlite3.connect(path)
    times = []
    for _ in range(RUNS):
        start = _common.now()
        conn.execute(
            "SELECT * FROM jobs WHERE tenant = ? AND status IN (?) AND deleted_at IS NULL "
            "ORDER BY seq DESC LIMIT 51",
            ("t7", "failed"),
        ).fetchall()
        times.append(_common.now() - start)
    conn.close()
    return times


def memory_floor(jobs: list[Job]) -> list[float]:
    times = []
    for _ in range(RUNS):
        start = _common.now()
        found = []
        for job in reversed(jobs):
            if job.tenant == "t7" and job.status is JobStatus.FAILED:
                found.append(job)
                if len(found) == 51:
                    break
        times.append(_common.now() - start)
    return times


def report(name: str, times: tuple[list[float], list[float]], floor: list[float], target_ms: float) -> None:
    first, second = times
    p95 = _common.percentile(first, 95) * 1000
    p95_next = _common.percentile(second, 95) * 1000
    floor_p95 = _common.percentile(floor, 95) * 1000
    p50 = _common.percentile(first, 50) * 1000
    _common.line(name, f"p50 {p50:.3f} ms, p95 {p95:.3f} ms, next page p95 {p95_next:.3f} ms")
    _common.line("floor", f"p95 {floor_p95:.3f} ms  (ratio {p95 / floor_p95:.1f}x)")
    _common.line("target", f"p95 <= {target_ms:g} ms: {_common.verdict(max(p95, p95_next) <= target_ms)}")


def main() -> None:
    args = _common.parse_args(__doc__ or "")
    _common.quiet_logs()
    _common.header(f"listing: a page of 50 among {JOBS:,} jobs (tenant + status filter)", args.backend)
    jobs = make_jobs()
    memory = MemoryStore()
    anyio.run(fill, memory, jobs, backend=args.backend)
    report("memory", anyio.run(measure, memory, backend=args.backend), memory_floor(jobs), 1.0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "jobs.db"
        sqlite = SQLiteStore(path)
        anyio.run(fill, sqlite, jobs, backend=args.backend)
        report("sqlite", anyio.run(measure, SQLiteStore(path), backend=args.backend), sqlite_floor(path), 5.0)


if __name__ == "__main__":
    main()
