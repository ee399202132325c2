"""What the schemathesis runs against the FastAPI router and the Flask blueprint share.

Both serve the same routes, bodies and error bodies by contract, so both are fuzzed with
the FastAPI app's OpenAPI document (the Flask blueprint has none of its own), with examples
pointing at seeded jobs and OpenAPI links added for the stateful runs. A :class:`Tally`
counts the cases each run sent and the server errors among them, and writes them to a
summary file under pytest's temporary directory.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import schemathesis
from fastapi import FastAPI

from jobkit import JobManager
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
    # The one registered kind: any other is refused (422), so valid submits make real jobs.
    kind = document["components"]["schemas"]["SubmitJob"]["properties"]["kind"]
    kind["enum"] = kind["examples"] = ["echo"]
    if links:
        paths = document["paths"]
        for status, method, path, pointer in (
            ("201", "post", f"{API}/jobs", "/id"),
            ("200", "get", _JOB, "/id"),
            ("200", "post", f"{_JOB}/cancel", "/id"),
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


def fuzzed_schema(*, links: bool, max_examples: int) -> Any:
    """A schemathesis schema of :func:`fuzzed_document` with the shared checks, without the
    endless ``GET /events`` stream."""
    schema = schemathesis.openapi.from_dict(fuzzed_document(links=links))
    schema.config.generation.update(max_examples=max_examples, database="none")
    schema.config.checks.update(included_check_names=CHECKS)
    return schema.exclude(path=f"{API}/events")


class Tally:
    """The cases one fuzzing run sent, by operation and status, and its server errors."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.statuses: Counter[tuple[str, int]] = Counter()

    def record(self, label: str, status: int) -> None:
        self.statuses[(label, status)] += 1

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
            "by_operation": by_operation,
        }

    def write(self, directory: Path) -> Path:
        """Write the summary as ``fuzz-<name>.json`` in ``directory``; print one line."""
        path = directory / f"fuzz-{self.name}.json"
        path.write_text(json.dumps(self.summary(), indent=2))
        print(f"\n{self.name}: {self.cases} cases, {self.server_errors} server errors ({path})")
        return path
