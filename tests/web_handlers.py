"""Handlers and the test identity shared by the FastAPI, Flask and OpenAPI fuzz tests."""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import uvicorn
from fastapi import Header

from jobkit import Actor, BlockingJobManager, JobContext
from jobkit.integrations._http import AS_HOST
from jobkit.stores import SQLiteStore


def actor_from_headers(actor: str | None, tenant: str | None, roles: str | None) -> Any:
    """The test identity: X-Actor, X-Tenant and X-Roles (comma-separated); none = the host
    (explicitly, AS_HOST); ``X-Actor: -`` = nobody signed in."""
    if actor == "-":
        return None
    if not actor:
        return AS_HOST
    role_set = frozenset(role.strip() for role in (roles or "").split(",") if role.strip())
    return Actor(actor, tenant=tenant or None, roles=role_set)


async def header_actor(
    x_actor: Annotated[str | None, Header()] = None,
    x_tenant: Annotated[str | None, Header()] = None,
    x_roles: Annotated[str | None, Header()] = None,
) -> Any:
    """The FastAPI dependency for the test identity."""
    return actor_from_headers(x_actor, x_tenant, x_roles)


async def echo(ctx: JobContext, payload: Any) -> Any:
    """Writes the artifacts named in ``payload["artifacts"]`` and returns the payload."""
    if isinstance(payload, dict):
        for name, text in payload.get("artifacts", {}).items():
            await ctx.put_artifact(name, text.encode())
    return payload


async def steps(ctx: JobContext, payload: Any) -> str:
    await ctx.progress(0.5, "half way")
    return "done"


async def block(ctx: JobContext, payload: Any) -> None:
    """Runs until cancelled."""
    await ctx.token.wait()
    await ctx.checkpoint()


HANDLERS = {"echo": echo, "steps": steps, "block": block}


@contextmanager
def serve_http(app: Any) -> Iterator[str]:
    """``app`` (its lifespan on) served by uvicorn in a thread on 127.0.0.1 and a free port:
    yields ``http://127.0.0.1:PORT``; the server is stopped (and must stop) at the end."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections wait in the backlog until uvicorn accepts them
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning", loop="asyncio"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


# -- a web server in its own process, stopped by a signal while a client watches /events -----


class ServerProcess:
    """A server started by ``argv`` that prints ``port N`` (or a URL with the port) once it
    listens; its output is read by a thread, line by line, so a test can wait on it."""

    def __init__(
        self,
        argv: list[str],
        ready: str = r"port (\d+)",
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.output: list[str] = []
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        line = self.wait_for(ready)
        found = re.search(ready, line)
        assert found is not None
        self.port = int(found.group(1))

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 30) -> str:
        """The next output line matching ``pattern`` (the server's output is kept)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}; output: {self.output}") from None
            if line is None:
                raise AssertionError(f"the server exited before printing {pattern!r}: {self.output}")
            self.output.append(line)
            if re.search(pattern, line):
                return line

    def stop(self) -> None:
        """Kill the server if it still runs; collect the rest of its output."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        self._reader.join(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()
        while (line := self.lines.get_nowait() if not self.lines.empty() else None) is not None:
            self.output.append(line)


@dataclass
class Stopped:
    job_id: str
    stream_ended_after: float  # seconds from the signal to the end of the event stream
    exited_after: float  # seconds from the signal to the process's exit
    returncode: int


def stop_while_watching(
    server: ServerProcess, api: str, sig: int, job: tuple[str, Any] = ("block", None), timeout: float = 10
) -> Stopped:
    """Open ``api``/events, start a job and wait until it runs, send ``sig`` to the server,
    then wait for the stream to end and the process to exit (each within ``timeout``)."""
    headers = {"X-Requested-With": "tests"}
    with (
        httpx.Client(base_url=api, timeout=timeout, headers=headers) as client,
        client.stream("GET", "/events") as events,
    ):
        assert events.status_code == 200
        lines = events.iter_lines()
        next(lines)  # the first line arrives once the subscription is live
        response = client.post("/jobs", json={"kind": job[0], "payload": job[1]})
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        for line in lines:
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if event["job_id"] == job_id and event["type"] == "started":
                    break
        signalled = time.monotonic()
        server.process.send_signal(sig)
        for _ in lines:  # until the server ends the stream (a read timeout fails the test)
            pass
        stream_ended_after = time.monotonic() - signalled
    returncode = server.process.wait(timeout=timeout)
    return Stopped(job_id, stream_ended_after, time.monotonic() - signalled, returncode)


def status_in_store(database: Path, job_id: str) -> str:
    """The job's status as the SQLite store at ``database`` holds it (the server has exited)."""
    with BlockingJobManager(SQLiteStore(database), concurrency=0, sweep_interval=None) as jobs:
        return str(jobs.get(job_id).status)
