"""OpenTelemetry (``jobkit[otel]``): the spans and instruments a manager reports, checked with
the SDK's in-memory exporters, across stores and processes; and nothing at all when
OpenTelemetry is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from jobkit import (
    Actor,
    BlockingJobManager,
    InvalidInput,
    JobContext,
    JobManager,
    JobStatus,
    Retry,
    SyncJobContext,
)
from jobkit.stores import MemoryStore, SQLiteStore
from jobkit.telemetry import (
    CANCEL_LATENCY,
    DURATION,
    FINISHED,
    PENDING,
    QUEUE_WAIT,
    RUNNING,
    STARTED,
    SUBMITTED,
    TRACEPARENT_LABEL,
    Telemetry,
)
from managers import ManagerFactory

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).with_name("telemetry_worker.py")
KIND = "jobkit.job.kind"
OUTCOME = "jobkit.job.outcome"


class Otel:
    """An SDK tracer and meter provider with in-memory exporters, and a Telemetry using them."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.telemetry = Telemetry(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider)
        self.tracer = self.tracer_provider.get_tracer("test")

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def span(self, name: str) -> ReadableSpan:
        [found] = self.spans(name)
        return found

    def points(self, metric: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """The data points of ``metric`` by their sorted attributes."""
        data = self.reader.get_metrics_data()
        found: dict[tuple[tuple[str, Any], ...], Any] = {}
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for item in scope.metrics:
                    if item.name == metric:
                        for point in item.data.data_points:
                            found[tuple(sorted((point.attributes or {}).items()))] = point
        return found


@pytest.fixture
def otel() -> Iterator[Otel]:
    found = Otel()
    yield found
    found.tracer_provider.shutdown()
    found.meter_provider.shutdown()


def manager(otel: Otel, **kwargs: Any) -> JobManager:
    kwargs.setdefault("sweep_interval", None)
    return JobManager(telemetry=otel.telemetry, **kwargs)


async def ok(ctx: JobContext, payload: Any) -> Any:
    return payload


async def boom(ctx: JobContext, payload: Any) -> Any:
    raise ValueError("boom")


class TestSpans:
    async def test_a_run_has_a_consumer_span_with_the_job_attributes(self, otel: Otel) -> None:
        """One ``run {kind}`` span per run: kind, job id, tenant, attempt and outcome."""
        jobs = manager(otel)
        jobs.register("resize", ok)
        async with jobs:
            job = await jobs.submit("resize", 1, actor=Actor("alice", tenant="acme"))
            await jobs.wait(job.id)
        run = otel.span("run resize")
        assert run.kind is SpanKind.CONSUMER
        assert run.attributes is not None
        assert dict(run.attributes) == {
            "messaging.system": "jobkit",
            "messaging.operation.type": "process",
            "messaging.destination.name": "resize",
            "messaging.message.id": job.id,
            "jobkit.job.tenant": "acme",
            "jobkit.job.attempt": 1,
            "jobkit.job.outcome": "completed",
        }
        assert run.status.status_code is StatusCode.UNSET
        submit = otel.span("submit resize")
        assert submit.kind is SpanKind.PRODUCER
        assert submit.attributes is not None
        assert submit.attributes["messaging.operation.type"] == "create"
        assert submit.attributes["messaging.message.id"] == job.id

    async def test_the_run_continues_the_trace_of_the_submitter(
        self, otel: Otel, make_manager: ManagerFactory
    ) -> None:
        """A submit inside a span: the job carries the trace context through the store (every
        kind), the run span is a child of the submit span (and links to it), and the
        handler's own spans are children of the run."""
        jobs = make_manager(telemetry=otel.telemetry)
        tracer = otel.tracer

        @jobs.handler("work")
        async def work(ctx: JobContext, payload: Any) -> None:
            with tracer.start_as_current_span("inside"):
                pass

        async with jobs:
            with tracer.start_as_current_span("request") as request:
                job = await jobs.submit("work")
            assert TRACEPARENT_LABEL in (await jobs.get(job.id)).labels
            await jobs.wait(job.id)
        trace_id = request.get_span_context().trace_id
        submit, run, inside = otel.span("submit work"), otel.span("run work"), otel.span("inside")
        assert {s.context.trace_id for s in (submit, run, inside) if s.context} == {trace_id}
        assert submit.parent is not None
        assert submit.parent.span_id == request.get_span_context().span_id
        assert submit.context is not None
        assert run.context is not None
        assert run.parent is not None
        assert run.parent.span_id == submit.context.span_id
        assert [link.context.span_id for link in run.links] == [submit.context.span_id]
        assert inside.parent is not None
        assert inside.parent.span_id == run.context.span_id

    async def test_a_sync_handler_runs_in_the_run_span(self, otel: Otel) -> None:
        """The run span is current in a sync handler's thread too."""
        jobs = manager(otel)
        tracer = otel.tracer

        def work(ctx: SyncJobContext, payload: Any) -> None:
            with tracer.start_as_current_span("inside"):
                pass

        jobs.register("work", work)
        async with jobs:
            await jobs.wait((await jobs.submit("work")).id)
        run, inside = otel.span("run work"), otel.span("inside")
        assert run.context is not None
        assert inside.parent is not None
        assert inside.parent.span_id == run.context.span_id

    async def test_without_a_submitter_span_each_job_is_a_trace_of_its_own(self, otel: Otel) -> None:
        """No span current at submit: the submit span is a root and the run its child; never
        a child of whatever was current when the manager started (its tasks inherit that)."""
        jobs = manager(otel)
        jobs.register("work", ok)
        with otel.tracer.start_as_current_span("startup"):
            await jobs.__aenter__()
        try:
            first, second = await jobs.submit("work"), await jobs.submit("work")
            await jobs.wait(first.id)
            await jobs.wait(second.id)
        finally:
            await jobs.__aexit__(None, None, None)
        submits = {s.attributes["messaging.message.id"]: s for s in otel.spans("submit work") if s.attributes}
        runs = {s.attributes["messaging.message.id"]: s for s in otel.spans("run work") if s.attributes}
        assert set(submits) == set(runs) == {first.id, second.id}
        assert len({s.context.trace_id for s in submits.values() if s.context}) == 2
        for job_id, submit in submits.items():
            assert submit.parent is None
            assert submit.context is not None
            run = runs[job_id]
            assert run.parent is not None
            assert run.parent.span_id == submit.context.span_id

    async def test_a_failure_sets_error_status_with_the_exception(self, otel: Otel) -> None:
        """A handler that raises: status ERROR, the exception recorded, outcome failed; a
        failure a Retry covers ends its run with outcome retry."""
        jobs = manager(otel)
        jobs.register("boom", boom)
        async with jobs:
            job = await jobs.submit("boom", retry=Retry(attempts=2, backoff=0))
            assert (await jobs.wait(job.id)).status is JobStatus.FAILED
        runs = sorted(otel.spans("run boom"), key=lambda s: s.attributes["jobkit.job.attempt"])  # type: ignore[index]
        assert [s.attributes[OUTCOME] for s in runs if s.attributes] == ["retry", "failed"]
        for span in runs:
            assert span.status.status_code is StatusCode.ERROR
            assert span.status.description == "ValueError: boom"
            [event] = span.events
            assert event.name == "exception"
            assert event.attributes is not None
            assert event.attributes["exception.type"] == "ValueError"
        assert {s.parent.span_id for s in runs if s.parent} == {otel.span("submit boom").context.span_id}  # type: ignore[union-attr]

    async def test_a_cancelled_run_has_a_cancel_event(self, otel: Otel) -> None:
        """Cancelling a running job: an event on its span, outcome cancelled, and the cancel
        latency measured."""
        jobs = manager(otel)
        started = anyio.Event()

        @jobs.handler("hang")
        async def hang(ctx: JobContext, payload: Any) -> None:
            started.set()
            await ctx.token.wait()
            await ctx.checkpoint()

        async with jobs:
            job = await jobs.submit("hang")
            with anyio.fail_after(30):
                await started.wait()
            await jobs.cancel(job.id, reason="not needed")
            assert (await jobs.wait(job.id, timeout=30)).status is JobStatus.CANCELLED
        run = otel.span("run hang")
        assert run.attributes is not None
        assert run.attributes[OUTCOME] == "cancelled"
        [event] = run.events
        assert event.name == "jobkit.cancel"
        assert dict(event.attributes or {}) == {
            "jobkit.cancel.source": "user",
            "jobkit.cancel.reason": "not needed",
        }
        [latency] = otel.points(CANCEL_LATENCY).values()
        assert latency.count == 1
        assert 0 <= latency.sum < 30
        assert otel.points(FINISHED)[((KIND, "hang"), (OUTCOME, "cancelled"))].value == 1

    async def test_a_traceparent_label_given_at_submit_is_the_parent(self, otel: Otel) -> None:
        """A producer elsewhere (an HTTP client, another system) passes its trace context as
        the label: the submit span continues that trace."""
        jobs = manager(otel)
        jobs.register("work", ok)
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        async with jobs:
            job = await jobs.submit("work", labels={TRACEPARENT_LABEL: parent, "team": "a"})
            await jobs.wait(job.id)
        assert job.labels["team"] == "a"
        assert job.labels[TRACEPARENT_LABEL] != parent  # now the submit span's own context
        submit, run = otel.span("submit work"), otel.span("run work")
        assert submit.context is not None
        assert run.context is not None
        assert submit.context.trace_id == run.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
        assert submit.parent is not None
        assert submit.parent.span_id == 0xB7AD6B7169203331

    async def test_an_idempotent_repeat_is_marked_and_not_counted(self, otel: Otel) -> None:
        jobs = manager(otel, concurrency=0)
        jobs.declare("work")
        async with jobs:
            first = await jobs.submit("work", idempotency_key="k")
            again = await jobs.submit("work", idempotency_key="k")
        assert again.id == first.id
        spans = otel.spans("submit work")
        assert [bool(s.attributes and s.attributes.get("jobkit.job.existing")) for s in spans] == [
            False,
            True,
        ]
        assert spans[1].attributes is not None
        assert spans[1].attributes["messaging.message.id"] == first.id
        assert otel.points(SUBMITTED)[((KIND, "work"),)].value == 1


class TestMetrics:
    async def test_counts_and_histograms_after_a_few_jobs(self, otel: Otel) -> None:
        jobs = manager(otel)
        jobs.register("ok", ok)
        jobs.register("boom", boom)
        async with jobs:
            ids = [(await jobs.submit(kind)).id for kind in ("ok", "ok", "boom")]
            for job_id in ids:
                await jobs.wait(job_id)
            scheduled = await jobs.submit("ok", delay=3600)
            await jobs.cancel(scheduled.id)
            running = {k: p.value for k, p in otel.points(RUNNING).items()}
            assert running == {((KIND, "ok"),): 0, ((KIND, "boom"),): 0}
        assert {k: p.value for k, p in otel.points(SUBMITTED).items()} == {
            ((KIND, "ok"),): 3,
            ((KIND, "boom"),): 1,
        }
        assert {k: p.value for k, p in otel.points(STARTED).items()} == {
            ((KIND, "ok"),): 2,
            ((KIND, "boom"),): 1,
        }
        assert {k: p.value for k, p in otel.points(FINISHED).items()} == {
            ((KIND, "ok"), (OUTCOME, "completed")): 2,
            ((KIND, "ok"), (OUTCOME, "cancelled")): 1,  # cancelled while it waited
            ((KIND, "boom"), (OUTCOME, "failed")): 1,
        }
        assert {k: p.count for k, p in otel.points(DURATION).items()} == {
            ((KIND, "ok"), (OUTCOME, "completed")): 2,
            ((KIND, "boom"), (OUTCOME, "failed")): 1,
        }
        assert {k: p.count for k, p in otel.points(QUEUE_WAIT).items()} == {
            ((KIND, "ok"),): 2,
            ((KIND, "boom"),): 1,
        }
        assert all(p.sum >= 0 for p in otel.points(DURATION).values())
        assert otel.points(RUNNING) == {}  # a closed manager stops reporting

    async def test_running_counts_the_runs_under_way(self, otel: Otel) -> None:
        jobs = manager(otel)
        started, release = anyio.Event(), anyio.Event()

        @jobs.handler("hold")
        async def hold(ctx: JobContext, payload: Any) -> None:
            started.set()
            await release.wait()

        async with jobs:
            job = await jobs.submit("hold")
            with anyio.fail_after(30):
                await started.wait()
            assert otel.points(RUNNING)[((KIND, "hold"),)].value == 1
            release.set()
            await jobs.wait(job.id)
            assert otel.points(RUNNING)[((KIND, "hold"),)].value == 0

    async def test_the_pending_gauge_reports_the_store_count(self, otel: Otel) -> None:
        store = MemoryStore()
        jobs = manager(otel, store=store, concurrency=0)
        jobs.declare("later")
        async with jobs:
            for _ in range(3):
                await jobs.submit("later")
            tracker = jobs._telemetry
            assert tracker is not None
            await tracker.count_pending(store)  # what the manager does every pending_interval
            assert {k: p.value for k, p in otel.points(PENDING).items()} == {(): 3}
        assert otel.points(PENDING) == {}  # a closed manager stops reporting


class TestChoosing:
    async def test_without_a_configured_sdk_the_default_reports_nothing(self) -> None:
        """``telemetry=None`` with the API alone (no SDK configured): the started manager
        drops its telemetry, no trace label; ``False``: none from the start."""
        jobs = JobManager(sweep_interval=None)
        jobs.register("work", ok)
        async with jobs:
            assert jobs._telemetry is None
            job = await jobs.submit("work")
            await jobs.wait(job.id)
            assert TRACEPARENT_LABEL not in job.labels
        assert JobManager(telemetry=False)._telemetry is None

    async def test_true_traces_through_the_global_provider(self) -> None:
        jobs = JobManager(sweep_interval=None, telemetry=True)
        jobs.register("work", ok)
        async with jobs:
            assert jobs._telemetry is not None
            assert jobs._telemetry.tracing
            await jobs.wait((await jobs.submit("work")).id)

    def test_the_default_reports_to_the_sdk_the_host_configured(self) -> None:
        """In a process whose global providers are an SDK's (set after the manager was
        built, before it started), the default reports spans and measurements there."""
        out = _python(_GLOBAL_SDK)
        assert out.splitlines() == ["run work", "submit work", "jobkit.jobs.finished"]

    def test_a_bad_option_is_refused(self) -> None:
        with pytest.raises(InvalidInput, match="telemetry must be"):
            JobManager(telemetry="yes")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="pending_interval"):
            Telemetry(pending_interval=0)


