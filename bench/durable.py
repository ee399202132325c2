"""Durable throughput: 5,000 no-op jobs through SQLiteStore vs. raw sqlite3.

jobkit: ``JobManager(SQLiteStore(path), concurrency=100, sweep_interval=None)``, driven in
two modes:

- **1 client**: one client submits one job and waits for it, 5,000 times (a script, a
  CLI, a request handler that waits for its job);
- **100 clients**: 100 concurrent clients do the same, 50 jobs each (a web service).

Floor: raw ``sqlite3`` doing, per job, one insert and two status updates, each in its own
committed transaction (WAL, synchronous=NORMAL): the three commits any durable queue
needs for submit, start and finish. The floor and both modes run in turns, ``--runs``
times each (default 3); the medians are compared.

Targets: 1 client <= 4x the floor (moonshot 3x); 100 clients <= 3x.

    .venv/bin/python bench/durable.py [--backend asyncio|trio] [--runs N] [--mode both|single|clients]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
from pathlib import Path
from typing import Any

import _common
import anyio

from jobkit import JobContext, JobManager, JobStatus
from jobkit.stores import SQLiteStore

JOBS = 5_000
CLIENTS = 100
CONCURRENCY = 100
TARGET_SINGLE = 4.0
MOONSHOT_SINGLE = 3.0
TARGET_CLIENTS = 3.0


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
    """Seconds for ``clients`` concurrent clients to submit-and-wait JOBS jobs in all."""
    jobs = JobManager(SQLiteStore(path), concurrency=CONCURRENCY, sweep_interval=None)
    jobs.register("noop", noop)
    async with jobs:

        async def client(count: int) -> None:
            for _ in range(count):
                job = await jobs.submit("noop")
                done = await jobs.wait(job.id)
                if done.status is not JobStatus.COMPLETED:
                    raise RuntimeError(f"job {job.id} ended {done.status}")

        start = _common.now()
        if clients == 1:
            await client(JOBS)
        else:
            async with anyio.create_task_group() as tg:
                for _ in range(clients):
                    tg.start_soon(client, JOBS // clients)
        return _common.now() - start


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=_common.BACKENDS, default="asyncio", help="anyio backend")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement (median taken)")
    parser.add_argument("--mode", choices=("both", "single", "clients"), default="both")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    _common.quiet_logs()
    _common.header(f"durable: {JOBS:,} no-op jobs on SQLiteStore, submit then wait", args.backend)
    modes = {"single": 1, "clients": CLIENTS}
    if args.mode != "both":
        modes = {args.mode: modes[args.mode]}
    floors: list[float] = []
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        for run in range(args.runs):
            floors.append(floor(base / f"floor{run}.db"))
            for mode, clients in modes.items():
                _common.fresh_heap()
                times[mode].append(
                    anyio.run(run_jobkit, base / f"{mode}{run}.db", clients, backend=args.backend)
                )
    floor_time = statistics.median(floors)
    _common.line(
        "floor",
        f"{floor_time:.3f} s  ({JOBS / floor_time:,.0f} jobs/s, 3 commits per job; "
        f"runs {', '.join(f'{t:.3f}' for t in floors)})",
    )
    for mode, clients in modes.items():
        elapsed = statistics.median(times[mode])
        ratio = elapsed / floor_time
        if clients == 1:
            label, target = (
                "1 client",
                f"target <= {TARGET_SINGLE:g}x: {_common.verdict(ratio <= TARGET_SINGLE)}",
            )
            target += f", moonshot <= {MOONSHOT_SINGLE:g}x: {_common.verdict(ratio <= MOONSHOT_SINGLE)}"
        else:
            label = f"{clients} clients"
            target = f"target <= {TARGET_CLIENTS:g}x: {_common.verdict(ratio <= TARGET_CLIENTS)}"
        _common.line(
            label,
            f"{elapsed:.3f} s  ({JOBS / elapsed:,.0f} jobs/s, {ratio:.2f}x the floor; {target}; "
            f"runs {', '.join(f'{t:.3f}' for t in times[mode])})",
        )


if __name__ == "__main__":
    main()
