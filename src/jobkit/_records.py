"""The records jobkit hands out: jobs, actors, events, audit records, pages and reports.

All are frozen, slotted attrs classes; change a job with :func:`attrs.evolve` (the
manager uses the faster private ``replace_job``).
"""

from __future__ import annotations

import enum
import math
import os
import sys
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
    "Retry",
    "Schedule",
    "SweepReport",
    "build_job",
    "replace_job",
    "to_duration",
]


def new_id(nbytes: int = 16) -> str:
    """A random id of ``2 * nbytes`` lowercase hex digits (``secrets.token_hex``'s bytes,
    without importing hashlib through ``secrets``)."""
    return os.urandom(nbytes).hex()


#: One shared, read-only empty mapping for jobs without labels (saves memory per job).
EMPTY_MAPPING: Mapping[str, Any] = MappingProxyType({})


class JobStatus(enum.StrEnum):
    """Where a job is in its lifecycle. ``completed``, ``failed`` and ``cancelled`` are terminal."""

    #: Waiting for its ``run_at`` (a delayed submit, or the next attempt after a failure).
    SCHEDULED = "scheduled"
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
    #: It went back to ``pending`` (shutdown, a lost worker with attempts left, a manual
    #: retry, or its ``run_at`` came).
    REQUEUED = "requeued"
    #: It waits for ``data["run_at"]`` (ISO 8601): a failure with attempts left, or a manual
    #: retry for later; ``data["attempt"]`` is the number of the attempt it will be.
    SCHEDULED = "scheduled"
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
    RETRY = "retry"
    PAUSE = "pause"
    RESUME = "resume"
    SCHEDULE = "schedule"
    UNSCHEDULE = "unschedule"


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


def _seconds_of(value: timedelta | float, what: str) -> float:
    if value is None:
        raise InvalidInput(f"Retry {what} must be a number of seconds or a timedelta, got None.")
    try:
        duration = to_duration(value)
    except InvalidInput as exc:
        raise InvalidInput(f"Retry {what}: {exc.message}") from None
    assert duration is not None
    return duration.total_seconds()


def _backoff_seconds(value: timedelta | float) -> float:
    return _seconds_of(value, "backoff")


def _max_backoff_seconds(value: timedelta | float) -> float:
    return _seconds_of(value, "max_backoff")


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _to_exception_classes(value: object) -> tuple[type[BaseException], ...]:
    classes = value if isinstance(value, tuple | list | frozenset | set) else (value,)
    if not classes:
        raise InvalidInput("Retry on= must name at least one exception class.")
    for cls in classes:
        if not isinstance(cls, type) or not issubclass(cls, Exception):
            raise InvalidInput(f"Retry on= takes exception classes (subclasses of Exception), got {cls!r}.")
    return tuple(classes)


