"""Plain-value policies: what may be deleted and how, how long jobs are kept, who may act."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, Literal

import attrs

from ._errors import InvalidInput
from ._records import TERMINAL, Actor, Job, JobStatus, to_duration

__all__ = [
    "Action",
    "DefaultAuthorizer",
    "DeleteMode",
    "DeletePolicy",
    "Retention",
]

_WEEK = timedelta(days=7)


class DeleteMode(enum.StrEnum):
    """How :meth:`JobManager.delete` removes a job."""

    #: Remove the record (and by default its artifacts).
    HARD = "hard"
    #: Keep the record with ``deleted_at`` set, hidden from everyone but the host and admins.
    SOFT = "soft"


def _to_statuses(value: Iterable[JobStatus | str]) -> frozenset[JobStatus]:
    try:
        return frozenset(JobStatus(v) for v in value)
    except ValueError as exc:
        raise InvalidInput(f"Unknown status in deletable: {exc}") from None


def _one_of(*allowed: str | None) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in allowed:
            raise InvalidInput(f"{attribute.name} must be one of {allowed!r}, got {value!r}.")

    return check


@attrs.frozen(kw_only=True)
class DeletePolicy:
    """The rules :meth:`JobManager.delete` and the sweeper follow.

    ``artifacts=None`` takes the mode's default: a hard delete removes the artifacts, a
    soft delete keeps them. ``on_artifact_error="defer"`` lets the delete succeed and
    queues the artifact prefix for the sweeper; ``"fail"`` raises and leaves the job as
    it was.
    """

    mode: DeleteMode = attrs.field(default=DeleteMode.HARD, converter=DeleteMode)
    deletable: frozenset[JobStatus] = attrs.field(default=TERMINAL, converter=_to_statuses)
    artifacts: Literal["delete", "keep"] | None = attrs.field(
        default=None,
        validator=_one_of(None, "delete", "keep"),
    )
    on_artifact_error: Literal["defer", "fail"] = attrs.field(
        default="defer",
        validator=_one_of("defer", "fail"),
    )
    purge_soft_deleted_after: timedelta | None = attrs.field(default=None, converter=to_duration)

    @deletable.validator
    def _check_deletable(self, attribute: object, value: frozenset[JobStatus]) -> None:
        if JobStatus.RUNNING in value or JobStatus.CANCELLING in value:
            raise InvalidInput("Running and cancelling jobs can never be deleted: cancel them.")

    @property
    def deletes_artifacts(self) -> bool:
        """Whether this policy removes the job's artifacts when it deletes the job."""
        if self.artifacts is None:
            return self.mode is DeleteMode.HARD
        return self.artifacts == "delete"


@attrs.frozen(kw_only=True)
class Retention:
    """How long a finished job is kept, per terminal status (``None`` = forever).

    A job's own ``ttl`` overrides it.
    """

    completed: timedelta | None = attrs.field(default=_WEEK, converter=to_duration)
    failed: timedelta | None = attrs.field(default=_WEEK, converter=to_duration)
    cancelled: timedelta | None = attrs.field(default=_WEEK, converter=to_duration)

    def for_status(self, status: JobStatus) -> timedelta | None:
        """The retention of a job that ended with ``status``."""
        if status is JobStatus.COMPLETED:
            return self.completed
        if status is JobStatus.FAILED:
            return self.failed
        if status is JobStatus.CANCELLED:
            return self.cancelled
        return None


class Action(enum.StrEnum):
    """What an actor asks to do; an :class:`~jobkit.abc.Authorizer` decides."""

    SUBMIT = "submit"
    READ = "read"
    CANCEL = "cancel"
    DELETE = "delete"
    DELETE_ARTIFACT = "delete_artifact"
    SET_PRIORITY = "set_priority"
    #: Give a failed or cancelled job another attempt.
    RETRY = "retry"
    #: Pause or resume a kind.
    PAUSE = "pause"
    #: Create, replace or remove a schedule.
    SCHEDULE = "schedule"
    #: Read soft-deleted jobs (``include_deleted=True``).
    READ_DELETED = "read_deleted"
    #: Read the audit trail.
    READ_AUDIT = "read_audit"


def _to_actions(value: Iterable[Action | str]) -> frozenset[Action]:
    return frozenset(Action(a) for a in value)


@attrs.frozen
class DefaultAuthorizer:
    """Allows everything except ``admin_actions``, which need the ``admin`` role.

    By default ``set_priority``, ``pause``/``resume``, ``schedule``/``unschedule``, reading
    soft-deleted jobs and reading the audit trail are admin-only. Make cancel, retry and
    delete admin-only too with
    ``DefaultAuthorizer(admin_actions={*DefaultAuthorizer().admin_actions, Action.CANCEL,
    Action.RETRY, Action.DELETE})``.
    """

    admin_actions: frozenset[Action] = attrs.field(
        default=frozenset(
            {Action.SET_PRIORITY, Action.PAUSE, Action.SCHEDULE, Action.READ_DELETED, Action.READ_AUDIT}
        ),
        converter=_to_actions,
    )

    def allows(self, actor: Actor, action: Action, job: Job | None) -> bool:
        """Whether ``actor`` may perform ``action`` (on ``job``, when there is one)."""
        return action not in self.admin_actions or actor.is_admin
