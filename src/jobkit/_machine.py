"""The job state machine: pure functions from (job, event, time) to the next job.

No clock, no I/O, no store: every status change in jobkit goes through here, and the
manager is the only caller. An event that is illegal in the job's status raises
:class:`InvalidState` with a message that says what to do instead.

=================  ===========================================================================
from               event -> next status
=================  ===========================================================================
scheduled          due -> pending; cancel -> cancelled
pending            start -> running; cancel -> cancelled
running            cancel -> cancelling; finish ok -> completed; finish error -> scheduled (a
                   Retry covers it, attempts remain) or failed; observed cancel -> cancelled;
                   interrupted -> pending; lease lost -> pending (attempts remain) or failed
cancelling         cancel -> cancelling (same); finish ok -> completed; finish error -> failed;
                   observed cancel, interrupted, lease lost -> cancelled
failed, cancelled  retry (manual) -> pending, or scheduled with ``run_at``
completed          nothing (a retry is an error: submit a new job)
=================  ===========================================================================

Every other pair raises :class:`InvalidState`. A failure goes to ``scheduled`` only when the
worker found a :class:`~jobkit.Retry` that covers it (``retry_after``) and attempts remain;
the wait itself is the worker's choice (it holds the randomness), so these functions stay pure.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from ._errors import InvalidState
from ._policies import Retention
from ._records import ACTIVE, EventType, Job, JobStatus, replace_job

__all__ = [
    "WORKER_LOST",
    "Outcome",
    "OutcomeKind",
    "cancel",
    "check_deletable",
    "complete",
    "conclude",
    "due",
    "event_for",
    "fail",
    "interrupt",
    "lose_lease",
    "mark_deleted",
    "observe_cancel",
    "report_progress",
    "retry",
    "set_priority",
    "start",
    "store_result",
]

WORKER_LOST = "worker lost"

_S = JobStatus.SCHEDULED
_P = JobStatus.PENDING
_R = JobStatus.RUNNING
_C = JobStatus.CANCELLING


def _expiry(now: datetime, keep: timedelta | None) -> datetime | None:
    if keep is None:
        return None
    try:
        return now + keep
    except OverflowError:  # a stored duration past the bound: keep it as long as time goes
        return datetime.max.replace(tzinfo=UTC)


def _finish(job: Job, status: JobStatus, now: datetime, retention: Retention, **changes: Any) -> Job:
    keep = job.ttl if job.ttl is not None else retention.for_status(status)
    return replace_job(
        job,
        status=status,
        finished_at=now,
        expires_at=_expiry(now, keep),
        version=job.version + 1,
        **changes,
    )


def _require_active(job: Job, doing: str) -> None:
    if job.status not in ACTIVE:
        raise InvalidState(f"Cannot {doing} a {job.status.value} job: it is not running.")


def due(job: Job) -> Job:
    """A scheduled job's ``run_at`` came: ``scheduled -> pending``, keeping its priority."""
    if job.status is not _S:
        raise InvalidState(f"Cannot make a {job.status.value} job due: only scheduled jobs wait.")
    return replace_job(job, status=_P, run_at=None, version=job.version + 1)


def start(job: Job, now: datetime) -> Job:
    """A worker takes a pending job: ``pending -> running``; counts an attempt."""
    if job.status is not _P:
        raise InvalidState(f"Cannot start a {job.status.value} job: only pending jobs are started.")
    return replace_job(
        job,
        status=_R,
        started_at=now,
        attempts=job.attempts + 1,
        progress=None,
        progress_message=None,
        version=job.version + 1,
    )


def cancel(job: Job, now: datetime, retention: Retention, reason: str | None = None) -> Job:
    """Ask for cancellation.

    A scheduled or pending job is cancelled at once; a running one becomes ``cancelling``
    (the handler stops at its next checkpoint); a cancelling one is returned unchanged
    (idempotent).
    """
    if job.status is _P or job.status is _S:
        return _finish(job, JobStatus.CANCELLED, now, retention, cancel_reason=reason, run_at=None)
    if job.status is _R:
        return replace_job(job, status=_C, cancel_reason=reason, version=job.version + 1)
    if job.status is _C:
        return job
    raise InvalidState(
        f"Cannot cancel a {job.status.value} job: it has already finished. "
        "Delete it instead if you want it gone."
    )


