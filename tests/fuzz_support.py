"""What the schemathesis runs against the FastAPI router and the Flask blueprint share.

Both serve the same routes, bodies and error bodies by contract, so both are fuzzed with
the FastAPI app's OpenAPI document (the Flask blueprint has none of its own), with examples
pointing at seeded jobs and OpenAPI links added for the stateful runs. A :class:`Tally`
counts the cases each run sent and the server errors among them, and writes them to a
summary file under pytest's temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

import schemathesis
from fastapi import FastAPI
from hypothesis import strategies as st
from schemathesis.hooks import HookContext

import bad_input as bad
from jobkit import Job, JobManager, JobNotFound
from jobkit.integrations.fastapi import install_error_handlers, job_router
from web_handlers import header_actor

API = "/api/v1"
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
]
#: The example job id in the fuzzed schema, replaced by a real job's id in each request.
SEEDED = "seeded-job"
#: A kind the fuzzed servers declare without a handler: the example of the kinds routes and of
#: schedules (pausing it or firing its schedules leaves the ``echo`` jobs the runs wait for alone).
SCHEDULED_KIND = "nightly"

_JOB = f"{API}/jobs/{{job_id}}"
#: The operations a new job's id leads to (OpenAPI links of ``POST /jobs`` and of a cancel).
_LINKED = {
    "GetJob": ("get", _JOB),
    "CancelJob": ("post", f"{_JOB}/cancel"),
    "DeleteJob": ("delete", _JOB),
    "SetPriority": ("patch", f"{_JOB}/priority"),
    "ListArtifacts": ("get", f"{_JOB}/artifacts"),
    "ReadArtifact": ("get", f"{_JOB}/artifacts/{{name}}"),
    "DeleteArtifact": ("delete", f"{_JOB}/artifacts/{{name}}"),
    "RetryJob": ("post", f"{_JOB}/retry"),
}


def openapi_document() -> dict[str, Any]:
    """The FastAPI app's OpenAPI document, the routes mounted under :data:`API`."""
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(job_router(JobManager(sweep_interval=None), actor=header_actor), prefix=API)
    return app.openapi()


def fuzzed_document(*, links: bool) -> dict[str, Any]:
    """The document with examples pointing at the seeded jobs, ``kind`` the registered
    ``echo`` and, with ``links``, OpenAPI
    links from every response carrying a job to the operations on that job."""
    document = copy.deepcopy(openapi_document())
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "job_id":
                    parameter["example"] = SEEDED
                elif parameter["name"] == "name":
                    parameter["example"] = "out/result.json"
                elif parameter["name"] == "kind":
                    parameter["example"] = SCHEDULED_KIND
    # The one registered kind: any other is refused (422), so valid submits make real jobs.
    kind = document["components"]["schemas"]["SubmitJob"]["properties"]["kind"]
    kind["enum"] = kind["examples"] = ["echo"]
    schedule = document["components"]["schemas"]["CreateSchedule"]["properties"]
    schedule["kind"]["enum"] = schedule["kind"]["examples"] = [SCHEDULED_KIND]
    schedule["cron"]["examples"] = ["0 3 * * *", "*/5 * * * 1-5"]
    schedule["timezone"]["examples"] = ["UTC", "Europe/Berlin"]
    if links:
        paths = document["paths"]
        for status, method, path, pointer in (
            ("201", "post", f"{API}/jobs", "/id"),
            ("200", "get", _JOB, "/id"),
            ("200", "post", f"{_JOB}/cancel", "/id"),
            ("200", "post", f"{_JOB}/retry", "/id"),
            ("200", "patch", f"{_JOB}/priority", "/job/id"),
        ):
            response = paths[path][method]["responses"][status]
            response["links"] = {
                name: {
                    "operationId": paths[target_path][target_method]["operationId"],
                    "parameters": {"job_id": f"$response.body#{pointer}"},
                }
                for name, (target_method, target_path) in _LINKED.items()
            }
    return document


