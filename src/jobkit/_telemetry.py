"""The OpenTelemetry hooks of a manager: a submit span, a run span, the instruments.

Imported only when telemetry is on (``opentelemetry-api`` importable and not turned off):
``import jobkit`` never imports OpenTelemetry. The manager calls :meth:`Tracker.insert`
and :meth:`Tracker.cancelled_waiting`; the worker pool calls :meth:`Tracker.run_started`,
then the returned :class:`RunTelemetry`. None of them raises into jobkit: a failing hook
is logged once per kind of failure and the job goes on.

The submitter's trace context travels in the job's labels (:data:`TRACEPARENT_LABEL`,
:data:`TRACESTATE_LABEL`, W3C Trace Context whatever propagator the host configured), so
it survives every store and reaches a worker in another process unchanged.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import anyio
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._log import get_logger
from ._machine import Outcome, OutcomeKind
from ._records import Job, JobStatus, replace_job
from ._token import CancelSource
from ._version import __version__
from .abc import JobStore, StatusCounter
from .telemetry import (
    CANCEL_LATENCY,
    DURATION,
    FINISHED,
    INSTRUMENTATION_NAME,
    PENDING,
    QUEUE_WAIT,
    RUNNING,
    STARTED,
    SUBMITTED,
    TRACEPARENT_LABEL,
    TRACESTATE_LABEL,
    Telemetry,
)

__all__ = ["RunTelemetry", "Tracker"]

log = get_logger("jobkit")

#: Span and metric attribute names.
KIND = "jobkit.job.kind"
OUTCOME = "jobkit.job.outcome"
MESSAGE_ID = "messaging.message.id"
TENANT = "jobkit.job.tenant"
ATTEMPT = "jobkit.job.attempt"
EXISTING = "jobkit.job.existing"

#: Seconds: from tens of milliseconds to an hour (jobs run longer than requests).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

_PROPAGATOR = TraceContextTextMapPropagator()
_LABEL_OF = {"traceparent": TRACEPARENT_LABEL, "tracestate": TRACESTATE_LABEL}
_MAX_LABEL_VALUE = 1000  # what check_labels allows


class _LabelSetter(Setter[dict[str, str]]):
    def set(self, carrier: dict[str, str], key: str, value: str) -> None:
        label = _LABEL_OF.get(key)
        if label is not None and len(value) <= _MAX_LABEL_VALUE:
            carrier[label] = value


class _LabelGetter(Getter[Mapping[str, str]]):
    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        label = _LABEL_OF.get(key)
        value = None if label is None else carrier.get(label)
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return [key for key, label in _LABEL_OF.items() if label in carrier]


_SET = _LabelSetter()
_GET = _LabelGetter()


def job_context(job: Job) -> Context | None:
    """The trace context a job carries in its labels, or None."""
    labels = job.labels
    if TRACEPARENT_LABEL not in labels:
        return None
    found = _PROPAGATOR.extract(labels, Context(), getter=_GET)
    return found if trace.get_current_span(found).get_span_context().is_valid else None


class _Instruments:
    """One meter's instruments, shared by every manager reporting to it (an SDK warns when
    an instrument is created twice)."""

    def __init__(self, meter: metrics.Meter) -> None:
        seconds: dict[str, Any] = {"unit": "s", "explicit_bucket_boundaries_advisory": BUCKETS}
        self.submitted = meter.create_counter(SUBMITTED, unit="{job}", description="Jobs stored by submit.")
        self.started = meter.create_counter(STARTED, unit="{job}", description="Job runs started.")
        self.finished = meter.create_counter(
            FINISHED, unit="{job}", description="Job runs ended, and waiting jobs cancelled, by outcome."
        )
        self.duration = meter.create_histogram(
            DURATION, description="Job run time, from the handler's start to its outcome recorded.", **seconds
        )
        self.queue_wait = meter.create_histogram(
            QUEUE_WAIT, description="From submit to the start of the job's first attempt.", **seconds
        )
        self.cancel_latency = meter.create_histogram(
            CANCEL_LATENCY,
            description="From a running job's cancel request reaching its run to the job cancelled.",
            **seconds,
        )
        #: The started managers reporting here: each knows its runs and its store's count.
        self.sources: weakref.WeakSet[Tracker] = weakref.WeakSet()
        # Observed, not counted up and down: two measurements less per run.
        meter.create_observable_up_down_counter(
            RUNNING, callbacks=[self._observe_running], unit="{job}", description="Job runs under way here."
        )
        meter.create_observable_gauge(
            PENDING, callbacks=[self._observe_pending], unit="{job}", description="Pending jobs in the store."
        )

    def _observe_running(self, options: CallbackOptions) -> Iterable[Observation]:
        # Called from the SDK's collection thread: copies, each made under the GIL at once.
        total: dict[str, int] = {}
        for tracker in list(self.sources):
            for kind, count in dict(tracker.running).items():
                total[kind] = total.get(kind, 0) + count
        return [Observation(count, {KIND: kind}) for kind, count in total.items()]

    def _observe_pending(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(t.pending) for t in list(self.sources) if t.pending is not None]


#: Instruments per meter provider (a host has one, tests a few).
_INSTRUMENTS: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()
_INSTRUMENTS_BY_ID: dict[int, _Instruments] = {}  # providers that cannot be weakly referenced


def _instruments(provider: Any) -> _Instruments:
    try:
        found = _INSTRUMENTS.get(provider)
    except TypeError:
        found = _INSTRUMENTS_BY_ID.get(id(provider))
    if found is None:
        meter = provider.get_meter(INSTRUMENTATION_NAME, __version__)
        found = _Instruments(meter)
        try:
            _INSTRUMENTS[provider] = found
        except TypeError:
            _INSTRUMENTS_BY_ID[id(provider)] = found
    return found


def _meter_configured(provider: object) -> bool:
    """False for the API's stand-in before ``metrics.set_meter_provider`` (a private class,
    so read by name: anything else counts as configured, the safe side)."""
    return type(provider).__name__ != "_ProxyMeterProvider"


class Tracker:
    """A manager's telemetry: its tracer, its instruments, and what it last counted."""

    def __init__(self, options: Telemetry, *, auto: bool) -> None:
        self._options = options
        self._auto = auto
        # Decided at start(): the host configures its SDK at start-up, maybe after building
        # the manager (a module-level JobManager), but before it starts.
        self.tracing = False
        self._tracer: trace.Tracer | None = None
        self._m: _Instruments | None = None
        self._kind_attrs: dict[str, dict[str, str]] = {}
        self._outcome_attrs: dict[tuple[str, str], dict[str, str]] = {}
        #: The store's pending jobs at the last count (None: not counted yet).
        self.pending: int | None = None
        #: Runs under way here, by kind (the kinds that ran stay, at 0).
        self.running: dict[str, int] = {}
        self._failed_hooks: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> bool:
        """Take the providers; False when there is nothing to report to (the default, and
        no SDK configured): the manager then drops this tracker and pays nothing per job."""
        options = self._options
        if options.tracing:
            tracer_provider = options.tracer_provider
            if tracer_provider is None:
                tracer_provider = trace.get_tracer_provider()
                if self._auto and isinstance(tracer_provider, trace.ProxyTracerProvider):
                    tracer_provider = None  # no SDK configured: no span to build
            if tracer_provider is not None:
                self._tracer = tracer_provider.get_tracer(INSTRUMENTATION_NAME, __version__)
        if options.metrics:
            meter_provider = options.meter_provider
            if meter_provider is None:
                meter_provider = metrics.get_meter_provider()
                if self._auto and not _meter_configured(meter_provider):
                    meter_provider = None
            if meter_provider is not None:
                self._m = _instruments(meter_provider)
        self.tracing = self._tracer is not None
        if self._m is not None:
            self._m.sources.add(self)
        return self.tracing or self._m is not None

    async def count_pending_forever(self, store: JobStore) -> None:
        """Count the store's pending jobs for the gauge now, then every ``pending_interval``."""
        if self._m is None or not isinstance(store, StatusCounter):
            return
        while True:
            await self.count_pending(store)
            await anyio.sleep(self._options.pending_interval)

    async def count_pending(self, store: StatusCounter) -> None:
        """Count the store's pending jobs once; the gauge reports the last count."""
        try:
            counts = await store.count_jobs(tenant=None, kind=None)
        except Exception:
            log.warning("could not count the pending jobs for telemetry; retrying later", exc_info=True)
            return
        self.pending = counts.get(JobStatus.PENDING, 0)

    def stop(self) -> None:
        if self._m is not None:
            self._m.sources.discard(self)

    def _hook_failed(self, where: str) -> None:
        if where not in self._failed_hooks:
            self._failed_hooks.add(where)
            log.exception("telemetry hook failed; the job goes on", hook=where)

    def _kind(self, kind: str) -> dict[str, str]:
        found = self._kind_attrs.get(kind)
        if found is None:
            found = self._kind_attrs[kind] = {KIND: kind}
        return found

    def _kind_outcome(self, kind: str, outcome: str) -> dict[str, str]:
        found = self._outcome_attrs.get((kind, outcome))
        if found is None:
            found = self._outcome_attrs[kind, outcome] = {KIND: kind, OUTCOME: outcome}
        return found

    # -- submit ------------------------------------------------------------------------

    async def insert(self, store: JobStore, job: Job) -> tuple[Job, Job | None]:
        """``store.insert(job)`` in a ``submit {kind}`` span whose context the job carries:
        the job as stored, and the holder of its idempotency key (None: stored)."""
        tracer = self._tracer
        if tracer is None:
            holder = await store.insert(job)
        else:
            # A traceparent given in the labels (a producer elsewhere) wins over the current span.
            span = tracer.start_span(
                f"submit {job.kind}",
                context=job_context(job),
                kind=SpanKind.PRODUCER,
                attributes=_span_attributes(job, "create"),
            )
            labels = job.labels
            carrier = {k: v for k, v in labels.items() if k not in (TRACEPARENT_LABEL, TRACESTATE_LABEL)}
            _PROPAGATOR.inject(carrier, trace.set_span_in_context(span, Context()), setter=_SET)
            job = replace_job(job, labels=MappingProxyType(carrier))
            with trace.use_span(span, end_on_exit=True, record_exception=True, set_status_on_exception=True):
                holder = await store.insert(job)
                if holder is not None:  # the idempotency key's holder: nothing was stored
                    span.set_attribute(EXISTING, True)
                    span.set_attribute(MESSAGE_ID, holder.id)
        if holder is None and self._m is not None:
            self._m.submitted.add(1, self._kind(job.kind))
        return job, holder

    def cancelled_waiting(self, job: Job) -> None:
        """A pending or scheduled job was cancelled here: it finished without a run."""
        if self._m is not None:
            self._m.finished.add(1, self._kind_outcome(job.kind, "cancelled"))

    # -- runs --------------------------------------------------------------------------

    def run_started(self, job: Job) -> RunTelemetry | None:
        """A run of ``job`` starts in this task: its span (made current), the start counts."""
        try:
            return RunTelemetry(self, job)
        except Exception:
            self._hook_failed("run_started")
            return None


