"""JSON encoding of jobkit's records, shared by the web integrations and the CLI.

A job travels with the :class:`~jobkit.Job` field names: datetimes as ISO 8601 in UTC,
the status as its lowercase value, ``ttl`` and ``timeout`` in seconds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from ._records import AuditRecord, Job, JobEvent, Schedule

__all__ = ["dumps", "event_to_json", "job_to_json", "schedule_to_json"]

_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; NaN and infinities are refused (they are not JSON)."""
    return _encode(value).encode()


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat()


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def job_to_json(job: Job) -> dict[str, Any]:
    """A job as a JSON object with the :class:`~jobkit.Job` field names.

    Datetimes are ISO 8601 in UTC, the status is its lowercase value, ``ttl`` and
    ``timeout`` are seconds, ``retry`` is :meth:`Retry.to_json` (or None). A plain
    function on purpose: this is the hot path of ``GET /jobs/{id}``.
    """
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status.value,
        "payload": job.payload,
        "tenant": job.tenant,
        "priority": job.priority,
        "progress": job.progress,
        "progress_message": job.progress_message,
        "result": job.result,
        "error": job.error,
        "cancel_reason": job.cancel_reason,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "expires_at": _iso(job.expires_at),
        "deleted_at": _iso(job.deleted_at),
        "version": job.version,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "labels": dict(job.labels),
        "ttl": _seconds(job.ttl),
        "timeout": _seconds(job.timeout),
        "run_at": _iso(job.run_at),
        "idempotency_key": job.idempotency_key,
        "retry": None if job.retry is None else job.retry.to_json(),
    }


def schedule_to_json(schedule: Schedule) -> dict[str, Any]:
    """A :class:`~jobkit.Schedule` as a JSON object with its field names (datetimes ISO 8601 UTC)."""
    return {
        "name": schedule.name,
        "kind": schedule.kind,
        "payload": schedule.payload,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "tenant": schedule.tenant,
        "priority": schedule.priority,
        "next_run_at": _iso(schedule.next_run_at),
        "created_at": _iso(schedule.created_at),
    }


def audit_to_json(record: AuditRecord) -> dict[str, Any]:
    """An :class:`~jobkit.AuditRecord` as a JSON object with its field names (``at`` ISO 8601 UTC)."""
    return {
        "id": record.id,
        "at": _iso(record.at),
        "action": record.action.value,
        "actor_id": record.actor_id,
        "tenant": record.tenant,
        "job_id": record.job_id,
        "details": dict(record.details),
    }


def event_to_json(event: JobEvent) -> dict[str, Any]:
    """A :class:`~jobkit.JobEvent` as a JSON object with its field names."""
    return {
        "type": event.type.value,
        "job_id": event.job_id,
        "tenant": event.tenant,
        "status": None if event.status is None else event.status.value,
        "at": _iso(event.at),
        "data": dict(event.data),
    }
