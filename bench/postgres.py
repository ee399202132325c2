"""PostgresStore: throughput in one process and in three, and cross-process cancel latency.

Starts its own throwaway PostgreSQL cluster (``jobkit.testing._pgserver``: fsync off, the
same settings as the tests) and measures, in turns:

- **floor**: raw psycopg on one connection doing, per job, an insert, a
  ``FOR UPDATE SKIP LOCKED`` claim and a completion, each its own commit (3 commits per job),
  one job after the other;
- **1 process**: ``JobManager(PostgresStore(...), concurrency=10)``; 10 clients submit
  5,000 no-op jobs in all, timed until the last one completed;
- **3 processes**: the same 5,000 jobs submitted here (``concurrency=0``) and run by three
  worker processes (this script with ``--worker``, ``concurrency=10`` each), timed until
  the last one completed;
- **cancel**: process A cancels a job running in process B; latency is B's handler seeing
  the cancel minus A's ``cancel()`` call (``time.monotonic()``, one clock for both).

- **leases**: 50 renewals of 1,000 running jobs: the share of HOT updates (no index
  touched, thanks to fillfactor 80 and no index on ``lease_until``).

Targets: 1 process >= 2x the floor's jobs/s (moonshot >= 3x); cancel p95 <= 10 ms.
The floor is C-speed psycopg on trivial statements; it moves a lot with the machine's load
(4,500-8,800 jobs/s measured here), so compare within one run.

    .venv/bin/python bench/postgres.py [--backend asyncio|trio] [--runs N] [--samples N]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

import _common
import anyio
import psycopg
from anyio.streams.buffered import BufferedByteReceiveStream

from jobkit import JobCancelled, JobContext, JobManager
from jobkit.stores.postgres import PostgresStore
from jobkit.testing._pgserver import start_cluster

JOBS = 5_000
CONCURRENCY = 10
CLIENTS = 10
WORKERS = 3
TARGET = 2.0
MOONSHOT = 3.0
TARGET_P95_MS = 10.0


async def noop(ctx: JobContext, payload: Any) -> None:
    """No work: only the bookkeeping is measured."""


def floor(dsn: str, run: int) -> float:
    table = f"floor_jobs_{run}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, status text NOT NULL, payload text)")
        conn.execute(f"CREATE INDEX ON {table} (id) WHERE status = 'pending'")
        start = _common.now()
        for _ in range(JOBS):
            conn.execute(f"INSERT INTO {table} (status, payload) VALUES ('pending', '{{}}')")
            row = conn.execute(
                f"UPDATE {table} SET status = 'running' WHERE id = (SELECT id FROM {table} "
                "WHERE status = 'pending' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id"
            ).fetchone()
            assert row is not None
            conn.execute(f"UPDATE {table} SET status = 'completed' WHERE id = %s", (row[0],))
        return _common.now() - start


async def one_process(dsn: str, schema: str) -> float:
    jobs = JobManager(PostgresStore(dsn, schema=schema), concurrency=CONCURRENCY, sweep_interval=None)
    left = JOBS
    all_done = anyio.Event()

    async def counted(ctx: JobContext, payload: Any) -> None:
        nonlocal left
        left -= 1
        if left == 0:
            all_done.set()

    jobs.register("noop", counted)
    async with jobs:
        ids: list[str] = []

        async def client(count: int) -> None:
            for _ in range(count):
                ids.append((await jobs.submit("noop")).id)

        start = _common.now()
        async with anyio.create_task_group() as tg:
            for _ in range(CLIENTS):
                tg.start_soon(client, JOBS // CLIENTS)
        await all_done.wait()
        # The last handlers returned; their completions are being written: wait for them too.
        for job_id in ids[-CONCURRENCY * 2 :]:
            await jobs.wait(job_id)
        return _common.now() - start


def count_done(dsn: str, schema: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM \"{schema}\".jobs WHERE status = 'completed'").fetchone()
        return int(row[0]) if row else 0


async def spawn(*args: str) -> tuple[Any, BufferedByteReceiveStream]:
    process = await anyio.open_process(
        [sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    return process, BufferedByteReceiveStream(process.stdout)


async def read_line(out: BufferedByteReceiveStream) -> str:
    with anyio.fail_after(60):
        return (await out.receive_until(b"\n", 65536)).decode()


async def stop(process: Any) -> None:
    with anyio.CancelScope(shield=True):
        await process.stdin.aclose()
        with anyio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def three_processes(dsn: str, schema: str, backend: str) -> float:
    front = JobManager(PostgresStore(dsn, schema=schema), concurrency=0, sweep_interval=None)
    front.declare("noop")
    async with front:
        workers = [await spawn("--worker", "run", backend, dsn, schema) for _ in range(WORKERS)]
        try:
            for _, out in workers:
                assert await read_line(out) == "ready"

            async def client(count: int) -> None:
                for _ in range(count):
                    await front.submit("noop")

            start = _common.now()
            async with anyio.create_task_group() as tg:
                for _ in range(CLIENTS):
                    tg.start_soon(client, JOBS // CLIENTS)
            # Other processes write the completions: poll the database (as an operator would).
            while await anyio.to_thread.run_sync(count_done, dsn, schema) < JOBS:  # noqa: ASYNC110
                await anyio.sleep(0.005)
            return _common.now() - start
        finally:
            for process, _ in workers:
                await stop(process)


async def cancel_latency(dsn: str, schema: str, backend: str, samples: int) -> list[float]:
    front = JobManager(PostgresStore(dsn, schema=schema), concurrency=0, sweep_interval=None)
    front.declare("hang")
    latencies: list[float] = []
    async with front:
        process, out = await spawn("--worker", "hang", backend, dsn, schema)
        try:
            assert await read_line(out) == "ready"
            for _ in range(samples):
                job = await front.submit("hang")
                word, job_id, _ = (await read_line(out)).split()
                assert (word, job_id) == ("started", job.id)
                await anyio.sleep(0.01)
                asked = time.monotonic()
                await front.cancel(job.id)
                word, job_id, at = (await read_line(out)).split()
                assert (word, job_id) == ("stopped", job.id)
                latencies.append(float(at) - asked)
        finally:
            await stop(process)
    return latencies


async def lease_renewals(dsn: str, schema: str) -> tuple[float, float]:
    """1,000 running jobs (with 5,000 finished ones beside them) renewed 50 times: the share
    of HOT updates, and the table's size afterwards (MB)."""
    from datetime import UTC, datetime, timedelta

    from jobkit.testing._store_suite import finished, make_job

    store = PostgresStore(dsn, schema=schema)
    await store.open()
    now = datetime.now(UTC)
    for _ in range(5):
        async with anyio.create_task_group() as tg:
            for _ in range(1000):
                tg.start_soon(store.insert, finished(make_job(), now))
    async with anyio.create_task_group() as tg:
        for _ in range(1000):
            tg.start_soon(store.insert, make_job())
    running = await store.claim_many(
        now=now, worker_id="w", lease_until=now + timedelta(seconds=60), kinds=None, limit=1000
    )
    ids = [job.id for job in running]
    for n in range(50):
        await store.renew_leases("w", ids, now + timedelta(seconds=61 + n))
    await store.close()  # its sessions end: their statistics reach the server

    def stats() -> tuple[float, float]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT n_tup_upd, n_tup_hot_upd, pg_total_relation_size(relid) FROM pg_stat_user_tables "
                "WHERE schemaname = %s AND relname = 'jobs'",
                (schema,),
            ).fetchone()
        assert row is not None
        return row[1] / max(1, row[0]) * 100, row[2] / 1e6

    for _ in range(100):  # the statistics of ended sessions arrive shortly after
        hot, size = await anyio.to_thread.run_sync(stats)
        if hot:
            break
        await anyio.sleep(0.05)
    return hot, size


