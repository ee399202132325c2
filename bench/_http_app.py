"""The app bench/http.py serves: jobkit's router and a bare route returning the same JSON.

Run by bench/http.py in its own process: ``python _http_app.py PORT``.
"""

from __future__ import annotations

import sys

# bench/http.py would shadow the standard library's `http`: import it with this folder
# off the path first (see bench/http.py).
_HERE = sys.path.pop(0)
import http.client  # noqa: E402, F401

sys.path.insert(0, _HERE)

from typing import Any  # noqa: E402

import _common  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402

from jobkit import JobContext, JobManager  # noqa: E402
from jobkit.integrations.fastapi import install_error_handlers, job_router, lifespan  # noqa: E402


async def echo(ctx: JobContext, payload: Any) -> Any:
    return payload


def make_app() -> FastAPI:
    jobs = JobManager(sweep_interval=None)
    jobs.register("echo", echo)
    app = FastAPI(lifespan=lifespan(jobs))
    install_error_handlers(app)
    app.include_router(job_router(jobs), prefix="/api/v1")
    cache: dict[str, Any] = {}

    @app.put("/bare/cache")
    async def remember(body: dict[str, Any]) -> dict[str, bool]:
        cache["json"] = body
        return {"ok": True}

    @app.get("/bare/jobs/{job_id}")
    async def bare(job_id: str) -> JSONResponse:
        return JSONResponse(cache["json"])

    return app


if __name__ == "__main__":
    _common.quiet_logs()
    uvicorn.run(make_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
