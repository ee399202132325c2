"""Property-based run of the Flask blueprint against the FastAPI router's OpenAPI schema.

The blueprint has no schema of its own; its routes, bodies, status codes and error bodies
are the router's by contract, so the router's document is the specification it is held
to. The blueprint is served by a real werkzeug server on a free local port. Every
operation but the endless ``GET /events`` stream gets generated requests, valid and
invalid (no server error, every response documented), and a stateful run follows the
OpenAPI links of the fuzzed schema (submit → get, cancel, priority, delete, artifacts).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from werkzeug.serving import make_server

from bad_input import SEEDED_KEY
from fuzz_support import (
    API,
    SCHEDULED_KIND,
    SEEDED,
    Tally,
    as_the_key_holder,
    forget_jobs,
    fuzzed_schema,
    injected,
    made_job,
    settle,
)
from jobkit import BlockingJobManager, JobContext
from jobkit.integrations.flask import job_blueprint
from web_handlers import actor_from_headers

MAX_EXAMPLES = 100
STATEFUL_EXAMPLES = 60


async def echo(ctx: JobContext, payload: Any) -> Any:
    await ctx.progress(0.5, "half way")
    await ctx.put_artifact("out/result.json", b"{}")
    return payload


def header_actor() -> Any:
    headers = flask.request.headers
    return actor_from_headers(headers.get("X-Actor"), headers.get("X-Tenant"), headers.get("X-Roles"))


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[BlockingJobManager, str]]:
    """The server of the single-request runs."""
    yield from serve()


@pytest.fixture(scope="module")
def stateful_server() -> Iterator[tuple[BlockingJobManager, str]]:
    """A server of its own for the stateful run: the single-request run leaves its state (many
    jobs) behind, and stateful examples must all meet one state."""
    yield from serve()


def serve() -> Iterator[tuple[BlockingJobManager, str]]:
    """The blueprint served by werkzeug on a free local port, its manager running."""
    jobs = BlockingJobManager(sweep_interval=None, concurrency=2)
    jobs.register("echo", echo)
    jobs.declare(SCHEDULED_KIND)  # for the kinds and schedules routes; its jobs never run
    jobs.declare("later")  # the kind of the seeded holder of bad_input.SEEDED_KEY
    app = flask.Flask(__name__)
    app.register_blueprint(job_blueprint(jobs, actor=header_actor), url_prefix=API)
    with jobs:
        http = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=http.serve_forever, daemon=True)
        thread.start()
        try:
            yield jobs, f"http://127.0.0.1:{http.server_port}"
        finally:
            http.shutdown()
            thread.join(timeout=30)
            http.server_close()
            assert not thread.is_alive(), "werkzeug did not stop"


@pytest.fixture(scope="module")
def seeded(server: tuple[BlockingJobManager, str]) -> dict[str, str]:
    """A finished job with an artifact, another tenant's job and a cancelled one."""
    jobs, base_url = server
    with httpx.Client(base_url=base_url + API, timeout=10) as client:
        done = client.post("/jobs", json={"kind": "echo", "payload": {"n": 1}, "labels": {"a": "b"}})
        tenant = client.post("/jobs", json={"kind": "echo"}, headers={"X-Actor": "a", "X-Tenant": "t"})
        for response in (done, tenant):
            assert response.status_code == 201, response.text
            assert jobs.wait(response.json()["id"], timeout=10).status == "completed"
        pending = client.post("/jobs", json={"kind": "echo", "priority": -5, "ttl": 5, "timeout": 9}).json()
        client.post(f"/jobs/{pending['id']}/cancel", json={"reason": "seeded"})
        # The holder of the key that bad_input's submit bodies reuse with another kind or payload.
        keyed = client.post("/jobs", json={"kind": "later", "priority": 2, "idempotency_key": SEEDED_KEY})
        assert keyed.status_code == 201, keyed.text
        # Cancelled, like the other seeded jobs finished: a stateful run meets it unchanged.
        client.post(f"/jobs/{keyed.json()['id']}/cancel", json={"reason": "seeded"})
    return {"completed": done.json()["id"], "tenant": tenant.json()["id"], "cancelled": pending["id"]}


@pytest.fixture(scope="module")
def tally(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tally]:
    counts = Tally("flask")
    yield counts
    counts.write(tmp_path_factory.getbasetemp())


schema = fuzzed_schema(links=False, max_examples=MAX_EXAMPLES)


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_every_response_documented(
    case: schemathesis.Case, server: tuple[BlockingJobManager, str], seeded: dict[str, str], tally: Tally
) -> None:
    """Generated requests never get a 5xx, and every response matches the router's schema."""
    if case.path_parameters and case.path_parameters.get("job_id") == SEEDED:
        if case.method == "DELETE":  # a finished job of its own, so the seeded one stays
            jobs = server[0]
            fresh = jobs.submit("echo")
            assert jobs.wait(fresh.id, timeout=10).status == "completed"
            case.path_parameters["job_id"] = fresh.id
        else:
            case.path_parameters["job_id"] = seeded["completed"]
    as_the_key_holder(case)
    response = case.call(base_url=server[1])
    tally.record(case.operation.label, response.status_code, injected=injected(case))
    case.validate_response(response)


def test_stateful_runs_follow_the_links_without_server_errors(
    stateful_server: tuple[BlockingJobManager, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Sequences of calls on jobs the run itself made (submit, then get, cancel, change the
    priority, delete, read and delete artifacts): no server error, every response documented,
    and the listing still works afterwards."""
    base_url = stateful_server[1]
    counts = Tally("flask-stateful")
    stateful = fuzzed_schema(links=True, max_examples=STATEFUL_EXAMPLES)

    class Workflow(stateful.as_state_machine()):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.made: list[str] = []

        def teardown(self) -> None:
            forget_jobs(stateful_server[0], self.made)  # every example starts from one state
            super().teardown()

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"base_url": base_url}

        def after_call(self, response: Any, case: schemathesis.Case) -> None:
            counts.record(case.operation.label, response.status_code)
            settle(stateful_server[0], response)
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


def test_the_flask_fuzzing_covers_every_operation_but_events() -> None:
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert f"GET {API}/events" not in labels
    assert len(labels) == 20
    assert f"GET {API}/audit" in labels


def test_the_summary_names_the_run(tmp_path: Path) -> None:
    counts = Tally("probe")
    counts.record("GET /x", 200)
    counts.record("GET /x", 503)
    path = counts.write(tmp_path)
    assert path.read_text().count('"server_errors": 1') == 1