#: The bad bodies of :mod:`bad_input` each JSON operation also gets, as raw bytes (some,
#: such as ``NaN`` tokens, are no Python value schemathesis could encode itself). Only the
#: small ones: schemathesis takes seconds over each megabyte body, and test_web_bad_input
#: sends the deep and the oversized ones.
BAD_BODIES: dict[str, st.SearchStrategy[bytes]] = {
    label: bodies.filter(lambda body: len(body) < 20_000)
    for label, bodies in (
        (f"POST {API}/jobs", bad.submit_bodies()),
        (f"POST {_JOB}/cancel", bad.cancel_bodies()),
        (f"PATCH {_JOB}/priority", bad.priority_bodies()),
    )
}
#: Query parameters of ``GET /jobs`` from :mod:`bad_input`: crafted cursors, bad limits.
BAD_QUERIES = st.one_of(
    bad.cursors.map(lambda cursor: {"cursor": unquote(cursor)}),
    bad.limits.map(lambda limit: {"limit": unquote(limit)}),
)


def _body_or_bad(context: HookContext, body: Any) -> st.SearchStrategy[Any]:
    operation = context.operation
    bodies = None if operation is None else BAD_BODIES.get(operation.label)
    return st.just(body) if bodies is None else st.one_of(st.just(body), bodies)


#: Submit fields whose effect depends on earlier examples or on time, left out of the
#: stateful run's document: a key drawn again finds an earlier example's job (200, not 201);
#: a delay, run_at or tiny timeout makes a job's state depend on when the next call comes.
#: Either way the links followed differ between runs of the same draws, and hypothesis sees a
#: flaky strategy. These fields are fuzzed in the single-request run.
UNSTEADY_FIELDS = frozenset({"idempotency_key", "run_at", "delay", "timeout"})


def _drop_unsteady_fields(node: Any) -> None:
    """Remove :data:`UNSTEADY_FIELDS` (and the ``Idempotency-Key`` header) from ``node``."""
    if isinstance(node, dict):
        properties = node.get("properties")
        if isinstance(properties, dict):
            for name in UNSTEADY_FIELDS:
                properties.pop(name, None)
        parameters = node.get("parameters")
        if isinstance(parameters, list):
            node["parameters"] = [
                p
                for p in parameters
                if not (isinstance(p, dict) and str(p.get("name", "")).lower() == "idempotency-key")
            ]
        for value in node.values():
            _drop_unsteady_fields(value)
    elif isinstance(node, list):
        for value in node:
            _drop_unsteady_fields(value)


def _query_or_bad(context: HookContext, query: Any) -> st.SearchStrategy[Any]:
    operation = context.operation
    if operation is None or operation.label != f"GET {API}/jobs":
        return st.just(query)
    return st.one_of(st.just(query), BAD_QUERIES)


def fuzzed_schema(*, links: bool, max_examples: int) -> Any:
    """A schemathesis schema of :func:`fuzzed_document` with the shared checks, without the
    endless ``GET /events`` stream. Without ``links`` (the run of single requests), the
    generated bodies and list queries are mixed with those of :mod:`bad_input`; the stateful
    run keeps to schemathesis' own, which make real jobs to follow the links of, and to the
    operations on jobs."""
    document = fuzzed_document(links=links)
    if links:
        _drop_unsteady_fields(document)
    schema = schemathesis.openapi.from_dict(document)
    schema.config.generation.update(max_examples=max_examples, database="none")
    schema.config.checks.update(included_check_names=CHECKS)
    # A body over the route's limit is refused as 413 payload_too_large (documented).
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = sorted({*rejection.expected_statuses, "413"})
    if not links:
        schema.hook("flatmap_body")(_body_or_bad)
        schema.hook("flatmap_query")(_query_or_bad)
    schema = schema.exclude(path=f"{API}/events")
    if links:
        # The stateful run follows the links between operations on jobs; kinds and schedules
        # (fuzzed one request at a time) would only thin out its steps.
        schema = schema.exclude(path_regex=f"^{API}/(kinds|schedules)")

    return schema


