"""A worker process for the cross-process telemetry test (run as a script, not collected).

usage: telemetry_worker.py DB_PATH SPANS_FILE JOB_ID...
Runs the "traced" jobs of the SQLite file with the OpenTelemetry SDK (an in-memory
exporter), each handler starting a span of its own, waits for the given jobs to finish,
then writes every finished span to SPANS_FILE as one JSON object per line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jobkit import JobContext, JobManager
from jobkit.stores import SQLiteStore
from jobkit.telemetry import Telemetry


async def main(db: str, out: str, job_ids: list[str]) -> None:
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    jobs = JobManager(
        SQLiteStore(db),
        concurrency=2,
        sweep_interval=None,
        poll_interval=0.05,
        telemetry=Telemetry(tracer_provider=provider),
    )

    @jobs.handler("traced")
    async def traced(ctx: JobContext, payload: Any) -> None:
        with provider.get_tracer("handler").start_as_current_span("inside"):
            pass

    async with jobs:
        for job_id in job_ids:
            await jobs.wait(job_id, timeout=60)
    lines = []
    for span in exporter.get_finished_spans():
        context = span.get_span_context()
        lines.append(
            json.dumps(
                {
                    "name": span.name,
                    "trace_id": context.trace_id,
                    "span_id": context.span_id,
                    "parent_id": None if span.parent is None else span.parent.span_id,
                    "links": [link.context.span_id for link in span.links],
                    "attributes": dict(span.attributes or {}),
                }
            )
        )
    Path(out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3:])
