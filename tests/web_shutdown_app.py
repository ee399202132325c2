"""A web app in its own process, for the shutdown tests: ``python web_shutdown_app.py
fastapi|flask DATABASE``. It serves the job routes (the trusted host) at /api/v1 on
127.0.0.1 and a free port over a SQLite store, prints ``port N`` once it listens, and runs
``block`` jobs (they run until cancelled)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from jobkit import BlockingJobManager, JobManager
from jobkit.stores import SQLiteStore
from web_handlers import block


def serve_fastapi(database: Path) -> None:
    import uvicorn
    from fastapi import FastAPI

    from jobkit.integrations.fastapi import install_error_handlers, job_router, lifespan

    jobs = JobManager(SQLiteStore(database), sweep_interval=None)
    jobs.register("block", block)
    app = FastAPI(lifespan=lifespan(jobs))
    install_error_handlers(app)
    app.include_router(job_router(jobs), prefix="/api/v1")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # connections wait in the backlog until uvicorn accepts them
    print(f"port {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    print("stopped", flush=True)


def serve_flask(database: Path) -> None:
    import flask
    from werkzeug.serving import make_server

    from jobkit.integrations.flask import init_app

    jobs = BlockingJobManager(SQLiteStore(database), sweep_interval=None)
    jobs.register("block", block)
    app = flask.Flask(__name__)
    init_app(app, jobs)
    server = make_server("127.0.0.1", 0, app, threaded=True)  # what `flask run` serves with
    print(f"port {server.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        print("stopped", flush=True)


if __name__ == "__main__":
    framework, database = sys.argv[1], Path(sys.argv[2])
    {"fastapi": serve_fastapi, "flask": serve_flask}[framework](database)