# -- the worker process ----------------------------------------------------------------


async def worker(mode: str, dsn: str, schema: str) -> None:
    jobs = JobManager(PostgresStore(dsn, schema=schema), concurrency=CONCURRENCY, sweep_interval=None)
    jobs.register("noop", noop)

    @jobs.handler("hang")
    async def hang(ctx: JobContext, payload: Any) -> None:
        print("started", ctx.job.id, time.monotonic(), flush=True)
        try:
            await ctx.token.wait()
            await ctx.checkpoint()
        except JobCancelled:
            print("stopped", ctx.job.id, time.monotonic(), flush=True)
            raise

    async with jobs:
        print("ready", flush=True)
        await anyio.wrap_file(sys.stdin).read()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=_common.BACKENDS, default="asyncio", help="anyio backend")
    parser.add_argument("--runs", type=int, default=3, help="runs of each throughput measurement (median)")
    parser.add_argument("--samples", type=int, default=200, help="cancel latency samples")
    parser.add_argument(
        "--worker", nargs=4, metavar=("MODE", "BACKEND", "DSN", "SCHEMA"), help=argparse.SUPPRESS
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    _common.quiet_logs()
    if args.worker:
        mode, backend, dsn, schema = args.worker
        anyio.run(worker, mode, dsn, schema, backend=backend)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the cluster on the way out
    _common.header(f"postgres: {JOBS:,} no-op jobs on PostgresStore, concurrency {CONCURRENCY}", args.backend)
    cluster = start_cluster()
    try:
        dsn = cluster.dsn
        floors, singles, triples = [], [], []
        for run in range(args.runs):
            floors.append(floor(dsn, run))
            _common.fresh_heap()
            singles.append(anyio.run(one_process, dsn, f"one_{run}", backend=args.backend))
            triples.append(
                anyio.run(three_processes, dsn, f"three_{run}", args.backend, backend=args.backend)
            )
        latencies = anyio.run(cancel_latency, dsn, "cancel", args.backend, args.samples, backend=args.backend)
        hot, size = anyio.run(lease_renewals, dsn, "leases", backend=args.backend)
    finally:
        cluster.stop()
    floor_rate = JOBS / statistics.median(floors)
    _common.line(
        "floor",
        f"{floor_rate:,.0f} jobs/s (raw psycopg, insert + SKIP LOCKED claim + complete, 3 commits per job; "
        f"runs {', '.join(f'{t:.2f}' for t in floors)} s)",
    )
    for label, times in (("1 process", singles), (f"{WORKERS} procs", triples)):
        rate = JOBS / statistics.median(times)
        ratio = rate / floor_rate
        target = ""
        if label == "1 process":
            target = (
                f"; target >= {TARGET:g}x: {_common.verdict(ratio >= TARGET)}, "
                f"moonshot >= {MOONSHOT:g}x: {_common.verdict(ratio >= MOONSHOT)}"
            )
        _common.line(
            label,
            f"{rate:,.0f} jobs/s ({ratio:.2f}x the floor{target}; "
            f"runs {', '.join(f'{t:.2f}' for t in times)} s)",
        )
    ms = [v * 1000 for v in latencies]
    p95 = _common.percentile(ms, 95)
    _common.line(
        "cancel",
        f"p50 {_common.percentile(ms, 50):.1f} ms, p95 {p95:.1f} ms, max {max(ms):.1f} ms over {len(ms)} "
        f"(A cancels, B's handler sees it; target p95 <= {TARGET_P95_MS:g} ms: "
        f"{_common.verdict(p95 <= TARGET_P95_MS)})",
    )
    _common.line(
        "leases",
        f"{hot:.0f} % of 50,000 lease renewals were HOT updates; jobs table {size:.1f} MB "
        "(1,000 running + 5,000 finished jobs)",
    )


if __name__ == "__main__":
    main()
