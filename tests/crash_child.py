"""Processes for the crash tests in test_crash.py (run as a script, not collected).

usage: crash_child.py ROLE DB BLOBS [ARG]

Each role prints one line when it reaches the point the test waits for, and most then
block until the test writes a line to their stdin or kills them:

- ``delete JOB_ID...``: prints ``ready``; on each line, deletes the next job and prints
  ``deleted`` or ``not found``.
- ``delete-stuck JOB_ID PHASE``: deletes the job, its blob store stopping for good at
  PHASE (``counted``: after listing the artifacts, before the record goes; ``half``:
  half the artifacts deleted, after the record went); prints the phase there.
- ``put KEY``: writes a blob and stops for good between the temporary file and its
  rename; prints ``temp written``.
- ``delete-prefix PREFIX``: deletes a prefix and stops for good half way; prints ``half``.
- ``run KINDS``: a worker that runs only KINDS (comma-separated), appending
  ``<job id> <kind> <KINDS>`` lines to DB.runs; prints ``running``; stops on a line.
- ``late-writer``: a worker for kind ``slow``: prints ``started <id>``, then on a line
  tries ``put_artifact`` and prints ``written`` or the exception's name.
- ``hang``: a worker for kind ``hang`` whose job never ends; prints ``started <id>``.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import anyio

from jobkit import JobContext, JobManager, JobNotFound
from jobkit.blobs import FileBlobStore
from jobkit.stores import SQLiteStore

FOREVER = threading.Event()  # never set: a thread that waits on it stops for good


def say(line: str) -> None:
    print(line, flush=True)


async def read_line() -> str:
    return await anyio.to_thread.run_sync(sys.stdin.readline)


class StuckBlobs(FileBlobStore):
    """A FileBlobStore that stops for good at one phase of a job's delete."""

    def __init__(self, root: str, phase: str) -> None:
        super().__init__(root)
        self.phase = phase

    async def list(self, prefix: str) -> list[str]:
        keys = await super().list(prefix)
        if self.phase == "counted":
            say("counted")
            await anyio.sleep_forever()
        return keys

    async def delete_prefix(self, prefix: str) -> int:
        keys = await super().list(prefix)
        for key in keys[: len(keys) // 2]:
            await self.delete(key)
        say("half")
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


async def delete(db: str, blobs: str, job_ids: list[str], phase: str | None = None) -> None:
    store = StuckBlobs(blobs, phase) if phase else FileBlobStore(blobs)
    jobs = JobManager(SQLiteStore(db), store, concurrency=0, sweep_interval=None)
    async with jobs:
        say("ready")
        for job_id in job_ids:
            if phase is None:
                await read_line()
            try:
                await jobs.delete(job_id)
            except JobNotFound:
                say("not found")
            else:
                say("deleted")


def put(blobs: str, key: str) -> None:
    def stuck_replace(src: Any, dst: Any) -> None:
        say("temp written")
        FOREVER.wait()

    os.replace = stuck_replace  # the crash point: between the temp file and its rename
    anyio.run(FileBlobStore(blobs).put, key, b"x" * 100_000)


def delete_prefix(blobs: str, prefix: str) -> None:
    total = len(anyio.run(FileBlobStore(blobs).list, prefix))
    unlink, done = os.unlink, [0]

    def counting_unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        unlink(path, *args, **kwargs)
        done[0] += 1
        if done[0] == total // 2:
            say("half")
            FOREVER.wait()

    os.unlink = counting_unlink  # the crash point: half the files gone
    anyio.run(FileBlobStore(blobs).delete_prefix, prefix)


async def run(db: str, blobs: str, kinds: str) -> None:
    jobs = JobManager(
        SQLiteStore(db), FileBlobStore(blobs), concurrency=4, sweep_interval=None, poll_interval=0.05
    )
    log = Path(db + ".runs").open("a")  # noqa: SIM115 - closed below
    mine = kinds.split(",")

    async def record(ctx: JobContext, payload: Any) -> None:
        log.write(f"{ctx.job.id} {ctx.job.kind} {kinds}\n")
        log.flush()

    for kind in mine:
        jobs.register(kind, record)
    async with jobs:
        say("running")
        await read_line()  # the test says when every job has finished
    log.close()


async def late_writer(db: str, blobs: str) -> None:
    jobs = JobManager(
        SQLiteStore(db), FileBlobStore(blobs), concurrency=1, sweep_interval=None, lease_duration=60
    )

    @jobs.handler("slow")
    async def slow(ctx: JobContext, payload: Any) -> None:
        say(f"started {ctx.job.id}")
        await read_line()
        try:
            await ctx.put_artifact("late.txt", b"orphan?")
        except Exception as exc:
            say(type(exc).__name__)
            raise
        say("written")

    async with jobs:
        await anyio.sleep_forever()


async def hang(db: str, blobs: str) -> None:
    jobs = JobManager(SQLiteStore(db), FileBlobStore(blobs), concurrency=1, sweep_interval=None)

    @jobs.handler("hang")
    async def never_ends(ctx: JobContext, payload: Any) -> None:
        say(f"started {ctx.job.id}")
        await anyio.sleep_forever()

    async with jobs:
        await anyio.sleep_forever()


def main(role: str, db: str, blobs: str, *args: str) -> None:
    if role == "delete":
        anyio.run(delete, db, blobs, list(args))
    elif role == "delete-stuck":
        anyio.run(delete, db, blobs, [args[0]], args[1])
    elif role == "put":
        put(blobs, args[0])
    elif role == "delete-prefix":
        delete_prefix(blobs, args[0])
    elif role == "run":
        anyio.run(run, db, blobs, args[0])
    elif role == "late-writer":
        anyio.run(late_writer, db, blobs)
    elif role == "hang":
        anyio.run(hang, db, blobs)
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