def complete(job: Job, now: datetime, retention: Retention, result: Any = None) -> Job:
    """The handler returned: ``running|cancelling -> completed`` (the work happened). An error
    of an earlier attempt (a retry) is cleared: the job succeeded."""
    _require_active(job, "complete")
    return _finish(job, JobStatus.COMPLETED, now, retention, result=result, progress=1.0, error=None)


def fail(
    job: Job,
    now: datetime,
    retention: Retention,
    error: str,
    retry_after: timedelta | None = None,
    max_attempts: int | None = None,
) -> Job:
    """The handler raised or timed out: ``running|cancelling -> failed``; a partial result is kept.

    With ``retry_after`` (a :class:`~jobkit.Retry` covers the failure) a running job with
    attempts left goes to ``scheduled`` instead, due ``retry_after`` from now, its error kept.
    ``max_attempts`` raises the job's bound (a handler's Retry the submit did not know of).
    A cancelling job always fails: somebody asked it to stop.
    """
    _require_active(job, "fail")
    limit = job.max_attempts if max_attempts is None else max(job.max_attempts, max_attempts)
    if retry_after is not None and job.status is _R and job.attempts < limit:
        return replace_job(
            job,
            status=_S,
            max_attempts=limit,
            run_at=_expiry(now, retry_after),
            error=error,
            progress=None,
            progress_message=None,
            version=job.version + 1,
        )
    return _finish(job, JobStatus.FAILED, now, retention, error=error)


def retry(job: Job, now: datetime, run_at: datetime | None = None) -> Job:
    """A manual retry: ``failed|cancelled -> pending`` (``scheduled`` with ``run_at``).

    One more attempt: ``max_attempts`` is raised when the attempts were used up;
    ``finished_at`` and ``expires_at`` are cleared; the last error and result stay until the
    next outcome.
    """
    if job.status is JobStatus.COMPLETED:
        raise InvalidState("Cannot retry a completed job: it succeeded. Submit a new job instead.")
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise InvalidState(
            f"Cannot retry a {job.status.value} job: only failed and cancelled jobs are retried."
        )
    if job.deleted_at is not None:
        raise InvalidState("Cannot retry a deleted job.")
    return replace_job(
        job,
        status=_P if run_at is None else _S,
        run_at=run_at,
        max_attempts=max(job.max_attempts, job.attempts + 1),
        finished_at=None,
        expires_at=None,
        cancel_reason=None,
        version=job.version + 1,
    )


def observe_cancel(job: Job, now: datetime, retention: Retention) -> Job:
    """The handler stopped because of a cancel: ``running|cancelling -> cancelled``."""
    _require_active(job, "cancel")
    return _finish(job, JobStatus.CANCELLED, now, retention)


def interrupt(job: Job, now: datetime, retention: Retention) -> Job:
    """The manager shut down under the job.

    A running job goes back to ``pending`` (nobody asked to cancel it); a cancelling
    one ends ``cancelled``.
    """
    _require_active(job, "interrupt")
    if job.status is _C:
        return _finish(job, JobStatus.CANCELLED, now, retention)
    return replace_job(job, status=_P, progress=None, progress_message=None, version=job.version + 1)


def lose_lease(job: Job, now: datetime, retention: Retention) -> Job:
    """The worker running the job disappeared (its lease expired).

    A running job goes back to ``pending`` while ``attempts < max_attempts``, else it
    fails with ``"worker lost"``; a cancelling one ends ``cancelled``.
    """
    _require_active(job, "recover")
    if job.status is _C:
        return _finish(job, JobStatus.CANCELLED, now, retention)
    if job.attempts < job.max_attempts:
        return replace_job(job, status=_P, progress=None, progress_message=None, version=job.version + 1)
    return _finish(job, JobStatus.FAILED, now, retention, error=WORKER_LOST)


def set_priority(job: Job, priority: int) -> Job:
    """Change the priority of a pending job."""
    if job.status is not _P:
        raise InvalidState(f"Cannot change priority of a {job.status.value} job.")
    if priority == job.priority:
        return job
    return replace_job(job, priority=priority, version=job.version + 1)


