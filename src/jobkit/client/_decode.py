"""JSON from the REST API back into jobkit's records, and error bodies back into its errors.

The inverse of :mod:`jobkit._codec` and of the web integrations' error translation.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from .._errors import (
    ArtifactNotFound,
    BackendError,
    InvalidInput,
    InvalidState,
    JobkitError,
    JobNotFound,
    PermissionDenied,
    Unauthenticated,
)
from .._records import (
    Actor,
    AuditAction,
    AuditRecord,
    EventType,
    Job,
    JobEvent,
    JobStatus,
    Retry,
    Schedule,
)

__all__ = [
    "NotSupported",
    "actor_from_json",
    "audit_from_json",
    "error_from_response",
    "event_from_json",
    "job_from_json",
    "schedule_from_json",
]


class NotSupported(JobkitError, NotImplementedError):
    """The server has no route for this call or argument (an older server, a wrong base URL,
    or something the REST API does not offer, such as ``include_deleted``). Nothing was changed."""

    code = "not_supported"


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _required_time(value: Any) -> datetime:
    return datetime.fromisoformat(value)


def _duration(value: Any) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


def job_from_json(body: Mapping[str, Any]) -> Job:
    """A :class:`~jobkit.Job` from its JSON (``job_to_json``)."""
    retry = body.get("retry")
    return Job(
        id=body["id"],
        kind=body["kind"],
        status=JobStatus(body["status"]),
        payload=body.get("payload"),
        tenant=body.get("tenant"),
        priority=body.get("priority", 0),
        progress=body.get("progress"),
        progress_message=body.get("progress_message"),
        result=body.get("result"),
        error=body.get("error"),
        cancel_reason=body.get("cancel_reason"),
        created_at=_required_time(body["created_at"]),
        started_at=_time(body.get("started_at")),
        finished_at=_time(body.get("finished_at")),
        expires_at=_time(body.get("expires_at")),
        deleted_at=_time(body.get("deleted_at")),
        version=body.get("version", 1),
        attempts=body.get("attempts", 0),
        max_attempts=body.get("max_attempts", 1),
        ttl=_duration(body.get("ttl")),
        timeout=_duration(body.get("timeout")),
        labels=body.get("labels") or None,
        run_at=_time(body.get("run_at")),
        idempotency_key=body.get("idempotency_key"),
        retry=None if retry is None else Retry.from_json(retry),
    )


def schedule_from_json(body: Mapping[str, Any]) -> Schedule:
    """A :class:`~jobkit.Schedule` from its JSON (``schedule_to_json``)."""
    return Schedule(
        name=body["name"],
        kind=body["kind"],
        payload=body.get("payload"),
        cron=body["cron"],
        timezone=body.get("timezone", "UTC"),
        tenant=body.get("tenant"),
        priority=body.get("priority", 0),
        next_run_at=_required_time(body["next_run_at"]),
        created_at=_required_time(body["created_at"]),
    )


def event_from_json(body: Mapping[str, Any]) -> JobEvent:
    """A :class:`~jobkit.JobEvent` from its JSON (``event_to_json``)."""
    status = body.get("status")
    return JobEvent(
        type=EventType(body["type"]),
        job_id=body.get("job_id") or "",
        tenant=body.get("tenant"),
        status=None if status is None else JobStatus(status),
        at=_required_time(body["at"]),
        data=body.get("data") or None,
    )


def audit_from_json(body: Mapping[str, Any]) -> AuditRecord:
    """An :class:`~jobkit.AuditRecord` from its JSON (as ``jobkit audit --json`` writes it)."""
    return AuditRecord(
        id=body["id"],
        at=_required_time(body["at"]),
        action=AuditAction(body["action"]),
        actor_id=body.get("actor_id"),
        tenant=body.get("tenant"),
        job_id=body.get("job_id"),
        details=body.get("details") or None,
    )


def actor_from_json(body: Mapping[str, Any]) -> Actor | None:
    """The actor of ``GET /me``; None when the server treats the caller as the trusted host."""
    if body.get("host") or body.get("id") is None:
        return None
    return Actor(id=body["id"], tenant=body.get("tenant"), roles=frozenset(body.get("roles") or ()))


#: The status each HTTP error class stands for when a body names no code jobkit knows.
_BY_STATUS: tuple[tuple[int, type[JobkitError]], ...] = (
    (401, Unauthenticated),
    (403, PermissionDenied),
    (404, JobNotFound),
    (409, InvalidState),
    (400, InvalidInput),
    (413, InvalidInput),
    (422, InvalidInput),
)


def error_from_response(
    status: int,
    body: Any,
    *,
    what: str,
    job_id: str | None = None,
    name: str | None = None,
) -> JobkitError:
    """The jobkit error for an error response: from the body's ``code`` first (the web
    integrations' ``{"error": {"code", "message"}}``), else from the status.

    :param what: the request, e.g. ``"GET /jobs/abc"``, for messages the server did not give.
    :param job_id: the job (or schedule name) asked about, for :class:`~jobkit.JobNotFound`.
    :param name: the artifact asked about, for :class:`~jobkit.ArtifactNotFound`.
    """
    code, message = None, None
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        code = body["error"].get("code")
        message = body["error"].get("message")
    if not isinstance(message, str) or not message:
        message = f"{what} failed with HTTP status {status}."
    if code == "not_found" and status == 404:  # no such route: not a missing job
        return NotSupported(
            f"The server has no route for {what} ({message}) Check the base URL (it ends with the "
            "prefix the job router is mounted at, e.g. /api/v1) and that the server's jobkit offers it."
        )
    if code == ArtifactNotFound.code:
        error: JobkitError = ArtifactNotFound(job_id or "", name or "")
        error.message = message
        error.args = (message,)
        return error
    known: dict[str, type[JobkitError]] = {
        cls.code: cls
        for cls in (Unauthenticated, JobNotFound, InvalidState, PermissionDenied, InvalidInput, BackendError)
    }
    known["payload_too_large"] = InvalidInput
    cls = known.get(code or "")
    if cls is None:
        cls = next((found for number, found in _BY_STATUS if number == status), None)
    if cls is None:
        cls = BackendError if status >= 500 else JobkitError
    if issubclass(cls, JobNotFound):
        return cls(job_id or "", message)
    return cls(message)