def _check_attempts(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise InvalidInput(f"Retry attempts must be an integer from 1 to 1000, got {value!r}.")


def _check_factor(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 1.0 <= value <= 100.0:
        raise InvalidInput(f"Retry factor must be from 1 to 100, got {value!r}.")


def _check_jitter(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise InvalidInput(f"Retry jitter must be a fraction from 0 to 1, got {value!r}.")


def _to_number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"Retry {what} must be a finite number, got {value!r}.")
    return float(value)


def _factor_number(value: object) -> float:
    return _to_number(value, "factor")


def _jitter_number(value: object) -> float:
    return _to_number(value, "jitter")


@attrs.frozen
class Retry:
    """Try a failed job again, later: attempt *n* (1-based) that fails with an instance of
    ``on`` waits ``min(max_backoff, backoff * factor ** (n - 1))`` seconds, spread by
    ±``jitter`` (a fraction), before the next start, while ``n < attempts``.

    Give it to ``submit(retry=)`` or ``handler(kind, retry=)`` (submit wins); it sets the
    job's ``max_attempts``. A timeout counts as a failure (a :class:`TimeoutError`).

    :raises InvalidInput: attempts outside 1..1000, a negative or too long backoff, a
        factor outside 1..100, a jitter outside 0..1, ``on`` not exception classes.
    """

    #: The most starts the job gets (1-1000); sets its ``max_attempts``.
    attempts: int = attrs.field(default=3, validator=_check_attempts)
    #: The wait after the first failure, in seconds (or a timedelta).
    backoff: float = attrs.field(default=1.0, converter=_backoff_seconds)
    #: Each further wait is this many times the one before (1-100; 1: a constant wait).
    factor: float = attrs.field(default=2.0, converter=_factor_number, validator=_check_factor)
    #: No wait is longer, in seconds (or a timedelta).
    max_backoff: float = attrs.field(default=3600.0, converter=_max_backoff_seconds)
    #: Each wait is spread by this fraction either way (0-1), so failures do not come back together.
    jitter: float = attrs.field(default=0.1, converter=_jitter_number, validator=_check_jitter)
    #: The exception classes that are retried (matched through the class hierarchy).
    on: tuple[type[BaseException], ...] = attrs.field(
        default=(Exception,), converter=_to_exception_classes, eq=False
    )
    #: ``module.qualname`` of each class in ``on``: what a store keeps, and what matching uses
    #: (so a job retried in another process matches the same exceptions).
    names: frozenset[str] = attrs.field(init=False, repr=False)

    @names.default
    def _names(self) -> frozenset[str]:
        return frozenset(_class_name(cls) for cls in self.on)

    def covers(self, exc: BaseException) -> bool:
        """True when ``exc`` is an instance of one of the ``on`` classes."""
        names = self.names
        return any(_class_name(cls) in names for cls in type(exc).__mro__)

    def delay(self, attempt: int, spread: float = 0.5) -> timedelta:
        """The wait after attempt ``attempt`` failed; ``spread`` in 0..1 picks the point in the
        jitter band (0.5: no jitter)."""
        try:
            base = min(self.max_backoff, self.backoff * self.factor ** (attempt - 1))
        except OverflowError:  # factor ** (attempt - 1) is past floats: it grows without bound
            grows = self.factor > 1.0 and self.backoff > 0.0  # unless nothing grows
            base = self.max_backoff if grows else min(self.max_backoff, self.backoff)
        seconds = max(0.0, base * (1.0 + self.jitter * (2.0 * spread - 1.0)))
        return timedelta(seconds=min(seconds, MAX_DURATION.total_seconds()))

    def to_json(self) -> dict[str, Any]:
        """The plain-JSON form stores keep (exception classes by name)."""
        return {
            "attempts": self.attempts,
            "backoff": self.backoff,
            "factor": self.factor,
            "max_backoff": self.max_backoff,
            "jitter": self.jitter,
            "on": sorted(self.names),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Retry:
        """A :class:`Retry` from :meth:`to_json`; classes this process cannot import still match
        by name."""
        names = frozenset(value.get("on") or ("builtins.Exception",))
        on = tuple(c for c in (_import_class(n) for n in sorted(names)) if c is not None) or (Exception,)
        retry = cls(
            attempts=value["attempts"],
            backoff=value["backoff"],
            factor=value["factor"],
            max_backoff=value["max_backoff"],
            jitter=value["jitter"],
            on=on,
        )
        object.__setattr__(retry, "names", names)
        return retry


def _import_class(name: str) -> type[BaseException] | None:
    """The class of a stored name, from the modules this process has already imported (a
    stored record never makes a process import anything); None when it is not there."""
    module_name, _, qualname = name.rpartition(".")
    while module_name:
        found: Any = sys.modules.get(module_name)
        if found is None:
            module_name, _, head = module_name.rpartition(".")
            qualname = f"{head}.{qualname}"
            continue
        for part in qualname.split("."):
            found = getattr(found, part, None)
        if isinstance(found, type) and issubclass(found, Exception):
            return found
        return None
    return None


@attrs.frozen(kw_only=True)
class Job:
    """One job: what to run, where it is in its lifecycle, and what it produced.

    ``version`` grows by one on every change; stores use it for compare-and-swap.
    """

    #: The job's id (32 hexadecimal characters for the jobs the manager makes).
    id: str
    #: The handler kind that runs it.
    kind: str
    #: Where it is in its lifecycle.
    status: JobStatus = attrs.field(converter=_to_status)
    #: The JSON value given to ``submit`` (each handler gets a private copy).
    payload: Any = attrs.field(default=None, repr=False)
    #: The tenant of the actor that submitted it; None for the host's jobs.
    tenant: str | None = None
    #: Higher runs first (-1,000,000 to 1,000,000).
    priority: int = 0
    #: 0..1 as the handler last reported it; None before any report, 1.0 once completed.
    progress: float | None = None
    #: The message of the last progress report.
    progress_message: str | None = None
    #: What the handler returned (JSON), or the partial result it stored with ``set_result``.
    result: Any = attrs.field(default=None, repr=False)
    #: ``"<ExceptionType>: <message>"`` of the last failure; cleared when an attempt completes.
    error: str | None = None
    #: The reason given to ``cancel``.
    cancel_reason: str | None = None
    #: When it was submitted (UTC).
    created_at: datetime
    #: When its last attempt started.
    started_at: datetime | None = None
    #: When it reached a terminal status.
    finished_at: datetime | None = None
    #: When the sweeper removes it (set when it finishes, from ``ttl`` or the Retention).
    expires_at: datetime | None = None
    #: When it was soft-deleted.
    deleted_at: datetime | None = None
    #: Grows by one on every change; stores use it for compare-and-swap.
    version: int = 1
    #: How often it has started.
    attempts: int = 0
    #: How often it may start (for any reason: a retry, a lost worker).
    max_attempts: int = 1
    #: How long it is kept once finished (None: the manager's Retention decides).
    ttl: timedelta | None = None
    #: How long each attempt may run.
    timeout: timedelta | None = None
    #: Free-form ``str -> str`` labels given at submit.
    labels: Mapping[str, str] = attrs.field(default=EMPTY_MAPPING, converter=_to_labels)
    #: When a ``scheduled`` job becomes due (None in every other status).
    run_at: datetime | None = None
    #: The submit's idempotency key: unique among the tenant's stored jobs.
    idempotency_key: str | None = None
    #: The retry policy given at submit (or the handler's, when it was known there).
    retry: Retry | None = None

    @property
    def is_terminal(self) -> bool:
        """True when the job has finished (completed, failed or cancelled)."""
        return self.status in TERMINAL


_JOB_FIELDS = tuple(f.name for f in attrs.fields(Job))
_new = object.__new__
_set = object.__setattr__


def _compile_replace() -> Any:
    # Straight-line code over the fields (no loop, no dict of changes, direct attribute reads,
    # each slot written through its descriptor): the manager copies a job on every status
    # change, so this is on the hot path (about a third faster than a **changes dict).
    unset = object()
    head = ", ".join(f"{name}=_unset" for name in _JOB_FIELDS)
    lines = [f"def replace_job(job, /, *, {head}):", "    new = _new(Job)"]
    namespace: dict[str, Any] = {"_new": _new, "Job": Job, "_unset": unset}
    for name in _JOB_FIELDS:
        slot = Job.__dict__.get(name)
        setter = slot.__set__ if slot is not None and hasattr(slot, "__set__") else None
        if setter is None:  # pragma: no cover - attrs always slots Job
            lines.append(f"    _set(new, {name!r}, job.{name} if {name} is _unset else {name})")
        else:
            namespace[f"_set_{name}"] = setter
            lines.append(f"    _set_{name}(new, job.{name} if {name} is _unset else {name})")
    namespace["_set"] = _set
    lines.append("    return new")
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

    #: Who it is (the audit trail's ``actor_id``).
    id: str = attrs.field(validator=_storable_name)
    #: The one tenant it sees; None: every tenant.
    tenant: str | None = attrs.field(default=None, validator=_storable_name)
    #: Any iterable of strings; ``"admin"`` allows the admin actions.
    roles: frozenset[str] = attrs.field(default=frozenset(), converter=_to_roles)

    @property
    def is_admin(self) -> bool:
        """True when the actor has the ``admin`` role."""
        return "admin" in self.roles


@attrs.frozen(kw_only=True)
class JobEvent:
    """Something happened to a job. Published only after the store accepted the change."""

    #: What happened.
    type: EventType
    #: The job it happened to (``""`` for an ``overflow`` event).
    job_id: str
    #: The job's tenant.
    tenant: str | None
    #: The job's status after the change (None for ``overflow``).
    status: JobStatus | None
    #: When it happened (UTC).
    at: datetime
    #: Details per event type (see the live events in managing.md).
    data: Mapping[str, Any] = attrs.field(default=EMPTY_MAPPING, converter=_to_mapping)


@attrs.frozen(kw_only=True)
class AuditRecord:
    """Who did what to which job, and when. Never holds the payload; outlives the job."""

    #: The record's id.
    id: str
    #: When the action was taken (UTC).
    at: datetime
    #: What was done.
    action: AuditAction
    #: Who did it: the actor's id, None for the host, :data:`jobkit.SWEEPER` for the sweeper.
    actor_id: str | None
    #: The tenant of the job (or of the actor, for an action on a kind or a schedule).
    tenant: str | None
    #: None for an action on a kind or a schedule (pause, resume, schedule, unschedule).
    job_id: str | None
    #: What the action changed, per action (see the audit trail in managing.md).
    details: Mapping[str, Any] = attrs.field(default=EMPTY_MAPPING, converter=_to_mapping)


@attrs.frozen
class Page:
    """One page of :meth:`JobManager.list`: the jobs, newest first, and the next page's cursor."""

    #: The jobs of this page, newest first.
    items: tuple[Job, ...]
    #: Pass it back as ``cursor`` for the next page; None on the last page.
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
    #: Scheduled jobs whose ``run_at`` came, made pending.
    promoted: int = 0
    #: Jobs submitted by schedules.
    fired: int = 0


@attrs.frozen(kw_only=True)
class Schedule:
    """A job submitted at every fire time of a five-field cron expression, in a time zone.

    ``name`` is unique per tenant. At each fire time the sweeper submits one job with the
    idempotency key ``schedule:<name>:<fire time>``, so a fire time never yields two jobs,
    however many processes run; fire times missed while nothing ran make one job.
    """

    #: Unique per tenant (1-200 printable characters).
    name: str
    #: The kind of the jobs it submits.
    kind: str
    #: The payload of every job it submits.
    payload: Any = attrs.field(default=None, repr=False)
    #: Five fields: minute, hour, day of month, month, day of week.
    cron: str
    #: The IANA time zone the expression is read in.
    timezone: str = "UTC"
    #: The tenant it belongs to, and the jobs it fires too.
    tenant: str | None = None
    #: The priority of the jobs it submits.
    priority: int = 0
    #: The next fire time (UTC).
    next_run_at: datetime
    #: When it was created (or last replaced).
    created_at: datetime
