"""Manage the jobs of a running web service from another program, over its REST API.

What it shows, with a small FastAPI service started in this process on 127.0.0.1:

1. ``JobClient(url, headers=...)``: the management methods of ``JobManager`` over HTTP;
   the service decides who is asking from the request (here a bearer token);
2. ``subscribe()`` (the service's event stream) and ``wait()``, which follows the stream
   instead of polling;
3. the same errors as the manager's: no token is ``Unauthenticated``, a non-admin pausing
   a kind is ``PermissionDenied``, deleting a running job is ``InvalidState``;
4. ``resolve()`` of a short id, as the console and the CLI show them;
5. ``BlockingJobClient``: the same methods for synchronous code.

Needs ``jobkit[client]`` and ``jobkit[fastapi]``. Run it with
``.venv/bin/python examples/remote_client.py``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import anyio
import uvicorn
from fastapi import FastAPI, Header

from jobkit import Actor, InvalidState, JobContext, JobManager, PermissionDenied, Unauthenticated
from jobkit.client import BlockingJobClient, JobClient
from jobkit.integrations.fastapi import install_error_handlers, job_router, lifespan

# -- the service (normally another process, on another host) --------------------------------

TOKENS = {"secret-admin": Actor("ada", roles=frozenset({"admin"})), "secret-user": Actor("bob")}
release = threading.Event()


async def report(ctx: JobContext, payload: Any) -> dict[str, Any]:
    await ctx.progress(0.5, "half way")
    await anyio.to_thread.run_sync(release.wait)  # until the example lets it finish
    await ctx.put_artifact("report.txt", f"report for {payload['month']}".encode())
    return {"rows": 42}


async def current_actor(authorization: Annotated[str | None, Header()] = None) -> Actor | None:
    token = (authorization or "").removeprefix("Bearer ")
    return TOKENS.get(token)  # None: nobody signed in, answered with 401


jobs = JobManager()
jobs.register("report", report)
app = FastAPI(lifespan=lifespan(jobs))
install_error_handlers(app)
app.include_router(job_router(jobs, actor=current_actor), prefix="/api/v1")


@contextmanager
def running_service() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/api/v1"
    finally:
        release.set()
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


# -- the client -----------------------------------------------------------------------------


async def manage(url: str) -> str:
    admin = {"Authorization": "Bearer secret-admin"}
    async with JobClient(url, headers=admin) as client:
        print("signed in as:", (await client.me()))
        async with client.subscribe() as events:
            job = await client.submit("report", {"month": "2030-01"})
            print(f"submitted {job.id[:8]}: {job.status.value}")
            async for event in events:
                if event.job_id == job.id and event.type == "progress":
                    print(f"event: progress {event.data['progress']:.0%} {event.data['message']}")
                    break
        print("short id", job.id[:8], "resolves to", await client.resolve(job.id[:8]))
        try:
            await client.delete(job.id)
        except InvalidState as exc:
            print("delete while running: InvalidState:", exc)
        async with JobClient(url) as anonymous:
            try:
                await anonymous.list()
            except Unauthenticated as exc:
                print("no token: Unauthenticated:", exc)
        async with JobClient(url, headers={"Authorization": "Bearer secret-user"}) as user:
            try:
                await user.pause("report")
            except PermissionDenied as exc:
                print("a non-admin pausing a kind: PermissionDenied:", exc)
        release.set()
        done = await client.wait(job.id, timeout=30)
        print(f"wait: {done.status.value}, result {done.result}")
        return job.id


def main() -> None:
    with running_service() as url:
        job_id = anyio.run(manage, url)
        with BlockingJobClient(url, headers={"Authorization": "Bearer secret-admin"}) as client:
            names = client.artifacts(job_id)
            print("blocking client: artifacts", names, "->", client.read_artifact(job_id, names[0]).decode())
            print("blocking client: counts", {s.value: n for s, n in client.counts().items() if n})


if __name__ == "__main__":
    main()