class TestBlocking:
    @pytest.mark.parametrize("backend", ["asyncio", "trio"])
    def test_the_blocking_facade_continues_the_callers_trace(self, otel: Otel, backend: str) -> None:
        """A submit from a sync thread (a Flask view, say) inside a span: the portal carries
        the caller's context to the loop, so the job's spans are in the caller's trace."""
        jobs = BlockingJobManager(sweep_interval=None, telemetry=otel.telemetry, backend=backend)
        jobs.register("work", lambda ctx, payload: None)
        with jobs:
            with otel.tracer.start_as_current_span("view") as view:
                job = jobs.submit("work")
            jobs.wait(job.id, timeout=30)
        trace_id = view.get_span_context().trace_id
        submit, run = otel.span("submit work"), otel.span("run work")
        assert submit.parent is not None
        assert submit.parent.span_id == view.get_span_context().span_id
        assert {s.context.trace_id for s in (submit, run) if s.context} == {trace_id}


class TestProcesses:
    async def test_the_trace_continues_in_a_worker_process(self, otel: Otel, tmp_path: Path) -> None:
        """Submitted here inside a request span, run by a worker process on the same SQLite
        file: its run span is in the request's trace, a child of the submit span."""
        db = tmp_path / "jobs.db"
        jobs = manager(otel, store=SQLiteStore(db), concurrency=0)
        jobs.declare("traced")
        async with jobs:
            with otel.tracer.start_as_current_span("request") as request:
                job = await jobs.submit("traced")
        out = tmp_path / "spans.jsonl"
        worker = subprocess.Popen(
            [sys.executable, str(WORKER), str(db), str(out), job.id], env=dict(os.environ)
        )
        assert await anyio.to_thread.run_sync(lambda: worker.wait(120)) == 0
        spans = {s["name"]: s for s in map(json.loads, out.read_text().split("\n")[:-1])}
        submit = otel.span("submit traced")
        assert submit.context is not None
        run, inside = spans["run traced"], spans["inside"]
        assert run["trace_id"] == inside["trace_id"] == request.get_span_context().trace_id
        assert run["parent_id"] == submit.context.span_id
        assert run["links"] == [submit.context.span_id]
        assert inside["parent_id"] == run["span_id"]
        assert run["attributes"]["messaging.message.id"] == job.id
        assert run["attributes"][OUTCOME] == "completed"


