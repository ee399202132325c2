"""Property-based run of the FastAPI router against its own OpenAPI schema (schemathesis).

Every operation but the endless ``GET /events`` stream gets generated requests, valid
and invalid: no response may be a server error, and every response must be documented
(status code, content type, body schema) by the schema.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck, settings

from jobkit import JobContext, JobManager
from jobkit.integrations.fastapi import install_error_handlers, job_router, lifespan
from web_handlers import header_actor

API = "/api/v1"
MAX_EXAMPLES = 100
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
]


async def echo(ctx: JobContext, payload: Any) -> Any:
    await ctx.progress(0.5, "half way")
    await ctx.put_artifact("out/result.json", b"{}")
    return payload


def build_app() -> FastAPI:
    jobs = JobManager(sweep_interval=None, concurrency=2)
    jobs.register("echo", echo)
    app = FastAPI(lifespan=lifespan(jobs))
    install_error_handlers(app)
    app.include_router(job_router(jobs, actor=header_actor), prefix=API)
    return app


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[FastAPI, str]]:
    """The app served by uvicorn on a free local port (its manager tied to the lifespan)."""
    app = build_app()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections wait in the backlog until uvicorn accepts them
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning", loop="asyncio"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


def seed(base_url: str) -> dict[str, str]:
    """A few real jobs, so generated requests also reach existing jobs and artifacts."""
    with httpx.Client(base_url=base_url + API, timeout=10) as client:
        with client.stream("GET", "/events") as events:
            lines = events.iter_lines()
            next(lines)  # the opening frame: the subscription is live
            done = client.post(
                "/jobs", json={"kind": "echo", "payload": {"n": 1}, "labels": {"a": "b"}}
            ).json()
            tenant = client.post(
                "/jobs", json={"kind": "echo"}, headers={"X-Actor": "a", "X-Tenant": "t"}
            ).json()
            finished = 0
            for line in lines:
                finished += line.startswith("data:") and '"type":"completed"' in line
                if finished == 2:
                    break
        pending = client.post("/jobs", json={"kind": "echo", "priority": -5, "ttl": 5, "timeout": 9}).json()
        client.post(f"/jobs/{pending['id']}/cancel", json={"reason": "seeded"})
    return {"completed": done["id"], "tenant": tenant["id"], "cancelled": pending["id"]}


#: The example job id in the fuzzed schema, replaced by a real job's id in each request.
SEEDED = "seeded-job"


def fuzzed_schema() -> Any:
    """The app's schema, with examples pointing at the seeded jobs (for the examples phase)."""
    document = build_app().openapi()
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "job_id":
                    parameter["example"] = SEEDED
                elif parameter["name"] == "name":
                    parameter["example"] = "out/result.json"
    document["components"]["schemas"]["SubmitJob"]["properties"]["kind"]["examples"] = ["echo"]
    schema = schemathesis.openapi.from_dict(document)
    schema.config.generation.update(max_examples=MAX_EXAMPLES, database="none")
    schema.config.checks.update(included_check_names=CHECKS)
    return schema.exclude(path=f"{API}/events")


@pytest.fixture(scope="module")
def seeded(server: tuple[FastAPI, str]) -> dict[str, str]:
    return seed(server[1])


schema = fuzzed_schema()


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_every_response_documented(
    case: schemathesis.Case, server: tuple[FastAPI, str], seeded: dict[str, str]
) -> None:
    """Generated requests never get a 5xx, and every response matches the schema."""
    if case.path_parameters and case.path_parameters.get("job_id") == SEEDED:
        case.path_parameters["job_id"] = seeded["completed"]
    case.call_and_validate(base_url=server[1])


def test_events_is_left_out_of_the_fuzzing() -> None:
    """The event stream never ends, so it is the one operation not fuzzed."""
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert f"GET {API}/events" not in labels
    assert f"GET {API}/jobs/{{job_id}}" in labels
    assert len(labels) == 10