def report_progress(job: Job, fraction: float | None, message: str | None) -> Job:
    """Record progress of a running job."""
    _require_active(job, "report progress of")
    return replace_job(job, progress=fraction, progress_message=message, version=job.version + 1)


def store_result(job: Job, result: Any) -> Job:
    """Record a (partial) result of a running job; kept however the job ends."""
    _require_active(job, "store a result for")
    return replace_job(job, result=result, version=job.version + 1)


_DELETE_MESSAGES = {
    JobStatus.RUNNING: "Cannot delete running job. Use cancel instead.",
    JobStatus.CANCELLING: "Cannot delete job while cancellation is in progress.",
    JobStatus.PENDING: "Cannot delete pending job. Use cancel instead.",
    JobStatus.SCHEDULED: "Cannot delete scheduled job. Use cancel instead.",
}


def check_deletable(job: Job, deletable: Collection[JobStatus]) -> None:
    """Raise :class:`InvalidState` unless the delete policy allows deleting ``job`` now."""
    if job.status in deletable and job.status not in ACTIVE:
        return
    message = _DELETE_MESSAGES.get(job.status)
    if message is None:
        message = f"Cannot delete {job.status.value} job: the delete policy does not allow it."
    raise InvalidState(message)


def mark_deleted(job: Job, now: datetime) -> Job:
    """Soft-delete a finished job: set ``deleted_at``; it no longer expires (purging is separate)."""
    if not job.is_terminal:
        raise InvalidState(f"Cannot delete {job.status.value} job. Use cancel instead.")
    return replace_job(job, deleted_at=now, expires_at=None, version=job.version + 1)


class OutcomeKind(enum.StrEnum):
    """How a run of a handler ended."""

    #: The handler returned (``result`` holds what it returned).
    COMPLETED = "completed"
    #: The handler raised or timed out (``error`` says why).
    FAILED = "failed"
    #: The handler stopped because the job was cancelled.
    CANCELLED = "cancelled"
    #: The manager shut down under the handler.
    INTERRUPTED = "interrupted"


@attrs.frozen(kw_only=True)
class Outcome:
    """The end of one run, as the worker saw it; :func:`conclude` turns it into the next job."""

    kind: OutcomeKind
    result: Any = attrs.field(default=None, repr=False)
    error: str | None = None
    #: For a failure a Retry covers: how long until the next attempt.
    retry_after: timedelta | None = None
    #: With ``retry_after``: the Retry's attempts, when it is the handler's (not on the job).
    max_attempts: int | None = None

    @classmethod
    def completed(cls, result: Any) -> Outcome:
        return cls(kind=OutcomeKind.COMPLETED, result=result)

    @classmethod
    def failed(
        cls, error: str, retry_after: timedelta | None = None, max_attempts: int | None = None
    ) -> Outcome:
        return cls(kind=OutcomeKind.FAILED, error=error, retry_after=retry_after, max_attempts=max_attempts)


CANCELLED_OUTCOME = Outcome(kind=OutcomeKind.CANCELLED)
INTERRUPTED_OUTCOME = Outcome(kind=OutcomeKind.INTERRUPTED)


def conclude(job: Job, outcome: Outcome, now: datetime, retention: Retention) -> Job:
    """The job after its run ended with ``outcome``.

    :raises InvalidState: the job is not running or cancelling.
    """
    kind = outcome.kind
    if kind is OutcomeKind.COMPLETED:
        return complete(job, now, retention, outcome.result)
    if kind is OutcomeKind.FAILED:
        return fail(job, now, retention, outcome.error or "failed", outcome.retry_after, outcome.max_attempts)
    if kind is OutcomeKind.CANCELLED:
        return observe_cancel(job, now, retention)
    return interrupt(job, now, retention)


_EVENT_FOR_STATUS = {
    JobStatus.SCHEDULED: EventType.SCHEDULED,
    JobStatus.PENDING: EventType.REQUEUED,
    JobStatus.RUNNING: EventType.STARTED,
    JobStatus.CANCELLING: EventType.CANCELLING,
    JobStatus.COMPLETED: EventType.COMPLETED,
    JobStatus.FAILED: EventType.FAILED,
    JobStatus.CANCELLED: EventType.CANCELLED,
}


def event_for(job: Job) -> EventType:
    """The event that announces a job that has just moved to its status."""
    return _EVENT_FOR_STATUS[job.status]
