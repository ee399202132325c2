"""OpenTelemetry for jobkit (``jobkit[otel]``): the options and the names jobkit emits.

jobkit talks to the OpenTelemetry *API* only; the host application owns the SDK, its
exporters and its views. Importing this module never imports OpenTelemetry: the options
below are plain values, read when a :class:`~jobkit.JobManager` is built and started.

``JobManager(telemetry=...)`` takes:

- ``None`` (the default): report when the host configured an SDK by the time the manager
  starts: spans when a global tracer provider is set (``trace.set_tracer_provider``),
  measurements when a global meter provider is. Otherwise (OpenTelemetry not installed,
  or never imported by the application, or the API alone) jobkit imports nothing and the
  started manager has no telemetry: no cost per job.
- ``False``: no telemetry, whatever is installed.
- ``True`` or a :class:`Telemetry`: report, to the given providers or the global ones
  (the API's proxies hand over to an SDK configured later); :class:`~jobkit.InvalidInput`
  naming the extra when ``opentelemetry-api`` is missing.

See docs/telemetry.md for the spans, the instruments and their attributes.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = [
    "CANCEL_LATENCY",
    "DURATION",
    "FINISHED",
    "INSTRUMENTATION_NAME",
    "PENDING",
    "QUEUE_WAIT",
    "RUNNING",
    "STARTED",
    "SUBMITTED",
    "TRACEPARENT_LABEL",
    "TRACESTATE_LABEL",
    "Telemetry",
]

#: The instrumentation scope of jobkit's tracer and meter.
INSTRUMENTATION_NAME = "jobkit"
#: The label carrying the W3C ``traceparent`` of the span that submitted the job.
TRACEPARENT_LABEL = "jobkit.traceparent"
#: The label carrying the W3C ``tracestate`` that went with it (when there was one).
TRACESTATE_LABEL = "jobkit.tracestate"

#: Counter: jobs stored by ``submit`` (not the idempotent repeats), by kind.
SUBMITTED = "jobkit.jobs.submitted"
#: Counter: runs started here, by kind.
STARTED = "jobkit.jobs.started"
#: Counter: runs ended here, and waiting jobs cancelled here, by kind and outcome.
FINISHED = "jobkit.jobs.finished"
#: Histogram (s): a run, from the handler's start to its outcome recorded, by kind and outcome.
DURATION = "jobkit.job.duration"
#: Histogram (s): from submit to the start of the first attempt, by kind.
QUEUE_WAIT = "jobkit.job.queue_wait"
#: Histogram (s): from the run learning of a cancel request to the job recorded cancelled.
CANCEL_LATENCY = "jobkit.job.cancel_latency"
#: Observable up-down counter: runs under way in this process, by kind.
RUNNING = "jobkit.jobs.running"
#: Observable gauge: pending jobs in the store (every kind, every tenant).
PENDING = "jobkit.jobs.pending"


def _positive(instance: Any, attribute: Any, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{attribute.name} must be a positive number of seconds, got {value!r}.")


@attrs.frozen
class Telemetry:
    """How a :class:`~jobkit.JobManager` reports to OpenTelemetry.

    :param tracer_provider: where spans go (None: the global tracer provider).
    :param meter_provider: where measurements go (None: the global meter provider).
    :param tracing: build spans (a run span per run, a submit span per submit).
    :param metrics: record the instruments.
    :param pending_interval: seconds between two counts of the pending jobs in the store
        (the :data:`PENDING` gauge reports the last count).
    """

    tracer_provider: Any = None
    meter_provider: Any = None
    tracing: bool = True
    metrics: bool = True
    pending_interval: float = attrs.field(default=15.0, validator=_positive)
