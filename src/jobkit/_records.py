"""The records jobkit hands out: jobs, actors, events, audit records, pages and reports.

All are frozen, slotted attrs classes; change a job with :func:`attrs.evolve` (the
manager uses the faster private ``replace_job``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

import attrs

from ._errors import InvalidInput

__all__ = [
    "Actor",
    "AuditAction",
    "AuditRecord",
    "EMPTY_MAPPING",
    "MAX_DURATION",
    "EventType",
    "Job",
    "JobEvent",
    "JobStatus",
    "Page",
    "SweepReport",
    "build_job",
    "replace_job",
    "to_duration",
]

#: One shared, read-only empty mapping for jobs without labels (saves memory per job).
EMPTY_MAPPING: Mapping[str, Any] = MappingProxyType({})


class JobStatus(enum.StrEnum):
    """Where a job is in its lifecycle. ``completed``, ``failed`` and ``cancelled`` are terminal."""

    #: Waiting for a worker.
    PENDING = "pending"
    #: A handler is running it.
    RUNNING = "running"
    #: Cancel was requested while it ran; the handler has not stopped yet.
    CANCELLING = "cancelling"
    #: The handler returned normally.
    COMPLETED = "completed"
    #: The handler raised, timed out or its worker was lost.
    FAILED = "failed"
    #: It was cancelled before or while running.
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for ``completed``, ``failed`` and ``cancelled``: nothing changes the status again."""
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE = frozenset({JobStatus.RUNNING, JobStatus.CANCELLING})


class EventType(enum.StrEnum):
    """The kinds of :class:`JobEvent`."""

    #: A job was stored.
    SUBMITTED = "submitted"
    #: A worker started it.
    STARTED = "started"
    #: The handler reported progress.
    PROGRESS = "progress"
    #: Cancellation was requested while it ran.
    CANCELLING = "cancelling"
    #: It completed.
    COMPLETED = "completed"
    #: It failed.
    FAILED = "failed"
    #: It was cancelled.
    CANCELLED = "cancelled"
    #: It went back to ``pending`` (shutdown, or a lost worker with attempts left).
    REQUEUED = "requeued"
    #: Its priority changed.
    PRIORITY_CHANGED = "priority_changed"
    #: One of its artifacts was deleted.
    ARTIFACT_DELETED = "artifact_deleted"
    #: The job was deleted (hard or soft).
    DELETED = "deleted"
    #: This subscriber was too slow and missed ``data["missed"]`` events.
    OVERFLOW = "overflow"


class AuditAction(enum.StrEnum):
    """The management actions that leave an :class:`AuditRecord`."""

    CANCEL = "cancel"
    DELETE = "delete"
    DELETE_ARTIFACT = "delete_artifact"
    SET_PRIORITY = "set_priority"
    EXPIRE = "expire"
    PURGE = "purge"
    RECOVER = "recover"


#: The longest duration jobkit accepts anywhere (ttl, timeout, delays, retention, intervals):
#: 100 years. Anything longer is :class:`InvalidInput`, so ``now + duration`` never overflows.
MAX_DURATION = timedelta(days=36_525)


