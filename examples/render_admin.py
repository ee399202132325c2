"""An admin manages a render queue: cancel a render that runs a real process, boost an urgent one.

A render farm runs one render at a time; each render is an external process (here a
stand-in that writes its pid and sleeps for a minute). What the team once did by hand
-- kill the process, clean the temp files, lock the queue to reorder it, log the admin
action -- is here:

- ``ctx.run_process``: on cancel the process gets SIGTERM (then SIGKILL after a grace);
- ``ctx.scratch``: a private temp directory removed when the job ends, however it ends;
- ``jobs.set_priority``: reorders the queue and returns the job's new position;
- an ``Authorizer`` making cancel admin-only too: a non-admin gets ``PermissionDenied``;
- ``jobs.subscribe``: the live event feed a UI would get over a WebSocket;
- ``jobs.audit``: who cancelled and boosted what.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import structlog

from jobkit import (
    Action,
    Actor,
    DefaultAuthorizer,
    EventStream,
    InvalidState,
    JobContext,
    JobEvent,
    JobManager,
    PermissionDenied,
)

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

# A stand-in for the real renderer: writes its pid (atomically), then "renders" for argv[2] seconds.
RENDERER = """
import os, sys, time
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(float(sys.argv[2]))
"""

admin_only = DefaultAuthorizer(admin_actions={*DefaultAuthorizer().admin_actions, Action.CANCEL})
jobs = JobManager(concurrency=1, authorizer=admin_only)
ada = Actor("ada", roles={"admin"})
ed = Actor("ed")  # an editor: may submit and watch, not cancel or reorder
names: dict[str, str] = {}


@jobs.handler("render")
async def render(ctx: JobContext, payload: Any) -> dict[str, Any]:
    workdir = ctx.scratch
    (workdir / "frames").mkdir()
    (workdir / "project.json").write_text(str(payload))
    pidfile = workdir / "render.pid"
    async with anyio.create_task_group() as tg:
        tg.start_soon(announce_pid, ctx, pidfile)
        argv = [sys.executable, "-c", RENDERER, pidfile, str(payload["seconds"])]
        await ctx.run_process(argv, cwd=workdir, terminate_grace=2)
        tg.cancel_scope.cancel()
    await ctx.put_artifact("output.mp4", f"<{payload['scene']} render>")
    return {"output": "output.mp4"}


async def announce_pid(ctx: JobContext, pidfile: Path) -> None:
    """Tell the UI which process renders, and where its temp files are."""
    path = anyio.Path(pidfile)
    while not await path.exists():  # noqa: ASYNC110 - the renderer only reports through this file
        await anyio.sleep(0.01)
    await ctx.progress(0.1, f"pid={await path.read_text()} scratch={ctx.scratch}")


def show(event: JobEvent) -> None:
    extra = {key: value for key, value in event.data.items() if value is not None}
    print(f"  ws> {event.type:<16} {names.get(event.job_id, '?'):<8} {extra or ''}")


async def follow(events: EventStream, until: str, *job_ids: str) -> dict[str, str]:
    """Print events until each of ``job_ids`` has an event of type ``until``; return its message."""
    waiting, seen = set(job_ids), {}
    async for event in events:
        show(event)
        if event.job_id in waiting and event.type == until:
            seen[event.job_id] = event.data.get("message") or ""
            waiting.discard(event.job_id)
            if not waiting:
                break
    return seen


async def main() -> None:
    async with jobs, jobs.subscribe(actor=ada) as events:
        trailer = await jobs.submit("render", {"scene": "trailer", "seconds": 60}, actor=ed)
        names[trailer.id] = "trailer"
        for scene in ("intro", "credits", "teaser"):
            job = await jobs.submit("render", {"scene": scene, "seconds": 0.1}, actor=ed)
            names[job.id] = scene
        teaser = job
        announced = await follow(events, "progress", trailer.id)
        info = dict(part.split("=", 1) for part in announced[trailer.id].split())
        pid, scratch = int(info["pid"]), anyio.Path(info["scratch"])
        files = sorted([path.name async for path in scratch.iterdir()])
        print(f"trailer is rendering in process {pid}; its temp files: {files}")

        queue = [(names[job_id], await jobs.position(job_id)) for job_id in names if job_id != trailer.id]
        print(f"\nThe queue: {queue}")
        try:
            await jobs.set_priority(teaser.id, 10, actor=ed)
        except PermissionDenied as exc:
            print(f"ed boosts the teaser   -> PermissionDenied: {exc}")
        boosted, position = await jobs.set_priority(teaser.id, 10, actor=ada)
        print(f"ada boosts the teaser  -> priority {boosted.priority}, new position {position}")
        try:
            await jobs.set_priority(trailer.id, 10, actor=ada)
        except InvalidState as exc:
            print(f"ada boosts the trailer -> InvalidState: {exc}")

        print("\nCancelling the running trailer render:")
        try:
            await jobs.cancel(trailer.id, actor=ed)
        except PermissionDenied as exc:
            print(f"ed cancels it  -> PermissionDenied: {exc}")
        await jobs.cancel(trailer.id, actor=ada, reason="wrong logo in the trailer")
        done = await jobs.wait(trailer.id, timeout=10)
        print(f"ada cancels it -> {done.status} ({done.cancel_reason})")
        try:
            os.kill(pid, 0)
            print(f"  process {pid} is STILL RUNNING")
        except ProcessLookupError:
            print(f"  process {pid} is gone")
        print(f"  temp files removed: {not await scratch.exists()}")

        print("\nThe live feed a UI gets (over a WebSocket, say); the boosted teaser runs first:")
        rest = [job_id for job_id in names if job_id != trailer.id]
        await follow(events, "completed", *rest)
        try:
            await jobs.cancel(teaser.id, actor=ada)
        except InvalidState as exc:
            print(f"ada cancels the finished teaser -> InvalidState: {exc}")

        print("\nThe audit log (oldest first):")
        for record in reversed(await jobs.audit(actor=ada)):
            what = f"{record.actor_id} {record.action} {names[record.job_id]}"
            print(f"  {record.at:%H:%M:%S} {what}: {dict(record.details)}")


if __name__ == "__main__":
    anyio.run(main)
