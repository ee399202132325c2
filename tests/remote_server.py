"""A jobkit service for the client and remote CLI tests: a FastAPI app on uvicorn whose
actor comes from headers, with handlers a test can hold and release, and a proxy that cuts
connections."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Header

from jobkit import Actor, JobContext, JobManager
from jobkit.blobs import MemoryBlobStore
from jobkit.integrations.fastapi import install_error_handlers, job_router, lifespan
from jobkit.stores import MemoryStore
from web_handlers import serve_http

ADMIN = {"X-Actor": "ada", "X-Roles": "admin"}
USER = {"X-Actor": "bob"}
#: Released by a test (from any thread) to let a ``gated`` job finish.
GATES: dict[str, threading.Event] = {}


async def hello(ctx: JobContext, payload: Any) -> Any:
    await ctx.put_artifact("out/report.txt", b"hello report")
    await ctx.progress(0.5, "half way")
    return {"hello": payload}


async def boom(ctx: JobContext, payload: Any) -> None:
    raise RuntimeError("boom")


async def gated(ctx: JobContext, payload: Any) -> str:
    """Runs until its gate (``GATES[payload]``) is set or it is cancelled."""
    await ctx.progress(0.25, "waiting at the gate")
    gate = GATES[payload]
    async with anyio.create_task_group() as tg:

        async def released() -> None:
            await anyio.to_thread.run_sync(gate.wait, abandon_on_cancel=True)
            tg.cancel_scope.cancel()

        tg.start_soon(released)
        await ctx.token.wait()
        tg.cancel_scope.cancel()
    await ctx.checkpoint()
    return "released"


async def required_actor(
    x_actor: Annotated[str | None, Header()] = None,
    x_tenant: Annotated[str | None, Header()] = None,
    x_roles: Annotated[str | None, Header()] = None,
) -> Actor | None:
    """Who is asking, from headers; no X-Actor header: nobody signed in (401)."""
    if not x_actor:
        return None
    roles = frozenset(role.strip() for role in (x_roles or "").split(",") if role.strip())
    return Actor(x_actor, tenant=x_tenant or None, roles=roles)


@dataclass
class Server:
    url: str
    port: int
    manager: JobManager


def make_app(jobs: JobManager, *, started: bool = True) -> FastAPI:
    app = FastAPI(lifespan=lifespan(jobs)) if started else FastAPI()
    install_error_handlers(app)
    app.include_router(job_router(jobs, actor=required_actor), prefix="/api/v1")
    return app


@contextmanager
def serve_jobs() -> Iterator[Server]:
    """A server for a test module: handlers hello, boom, gated; kind "parked" is declared
    only (its jobs stay pending: nothing runs them)."""
    jobs = JobManager(MemoryStore(), MemoryBlobStore(), concurrency=4, sweep_interval=None)
    jobs.register("hello", hello)
    jobs.register("boom", boom)
    jobs.register("gated", gated)
    jobs.declare("parked")
    with serve_http(make_app(jobs)) as base:
        yield Server(f"{base}/api/v1", int(base.rsplit(":", 1)[1]), jobs)


# -- a proxy that can cut its connections ---------------------------------------------


class DroppingProxy:
    """A TCP proxy on 127.0.0.1 to ``port`` whose ``drop()`` cuts every open connection
    (as a load balancer or a network blip would); new connections pass as before."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> DroppingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.drop()
        self._thread.join(timeout=10)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            with self._lock:
                self.connections += 1
                self._open += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def drop(self) -> None:
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _flask_actor() -> Actor | None:
    """As :func:`required_actor`, for Flask: from the request's headers."""
    import flask

    headers = flask.request.headers
    actor = headers.get("X-Actor")
    if not actor:
        return None
    roles = frozenset(role.strip() for role in headers.get("X-Roles", "").split(",") if role.strip())
    return Actor(actor, tenant=headers.get("X-Tenant") or None, roles=roles)


@contextmanager
def serve_flask_jobs() -> Iterator[str]:
    """The same service as a Flask blueprint on werkzeug (a free local port): its base URL."""
    import flask
    from werkzeug.serving import make_server

    from jobkit import BlockingJobManager
    from jobkit.integrations.flask import job_blueprint

    jobs = BlockingJobManager(MemoryStore(), MemoryBlobStore(), concurrency=4, sweep_interval=None)
    jobs.register("hello", hello)
    jobs.register("boom", boom)
    jobs.register("gated", gated)
    jobs.declare("parked")
    app = flask.Flask(__name__)
    app.register_blueprint(job_blueprint(jobs, actor=_flask_actor, heartbeat=1.0), url_prefix="/api/v1")
    with jobs:
        http = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=http.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{http.server_port}/api/v1"
        finally:
            http.shutdown()
            thread.join(timeout=30)
            http.server_close()
            assert not thread.is_alive(), "werkzeug did not stop"