_BLOCK_OTEL = """
import sys

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
"""

_RUN_A_JOB = """
import sys
import anyio, structlog
structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
import jobkit
import jobkit.telemetry
from jobkit import InvalidInput, JobManager

async def main():
    jobs = JobManager(sweep_interval=None)

    @jobs.handler("work")
    async def work(ctx, payload):
        return payload + 1

    async with jobs:
        job = await jobs.wait((await jobs.submit("work", 1)).id)
        assert job.result == 2, job
        assert "jobkit.traceparent" not in job.labels
    assert jobs._telemetry is None

anyio.run(main)
print("imported:", sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""

_ASK_FOR_IT = """
try:
    JobManager(telemetry=True)
except InvalidInput as exc:
    print("refused:", exc.message)
"""


_GLOBAL_SDK = """
import anyio, structlog
structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from jobkit import JobManager

jobs = JobManager(sweep_interval=None)
jobs.register("work", lambda ctx, payload: None)
exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

async def main():
    async with jobs:
        await jobs.wait((await jobs.submit("work")).id)

anyio.run(main)
print(*sorted(span.name for span in exporter.get_finished_spans()), sep="\\n")
[resource] = reader.get_metrics_data().resource_metrics
[scope] = resource.scope_metrics
print(*[m.name for m in scope.metrics if m.name == "jobkit.jobs.finished"], sep="\\n")
"""


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_without_opentelemetry_jobs_run_and_nothing_is_imported() -> None:
    """opentelemetry not importable: jobs run, no OpenTelemetry module is loaded, and asking
    for telemetry names the extra."""
    out = _python(_BLOCK_OTEL + _RUN_A_JOB + _ASK_FOR_IT)
    assert "imported: []" in out
    assert "refused: telemetry needs opentelemetry-api: install the extra, pip install 'jobkit[otel]'." in out


def test_installed_but_unused_opentelemetry_is_not_imported() -> None:
    """Installed, but the application never imported it (so configured no SDK): the default
    manager runs a job without importing it either."""
    assert "imported: []" in _python(_RUN_A_JOB)