class Blocking(Protocol):
    """The manager calls the stateful runs make from the test's thread: a
    BlockingJobManager, or :class:`OnLoop` for a JobManager on a server's loop."""

    def list(self, *, limit: int, include_deleted: bool) -> Any: ...
    def get(self, job_id: str, *, include_deleted: bool) -> Job: ...
    def cancel(self, job_id: str) -> Any: ...
    def wait(self, job_id: str, *, timeout: float) -> Any: ...
    def delete(self, job_id: str) -> Any: ...


class OnLoop:
    """A JobManager running on another thread's asyncio loop, called from this thread."""

    def __init__(self, jobs: JobManager, loop: asyncio.AbstractEventLoop) -> None:
        self._jobs = jobs
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._jobs, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(method(*args, **kwargs), self._loop).result(30)

        return call


def made_job(response: Any, case: Any) -> str | None:
    """The id of the job a stateful call stored (``POST /jobs`` answered 201), else None."""
    if case.method == "POST" and case.path == f"{API}/jobs" and response.status_code == 201:
        return str(response.json()["id"])
    return None


def forget_jobs(jobs: Blocking, job_ids: Iterable[str]) -> None:
    """Delete the jobs a stateful example made: the next example's calls then meet the server
    as the first one did (the same listings, the same links to follow)."""
    for job_id in job_ids:
        with contextlib.suppress(JobNotFound):  # the example itself may have deleted it
            job = jobs.get(job_id, include_deleted=True)
            if job.deleted_at is not None:
                continue
            if not job.is_terminal:
                jobs.cancel(job_id)
                jobs.wait(job_id, timeout=10)
            jobs.delete(job_id)


def settle(jobs: Blocking, response: Any) -> None:
    """After a call that left a job waiting or running (a submit, a retry), wait until it has
    finished: the next call then finds the same state whatever the timing (its artifacts are
    there), so the same draws follow the same links."""
    if response.status_code not in (200, 201) or "json" not in response.headers.get("content-type", ""):
        return
    body = response.json()
    if isinstance(body, dict) and body.get("status") in ("pending", "running", "cancelling"):
        jobs.wait(body["id"], timeout=10)


def as_the_key_holder(case: Any) -> None:
    """A bad body that reuses the seeded job's key must come from the seeded job's tenant (the
    host): from another tenant the key is another key, and the job a valid one."""
    if isinstance(case.body, bytes) and bad.SEEDED_KEY.encode() in case.body and case.headers:
        for name in [name for name in case.headers if name.lower() in ("x-actor", "x-tenant", "x-roles")]:
            del case.headers[name]


def injected(case: Any) -> bool:
    """Whether ``case`` carries a bad body of :mod:`bad_input` (raw bytes)."""
    return isinstance(case.body, bytes)


class Tally:
    """The cases one fuzzing run sent, by operation and status, and its server errors."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.injected = 0

    def record(self, label: str, status: int, *, injected: bool = False) -> None:
        self.statuses[(label, status)] += 1
        self.injected += injected

    @property
    def cases(self) -> int:
        return sum(self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(n for (_, status), n in self.statuses.items() if status >= 500)

    def summary(self) -> dict[str, Any]:
        by_operation: dict[str, dict[str, int]] = {}
        for (label, status), n in sorted(self.statuses.items()):
            by_operation.setdefault(label, {})[str(status)] = n
        return {
            "run": self.name,
            "cases": self.cases,
            "server_errors": self.server_errors,
            "bad_input_bodies": self.injected,
            "by_operation": by_operation,
        }

    def write(self, directory: Path) -> Path:
        """Write the summary as ``fuzz-<name>.json`` in ``directory``; print one line."""
        path = directory / f"fuzz-{self.name}.json"
        path.write_text(json.dumps(self.summary(), indent=2))
        print(
            f"\n{self.name}: {self.cases} cases ({self.injected} with bad_input bodies), "
            f"{self.server_errors} server errors ({path})"
        )
        return path