def to_duration(value: timedelta | float | None) -> timedelta | None:
    """Convert seconds or a timedelta to a timedelta; reject negatives, NaN, booleans and
    anything longer than :data:`MAX_DURATION`."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise InvalidInput(f"A duration cannot be negative, got {value}.")
        if value > MAX_DURATION:
            raise InvalidInput(
                f"A duration can be at most {MAX_DURATION.days} days (100 years), got {value}."
            )
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(
            f"A duration must be a number of seconds or a timedelta, got {type(value).__name__}."
        )
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(f"A duration must be a finite, non-negative number, got {value!r}.")
    if value > MAX_DURATION.total_seconds():
        raise InvalidInput(
            f"A duration can be at most {MAX_DURATION.total_seconds():.0f} seconds (100 years), "
            f"got {value!r}."
        )
    return timedelta(seconds=value)


def _to_status(value: JobStatus | str) -> JobStatus:
    return value if isinstance(value, JobStatus) else JobStatus(value)


def _to_labels(value: Mapping[str, str] | None) -> Mapping[str, str]:
    if not value:
        return EMPTY_MAPPING
    return MappingProxyType(dict(value))


def _to_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not value:
        return EMPTY_MAPPING
    return value if isinstance(value, MappingProxyType) else MappingProxyType(dict(value))


@attrs.frozen(kw_only=True)
class Job:
    """One job: what to run, where it is in its lifecycle, and what it produced.

    ``version`` grows by one on every change; stores use it for compare-and-swap.
    """

    id: str
    kind: str
    status: JobStatus = attrs.field(converter=_to_status)
    payload: Any = attrs.field(default=None, repr=False)
    tenant: str | None = None
    priority: int = 0
    progress: float | None = None
    progress_message: str | None = None
    result: Any = attrs.field(default=None, repr=False)
    error: str | None = None
    cancel_reason: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = None
    deleted_at: datetime | None = None
    version: int = 1
    attempts: int = 0
    max_attempts: int = 1
    ttl: timedelta | None = None
    timeout: timedelta | None = None
    labels: Mapping[str, str] = attrs.field(default=EMPTY_MAPPING, converter=_to_labels)

    @property
    def is_terminal(self) -> bool:
        """True when the job has finished (completed, failed or cancelled)."""
        return self.status in TERMINAL


_JOB_FIELDS = tuple(f.name for f in attrs.fields(Job))
_new = object.__new__
_set = object.__setattr__


def _compile_replace() -> Any:
    # Straight-line code over the fields (no loop, direct attribute reads): the manager
    # copies a job on every status change, so this is on the hot path.
    lines = ["def replace_job(job, /, **changes):", "    new = _new(Job)"]
    for name in _JOB_FIELDS:
        lines.append(f"    _set(new, {name!r}, changes[{name!r}] if {name!r} in changes else job.{name})")
    lines.append("    return new")
    namespace: dict[str, Any] = {"_new": _new, "_set": _set, "Job": Job}
    exec("\n".join(lines), namespace)
    return namespace["replace_job"]


#: Like :func:`attrs.evolve` for a :class:`Job`, without re-running converters. Only for
#: trusted, already-normalised values: the manager's hot path uses it.
replace_job: Callable[..., Job] = _compile_replace()


def build_job(values: tuple[Any, ...]) -> Job:
    """A :class:`Job` from its field values in declaration order, already normalised.

    For stores reading their own rows: skips converters, so values must be exactly the
    types the fields hold (``JobStatus``, aware datetimes, a read-only labels mapping).
    """
    new = _new(Job)
    for name, value in zip(_JOB_FIELDS, values, strict=True):
        _set(new, name, value)
    return new


def _to_roles(value: frozenset[str] | set[str] | list[str] | tuple[str, ...]) -> frozenset[str]:
    return value if isinstance(value, frozenset) else frozenset(value)


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text by every store, or None when it can: valid
    UTF-8 (no lone surrogates) without NUL characters (which PostgreSQL's text refuses)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (it holds a lone surrogate)"
    if "\x00" in value:
        return "cannot hold a NUL character (U+0000)"
    return None


def _storable_name(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """An actor's id and tenant end up in jobs and audit records: text every store keeps."""
    if value is None and attribute.name == "tenant":
        return
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"An actor's {attribute.name} must be a non-empty string, got {value!r}.")
    problem = text_problem(value)
    if problem is not None:
        raise InvalidInput(f"An actor's {attribute.name} {problem}.")


@attrs.frozen
class Actor:
    """Who is asking: a user or service, optionally scoped to one tenant.

    An actor with a ``tenant`` sees only that tenant's jobs. ``roles`` may hold
    ``"admin"`` for admin actions. ``None`` in place of an actor is the trusted host.

    :raises InvalidInput: ``id`` (or ``tenant``) is not a non-empty string of valid text.
    """

    id: str = attrs.field(validator=_storable_name)
    tenant: str | None = attrs.field(default=None, validator=_storable_name)
    roles: frozenset[str] = attrs.field(default=frozenset(), converter=_to_roles)

    @property
    def is_admin(self) -> bool:
        """True when the actor has the ``admin`` role."""
        return "admin" in self.roles


@attrs.frozen(kw_only=True)
class JobEvent:
    """Something happened to a job. Published only after the store accepted the change."""

    type: EventType
    job_id: str
    tenant: str | None
    status: JobStatus | None
    at: datetime
    data: Mapping[str, Any] = attrs.field(default=EMPTY_MAPPING, converter=_to_mapping)


@attrs.frozen(kw_only=True)
class AuditRecord:
    """Who did what to which job, and when. Never holds the payload; outlives the job."""

    id: str
    at: datetime
    action: AuditAction
    actor_id: str | None
    tenant: str | None
    job_id: str
    details: Mapping[str, Any] = attrs.field(default=EMPTY_MAPPING, converter=_to_mapping)


@attrs.frozen
class Page:
    """One page of :meth:`JobManager.list`: the jobs, newest first, and the next page's cursor."""

    items: tuple[Job, ...]
    next_cursor: str | None = None

    def __iter__(self) -> Iterator[Job]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@attrs.frozen(kw_only=True)
class SweepReport:
    """What one sweep did."""

    #: Jobs removed because their ``expires_at`` passed.
    expired: int = 0
    #: Soft-deleted jobs purged after ``purge_soft_deleted_after``.
    purged: int = 0
    #: Artifacts deleted (of expired or purged jobs, and from the deferred purge queue).
    artifacts_deleted: int = 0
    #: Jobs whose worker lease expired, failed or put back to ``pending``.
    recovered: int = 0
    #: Audit records older than ``audit_retention`` removed.
    audit_removed: int = 0
