"""Durable throughput: 5,000 no-op jobs through SQLiteStore vs. raw sqlite3.

jobkit: ``JobManager(SQLiteStore(path), concurrency=100)``, jobs submitted and awaited by
100 concurrent clients (as a web service would), and, for reference, by one client
submitting everything then waiting. Floor: raw ``sqlite3`` doing, per job, one insert and
two status updates, each in its own committed transaction (WAL, synchronous=NORMAL).

Target: jobkit's time <= 3x the floor's.

    .venv/bin/python bench/durable.py [--backend asyncio|trio]
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import _common
import anyio

from jobkit import JobContext, JobManager
from jobkit.stores import SQLiteStore

JOBS = 5_000
CLIENTS = 100
TARGET_RATIO = 3.0


async def noop(ctx: JobContext, payload: Any) -> None:
    """No work: only the bookkeeping is measured."""


def floor(path: Path) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, status TEXT NOT NULL, payload TEXT)")
    start = _common.now()
    for i in range(JOBS):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO jobs (id, status, payload) VALUES (?, 'pending', '{}')", (i,))
        conn.execute("COMMIT")
        for status in ("running", "completed"):
            conn.execute("BEGIN")
            conn.execute("UPDATE jobs SET status = ? WHERE id = ?", (status, i))
            conn.execute("COMMIT")
    elapsed = _common.now() - start
    conn.close()
    return elapsed


async def run_jobkit(path: Path, clients: int) -> float:
    jobs = JobManager(SQLiteStore(path), concurrency=100, sweep_interval=None)
    jobs.register("noop", noop)
    async with jobs:
        start = _common.now()
        if clients == 1:
            ids = [(await jobs.submit("noop")).id for _ in range(JOBS)]
            for job_id in ids:
                await jobs.wait(job_id)
        else:

            async def client() -> None:
                for _ in range(JOBS // clients):
                    job = await jobs.submit("noop")
                    await jobs.wait(job.id)

            async with anyio.create_task_group() as tg:
                for _ in range(clients):
                    tg.start_soon(client)
        return _common.now() - start


def main() -> None:
    args = _common.parse_args(__doc__ or "")
    _common.quiet_logs()
    _common.header(f"durable: {JOBS:,} no-op jobs on SQLiteStore", args.backend)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        floor_time = min(floor(base / f"floor{i}.db") for i in range(3))
        _common.fresh_heap()
        concurrent = min(
            anyio.run(run_jobkit, base / f"jk{i}.db", CLIENTS, backend=args.backend) for i in range(3)
        )
        _common.fresh_heap()
        sequential = anyio.run(run_jobkit, base / "seq.db", 1, backend=args.backend)
    ratio = concurrent / floor_time
    _common.line("floor", f"{floor_time:.3f} s  ({JOBS / floor_time:,.0f} jobs/s, 3 commits per job)")
    _common.line("jobkit", f"{concurrent:.3f} s  ({JOBS / concurrent:,.0f} jobs/s, {CLIENTS} clients)")
    _common.line(
        "ratio", f"{ratio:.2f}x  (target <= {TARGET_RATIO:g}x: {_common.verdict(ratio <= TARGET_RATIO)})"
    )
    _common.line(
        "1 client",
        f"{sequential:.3f} s  ({JOBS / sequential:,.0f} jobs/s, {sequential / floor_time:.1f}x; "
        "each submit waits for its own thread hop)",
    )


if __name__ == "__main__":
    main()
