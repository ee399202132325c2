"""Property-based run of the FastAPI router against its own OpenAPI schema (schemathesis).

Every operation but the endless ``GET /events`` stream gets generated requests, valid
and invalid: no response may be a server error, and every response must be documented
(status code, content type, body schema) by the schema. A stateful run follows the OpenAPI
links the fuzzed copy of the schema adds (submit → get, cancel, priority, delete, artifacts).
The case counts go to ``fuzz-fastapi*.json`` under pytest's temporary directory.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck, settings

from bad_input import SEEDED_KEY
from fuzz_support import (
    API,
    SCHEDULED_KIND,
    SEEDED,
    OnLoop,
    Tally,
    as_the_key_holder,
    forget_jobs,
    fuzzed_schema,
    injected,
    made_job,
    settle,
)
from jobkit import JobContext, JobManager
from jobkit.integrations.fastapi import install_error_handlers, job_router, lifespan
from web_handlers import header_actor

MAX_EXAMPLES = 100
STATEFUL_EXAMPLES = 40


async def echo(ctx: JobContext, payload: Any) -> Any:
    await ctx.progress(0.5, "half way")
    await ctx.put_artifact("out/result.json", b"{}")
    return payload


def build_app() -> FastAPI:
    jobs = JobManager(sweep_interval=None, concurrency=2)
    jobs.register("echo", echo)
    jobs.declare(SCHEDULED_KIND)  # for the kinds and schedules routes; its jobs never run
    jobs.declare("later")  # the kind of the seeded holder of bad_input.SEEDED_KEY
    run_jobs = lifespan(jobs)

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        async with run_jobs(app):
            # The stateful run calls the manager from the test's thread, on this loop.
            app.state.jobs = OnLoop(jobs, asyncio.get_running_loop())
            yield

    app = FastAPI(lifespan=run)
    install_error_handlers(app)
    app.include_router(job_router(jobs, actor=header_actor), prefix=API)
    return app


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[FastAPI, str]]:
    """The server of the single-request runs."""
    yield from serve()


@pytest.fixture(scope="module")
def stateful_server() -> Iterator[tuple[FastAPI, str]]:
    """A server of its own for the stateful run: the single-request run leaves its state (many
    jobs) behind, and stateful examples must all meet one state."""
    yield from serve()


def serve() -> Iterator[tuple[FastAPI, str]]:
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
        # The holder of the key that bad_input's submit bodies reuse with another kind or payload.
        keyed = client.post("/jobs", json={"kind": "later", "priority": 2, "idempotency_key": SEEDED_KEY})
        assert keyed.status_code == 201, keyed.text
        # Cancelled, like the other seeded jobs finished: a stateful run meets it unchanged.
        client.post(f"/jobs/{keyed.json()['id']}/cancel", json={"reason": "seeded"})
    return {"completed": done["id"], "tenant": tenant["id"], "cancelled": pending["id"]}


def finished_job(base_url: str) -> str:
    """A new completed job (with its artifact), for one generated delete to remove."""
    with (
        httpx.Client(base_url=base_url + API, timeout=10) as client,
        client.stream("GET", "/events") as events,
    ):
        lines = events.iter_lines()
        next(lines)  # the opening frame: the subscription is live
        job_id = client.post("/jobs", json={"kind": "echo"}).json()["id"]
        for line in lines:
            if line.startswith("data:") and '"type":"completed"' in line and job_id in line:
                return str(job_id)
    raise AssertionError("the job never finished")


@pytest.fixture(scope="module")
def seeded(server: tuple[FastAPI, str]) -> dict[str, str]:
    return seed(server[1])


@pytest.fixture(scope="module")
def tally(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tally]:
    counts = Tally("fastapi")
    yield counts
    counts.write(tmp_path_factory.getbasetemp())


schema = fuzzed_schema(links=False, max_examples=MAX_EXAMPLES)


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_every_response_documented(
    case: schemathesis.Case, server: tuple[FastAPI, str], seeded: dict[str, str], tally: Tally
) -> None:
    """Generated requests never get a 5xx, and every response matches the schema."""
    if case.path_parameters and case.path_parameters.get("job_id") == SEEDED:
        # A delete gets a finished job of its own, so the seeded one stays for the others.
        fresh = case.method == "DELETE"
        case.path_parameters["job_id"] = finished_job(server[1]) if fresh else seeded["completed"]
    as_the_key_holder(case)
    response = case.call(base_url=server[1])
    tally.record(case.operation.label, response.status_code, injected=injected(case))
    case.validate_response(response)


def test_stateful_runs_follow_the_links_without_server_errors(
    stateful_server: tuple[FastAPI, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Sequences of calls on jobs the run itself made (submit, then get, cancel, change the
    priority, delete, read and delete artifacts): no server error, every response documented,
    and the listing still works afterwards."""
    base_url = stateful_server[1]
    counts = Tally("fastapi-stateful")
    stateful = fuzzed_schema(links=True, max_examples=STATEFUL_EXAMPLES)

    assert httpx.get(f"{base_url}{API}/jobs", timeout=10).status_code == 200  # the app has started
    jobs = stateful_server[0].state.jobs

    class Workflow(stateful.as_state_machine()):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.made: list[str] = []

        def teardown(self) -> None:
            forget_jobs(jobs, self.made)  # every example starts from one state
            super().teardown()

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"base_url": base_url}

        def after_call(self, response: Any, case: schemathesis.Case) -> None:
            counts.record(case.operation.label, response.status_code)
            settle(jobs, response)
            made = made_job(response, case)
            if made is not None:
                self.made.append(made)

    try:
        Workflow.run(
            settings=settings(
                max_examples=STATEFUL_EXAMPLES,
                stateful_step_count=8,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
        )
    finally:
        counts.write(tmp_path_factory.getbasetemp())
    assert counts.cases >= STATEFUL_EXAMPLES
    # Random ids never name a job: a call on a job that worked followed a link.
    on_a_job = [status for (label, status) in counts.statuses if "{job_id}" in label]
    assert 200 in on_a_job
    assert 204 in on_a_job
    assert counts.server_errors == 0
    assert httpx.get(f"{base_url}{API}/jobs", timeout=10).status_code == 200


def test_events_is_left_out_of_the_fuzzing() -> None:
    """The event stream never ends, so it is the one operation not fuzzed."""
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert f"GET {API}/events" not in labels
    assert f"GET {API}/jobs/{{job_id}}" in labels
    assert len(labels) == 20
    assert f"GET {API}/audit" in labels
