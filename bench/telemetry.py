"""Telemetry overhead: throughput.py's 20,000 no-op async jobs, with and without OpenTelemetry.

Three managers on a MemoryStore (concurrency 100, no sweeper), best of 3 runs each,
alternating:

- ``off``: ``telemetry=False``, the path taken when opentelemetry is not installed;
- ``api only``: the default (``telemetry=None``) with opentelemetry-api installed and no
  SDK configured: no spans are built, the metric calls go to the API's no-op meter;
- ``sdk``: ``Telemetry(tracer_provider=..., meter_provider=...)`` with the SDK, every span
  exported to an InMemorySpanExporter (SimpleSpanProcessor) and the metrics aggregated for
  an InMemoryMetricReader: two spans and about eight measurements per job.

    .venv/bin/python bench/telemetry.py [--backend asyncio|trio]
"""

from __future__ import annotations

from typing import Any

import _common
import anyio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jobkit import JobContext, JobManager, JobStatus
from jobkit.stores import MemoryStore
from jobkit.telemetry import Telemetry

JOBS = 20_000
CONCURRENCY = 100
RUNS = 3


async def noop(ctx: JobContext | None, payload: Any) -> None:
    """The work: nothing at all."""


def sdk_telemetry() -> tuple[Telemetry, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider), exporter


async def run(telemetry: Telemetry | bool | None) -> float:
    """Seconds to submit JOBS no-op jobs and wait for each to complete."""
    jobs = JobManager(MemoryStore(), concurrency=CONCURRENCY, sweep_interval=None, telemetry=telemetry)
    jobs.register("noop", noop)
    async with jobs:
        start = _common.now()
        ids = [(await jobs.submit("noop", i)).id for i in range(JOBS)]
        for job_id in ids:
            job = await jobs.wait(job_id)
            if job.status is not JobStatus.COMPLETED:
                raise RuntimeError(f"job {job_id} ended {job.status}")
        return _common.now() - start


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0])
    _common.quiet_logs()
    times: dict[str, list[float]] = {"off": [], "api only": [], "sdk": []}
    for _ in range(RUNS):
        for name in times:
            if name == "sdk":
                telemetry, exporter = sdk_telemetry()
                option: Telemetry | bool | None = telemetry
            else:
                option, exporter = (False if name == "off" else None), None
            _common.fresh_heap()
            times[name].append(anyio.run(run, option, backend=args.backend))
            if exporter is not None and len(exporter.get_finished_spans()) != 2 * JOBS:
                raise RuntimeError(f"expected {2 * JOBS} spans, got {len(exporter.get_finished_spans())}")
    _common.header(
        f"telemetry: {JOBS:,} no-op async jobs, concurrency {CONCURRENCY}, best of {RUNS}", args.backend
    )
    base = min(times["off"])
    for name, values in times.items():
        best = min(values)
        _common.line(
            name,
            f"{JOBS / best:>10,.0f} jobs/s  ({best:.3f} s)  "
            f"{(best - base) / JOBS * 1e6:+.1f} us/job  ({best / base - 1:+.1%})",
        )


if __name__ == "__main__":
    main()
