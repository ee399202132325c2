"""A worker process for the multi-process PostgreSQL tests (run as a script, not collected).

usage: postgres_worker.py MODE BACKEND DSN SCHEMA [OUT_FILE]

- ``drain``: run "mark" jobs (append the job id to OUT_FILE) until no job is pending or
  running, then exit;
- ``serve``: print "ready" once started, then run "hang" jobs (print "started <id>
  <attempt>", checkpoint until cancelled, print "stopped <id> <reason>") and "mark" jobs,
  until stdin closes. Prints "peers" once another process listens for events. poll_interval
  is 30 s: whatever happens sooner came through LISTEN/NOTIFY. LEASE (seconds) and SWEEP
  (seconds, or unset: no sweeper) come from the environment;
- ``sweep``: print "ready", wait for a line on stdin, sweep once with the sweeper's
  advisory lock disabled (a forced double sweep), print the report as JSON, exit;
- ``insert``: print "ready", wait for a line on stdin, then insert at once one job for each
  of OUT_FILE (a number) idempotency keys (tenant "t" for even ones, no tenant for odd
  ones), print ``{key: [id answered, stored here]}`` as JSON, exit.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import attrs
import structlog

from jobkit import JobCancelled, JobContext, JobManager, JobStatus
from jobkit._records import Job
from jobkit.stores.postgres import PostgresStore


class UnlockedStore(PostgresStore):
    """Every process may sweep at once: correctness must not depend on the lock."""

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        yield True


def say(*words: object) -> None:
    print(*words, flush=True)


async def drain(dsn: str, schema: str, out: str) -> None:
    jobs = JobManager(
        PostgresStore(dsn, schema=schema), concurrency=8, sweep_interval=None, poll_interval=0.2
    )
    marks = Path(out).open("a")  # noqa: SIM115 - closed below, shared by handlers

    @jobs.handler("mark")
    async def mark(ctx: JobContext, payload: Any) -> None:
        marks.write(ctx.job.id + "\n")
        marks.flush()

    async with jobs:
        while True:
            page = await jobs.list(status=["pending", "running", "cancelling"], limit=1)
            if not page.items:
                break
            await anyio.sleep(0.1)
    marks.close()


async def serve(dsn: str, schema: str) -> None:
    sweep = os.environ.get("SWEEP")
    jobs = JobManager(
        PostgresStore(dsn, schema=schema),
        concurrency=4,
        poll_interval=30.0,
        lease_duration=float(os.environ.get("LEASE", "60")),
        sweep_interval=float(sweep) if sweep else None,
    )

    @jobs.handler("hang")
    async def hang(ctx: JobContext, payload: Any) -> None:
        say("started", ctx.job.id, ctx.job.attempts)
        try:
            while True:
                await ctx.checkpoint()
                await anyio.sleep(0.005)
        except JobCancelled as exc:
            say("stopped", ctx.job.id, exc.reason)
            raise

    @jobs.handler("mark")
    async def mark(ctx: JobContext, payload: Any) -> None:
        pass

    async def peers() -> None:
        while not jobs._notifier.wants_events:
            await anyio.sleep(0.01)
        say("peers")

    async with jobs, anyio.create_task_group() as tg:
        tg.start_soon(peers)
        say("ready")
        await anyio.wrap_file(sys.stdin).read()  # until stdin closes
        tg.cancel_scope.cancel()


async def sweep_once(dsn: str, schema: str) -> None:
    jobs = JobManager(UnlockedStore(dsn, schema=schema), concurrency=0, sweep_interval=None)
    async with jobs:
        say("ready")
        await anyio.wrap_file(sys.stdin).readline()
        report = await jobs.sweep()
        say(json.dumps(attrs.asdict(report)))


async def insert_keys(dsn: str, schema: str, count: int) -> None:
    store = PostgresStore(dsn, schema=schema)
    await store.open()
    answers: dict[str, list[object]] = {}

    async def insert(n: int) -> None:
        job = Job(
            id=uuid.uuid4().hex,
            kind="mark",
            status=JobStatus.PENDING,
            created_at=datetime.now(UTC),
            tenant="t" if n % 2 == 0 else None,
            idempotency_key=f"key-{n}",
        )
        holder = await store.insert(job)
        answers[f"key-{n}"] = [job.id if holder is None else holder.id, holder is None]

    try:
        say("ready")
        await anyio.wrap_file(sys.stdin).readline()
        async with anyio.create_task_group() as tg:
            for n in range(count):
                tg.start_soon(insert, n)
        say(json.dumps(answers))
    finally:
        await store.close()


def main() -> None:
    mode, backend, dsn, schema, *rest = sys.argv[1:]
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    if mode == "drain":
        anyio.run(drain, dsn, schema, rest[0], backend=backend)
    elif mode == "serve":
        anyio.run(serve, dsn, schema, backend=backend)
    elif mode == "insert":
        anyio.run(insert_keys, dsn, schema, int(rest[0]), backend=backend)
    else:
        anyio.run(sweep_once, dsn, schema, backend=backend)


if __name__ == "__main__":
    main()
