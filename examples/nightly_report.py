"""A nightly report: a cron schedule in a time zone, retries with backoff, a delayed job.

What it shows, on the in-memory store and a fake clock (so three nights take a second):

1. ``jobs.schedule(..., cron="0 3 * * *", timezone="Europe/Berlin")``: a job at 03:00
   Berlin time every night, fired by the sweeper;
2. a handler registered with a ``Retry``: the data warehouse is unreachable for its first
   two attempts, so the job waits 60 s, then 120 s (``backoff * factor ** (n - 1)``) in
   ``scheduled`` between attempts, and the third attempt completes;
3. ``submit(..., delay=3600)``: a one-off job that is ``scheduled`` for an hour, then runs;
4. three nights pass while nothing sweeps: the schedule makes **one** job for the missed
   fire times, not three, and moves on to the next night;
5. ``jobs.counts()``: how many jobs are in each status.

Instead of waiting for 03:00, it moves a ``FakeClock`` (``JobManager(clock=...)``) and
calls ``await jobs.sweep()``, which promotes due jobs and fires due schedules at once
(a real deployment leaves that to the manager's timers). Needs ``jobkit[cron]``.

Run it with ``.venv/bin/python examples/nightly_report.py``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import structlog

from jobkit import EventStream, EventType, JobContext, JobManager, Retry
from jobkit.stores import MemoryStore
from jobkit.testing import FakeClock

# jobkit logs through structlog; keep its info and warning lines (a failed attempt is a
# warning with its traceback) out of the example's output.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))

BERLIN = ZoneInfo("Europe/Berlin")
clock = FakeClock(datetime(2030, 3, 14, 1, 58, tzinfo=UTC))  # 02:58 in Berlin
jobs = JobManager(MemoryStore(), concurrency=2, sweep_interval=None, clock=clock)
warehouse_calls = 0
FINISHED = (EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED)


def local(at: datetime | None) -> str:
    assert at is not None
    return at.astimezone(BERLIN).strftime("%a %d %b %H:%M:%S %Z")


@jobs.handler("report", retry=Retry(attempts=4, backoff=60, factor=2, jitter=0, on=(ConnectionError,)))
async def report(ctx: JobContext, payload: Any) -> dict[str, Any]:
    """Build a report from the warehouse, which does not answer the first two calls."""
    global warehouse_calls
    warehouse_calls += 1
    if warehouse_calls <= 2:
        raise ConnectionError("warehouse not reachable")
    return {"report": payload["report"], "rows": 1200 + warehouse_calls}


async def follow(events: EventStream, job_id: str) -> None:
    """Print the job's attempts until it finishes; move the clock to each retry's time."""
    async for event in events:
        if event.job_id != job_id:
            continue
        if event.type is EventType.STARTED:
            job = await jobs.get(job_id)
            print(f"    {local(event.at)}  attempt {job.attempts} started")
        elif event.type is EventType.SCHEDULED and event.data.get("error"):
            run_at = datetime.fromisoformat(event.data["run_at"])
            wait = (run_at - event.at).total_seconds()
            print(f"    {local(event.at)}  attempt {event.data['attempt'] - 1} failed: {event.data['error']}")
            print(f"                              scheduled: attempt {event.data['attempt']} in {wait:g} s")
            clock.advance(run_at - clock())
            await jobs.sweep()  # the timers would promote it at its time; this is at once
        elif event.type in FINISHED:
            job = await jobs.get(job_id)
            tries = f"{job.attempts} attempt{'s' if job.attempts != 1 else ''}"
            print(f"    {local(event.at)}  {job.status.value} after {tries}: {job.result}")
            return


async def newest_report() -> str:
    page = await jobs.list(kind="report", limit=1)
    return page.items[0].id


async def main() -> None:
    async with jobs, jobs.subscribe() as events:
        schedule = await jobs.schedule(
            "nightly", "report", {"report": "sales"}, cron="0 3 * * *", timezone="Europe/Berlin"
        )
        print(f"{local(clock())}  schedule {schedule.name!r} ({schedule.cron}, {schedule.timezone})")
        print(f"    next run: {local(schedule.next_run_at)} ({schedule.next_run_at:%H:%M} UTC)")

        print("\nnight 1: the clock reaches 03:00 in Berlin")
        clock.advance(schedule.next_run_at - clock())
        await jobs.sweep()
        nightly = await jobs.get(await newest_report())
        print(f"    fired job with labels {dict(nightly.labels)}")
        await follow(events, nightly.id)

        print("\na one-off backfill, submitted with delay=3600")
        backfill = await jobs.submit("report", {"report": "backfill"}, delay=3600)
        print(f"    {local(clock())}  {backfill.status.value}, runs at {local(backfill.run_at)}")
        clock.advance(3600)
        await jobs.sweep()
        await follow(events, backfill.id)

        print("\nthree nights pass while nothing runs (the clock jumps 3 days)")
        clock.advance(timedelta(days=3))
        await jobs.sweep()
        fired = [job for job in await jobs.list(kind="report") if job.labels.get("jobkit.schedule")]
        print(
            f"    the nightly schedule has made {len(fired)} jobs: 1 for night 1, 1 for the 3 missed nights"
        )
        await follow(events, fired[0].id)
        (schedule,) = await jobs.schedules()
        print(f"    next run: {local(schedule.next_run_at)}")

        counts = {status.value: n for status, n in (await jobs.counts()).items() if n}
        print(f"\njobs.counts() -> {counts}")


if __name__ == "__main__":
    anyio.run(main)
