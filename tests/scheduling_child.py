"""A process for the multi-process scheduling tests (run as a script, not collected).

usage: scheduling_child.py STORE_URL submit KEY | sweep ISO_NOW
Opens a manager on the store, prints "ready", waits for a line on stdin (so every process
starts its write at the same moment), then either submits one "work" job with idempotency
key KEY and prints its id, or sweeps with the clock at ISO_NOW and prints how many jobs
its schedules fired.
"""

from __future__ import annotations

import sys
from datetime import datetime

import anyio
import structlog

from jobkit import JobManager
from jobkit.stores import open_store


async def main(url: str, mode: str, arg: str) -> None:
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    now = datetime.fromisoformat(arg) if mode == "sweep" else None
    jobs = JobManager(
        open_store(url), concurrency=0, sweep_interval=None, clock=(lambda: now) if now else None
    )
    jobs.declare("work")
    async with jobs:
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        if mode == "submit":
            print((await jobs.submit("work", {"same": True}, idempotency_key=arg)).id, flush=True)
        else:
            print((await jobs.sweep()).fired, flush=True)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4])