class RunTelemetry:
    """One run's span and clock; :meth:`end` once its outcome is recorded (in the same task)."""

    __slots__ = ("_start", "_stopped_at", "_token", "_tracker", "span")

    def __init__(self, tracker: Tracker, job: Job) -> None:
        self._tracker = tracker
        self._stopped_at: float | None = None
        self._token: object | None = None
        self.span: trace.Span | None = None
        m = tracker._m
        if m is not None:
            attrs = tracker._kind(job.kind)
            m.started.add(1, attrs)
            running = tracker.running
            running[job.kind] = running.get(job.kind, 0) + 1
            if job.attempts == 1 and job.started_at is not None:
                m.queue_wait.record(max(0.0, (job.started_at - job.created_at).total_seconds()), attrs)
        tracer = tracker._tracer
        if tracer is not None:
            parent = job_context(job)
            attributes = _span_attributes(job, "process")
            attributes[ATTEMPT] = job.attempts
            # The run continues the submitter's trace (its child) and links to it, as the
            # messaging conventions ask of a "process" span.
            links = None
            if parent is not None:
                links = [Link(trace.get_current_span(parent).get_span_context())]
            span = tracer.start_span(
                f"run {job.kind}",
                context=parent if parent is not None else Context(),  # never the runner task's own
                kind=SpanKind.CONSUMER,
                attributes=attributes,
                links=links,
            )
            self.span = span
            self._token = otel_context.attach(trace.set_span_in_context(span, Context()))
        self._start = time.perf_counter()

    def failed(self, exc: BaseException) -> None:
        """The handler raised ``exc`` (or timed out): recorded on the span."""
        span = self.span
        if span is not None:
            try:
                span.record_exception(exc)
            except Exception:  # pragma: no cover - an exporter's bug
                self._tracker._hook_failed("failed")

    def stopping(self, reason: str | None, source: CancelSource) -> None:
        """The run's token was set: a cancel request, a timeout or the shutdown."""
        if self._stopped_at is None:
            self._stopped_at = time.perf_counter()
        span = self.span
        if span is not None:
            attributes: dict[str, str] = {"jobkit.cancel.source": source.value}
            if reason is not None:
                attributes["jobkit.cancel.reason"] = reason
            try:
                span.add_event("jobkit.cancel", attributes)
            except Exception:  # pragma: no cover - an exporter's bug
                self._tracker._hook_failed("stopping")

    def end(self, job: Job, outcome: Outcome, lost: bool) -> None:
        """The run is over and ``job`` is what was recorded (unchanged when nothing was)."""
        try:
            self._end(job, outcome, lost)
        except Exception:
            self._tracker._hook_failed("end")

    def _end(self, job: Job, outcome: Outcome, lost: bool) -> None:
        token, self._token = self._token, None
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - self._start
        name = _outcome_name(job, outcome, lost)
        tracker = self._tracker
        m = tracker._m
        if m is not None:
            attrs = tracker._kind_outcome(job.kind, name)
            tracker.running[job.kind] -= 1
            m.finished.add(1, attrs)
            m.duration.record(elapsed, attrs)
            if name == "cancelled" and self._stopped_at is not None:
                m.cancel_latency.record(time.perf_counter() - self._stopped_at, tracker._kind(job.kind))
        span = self.span
        if span is not None:
            span.set_attribute(OUTCOME, name)
            if name in ("failed", "retry"):
                span.set_status(Status(StatusCode.ERROR, job.error or outcome.error))
            elif name == "lost":
                span.set_status(Status(StatusCode.ERROR, "the job's lease was lost"))
            span.end()


def _span_attributes(job: Job, operation: str) -> dict[str, Any]:
    # The messaging conventions' names where they fit (the kind is the destination, the
    # job id the message id); jobkit's own for the rest. Few: each costs an SDK time.
    attributes: dict[str, Any] = {
        "messaging.system": "jobkit",
        "messaging.operation.type": operation,
        "messaging.destination.name": job.kind,
        MESSAGE_ID: job.id,
    }
    if job.tenant is not None:
        attributes[TENANT] = job.tenant
    return attributes


_OUTCOME_OF_STATUS = {
    JobStatus.COMPLETED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
    JobStatus.SCHEDULED: "retry",  # failed, another attempt scheduled
    JobStatus.PENDING: "interrupted",  # back in the queue (shutdown)
}


def _outcome_name(job: Job, outcome: Outcome, lost: bool) -> str:
    if lost:
        return "lost"
    found = _OUTCOME_OF_STATUS.get(job.status)
    if found is None:  # still running: the outcome was not written here
        return "interrupted" if outcome.kind is OutcomeKind.INTERRUPTED else "lost"
    return found
