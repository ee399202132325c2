"""The exceptions jobkit raises.

Every error derives from :class:`JobkitError` and, where one fits, from the nearest
builtin as well, so ``except LookupError`` still catches :class:`JobNotFound`. Each
class has a stable ``code`` that web integrations put in their error body.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ArtifactNotFound",
    "BackendError",
    "InvalidInput",
    "InvalidState",
    "JobCancelled",
    "JobNotFound",
    "JobkitError",
    "PermissionDenied",
]


class JobkitError(Exception):
    """Base class of every error raised by jobkit."""

    code: ClassVar[str] = "jobkit_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class JobNotFound(JobkitError, LookupError):
    """The job does not exist, or it is not visible to the actor asking for it.

    Another tenant's job is reported as not found, never as forbidden: a job's
    existence does not leak across tenants.
    """

    code = "job_not_found"

    def __init__(self, job_id: str, message: str | None = None) -> None:
        super().__init__(message or f"Job {job_id!r} not found.")
        self.job_id = job_id


class ArtifactNotFound(JobNotFound):
    """The job exists but has no artifact of that name."""

    code = "artifact_not_found"

    def __init__(self, job_id: str, name: str) -> None:
        super().__init__(job_id, f"Job {job_id!r} has no artifact {name!r}.")
        self.name = name


class InvalidState(JobkitError, RuntimeError):
    """The action is not allowed in the job's current status; the message says what to do."""

    code = "invalid_state"


class PermissionDenied(JobkitError, PermissionError):
    """The actor may see the job but is not allowed to perform this action on it."""

    code = "forbidden"


class Unauthenticated(JobkitError, PermissionError):
    """Nobody is signed in: the request's actor dependency found no identity (HTTP 401)."""

    code = "unauthenticated"


class InvalidInput(JobkitError, ValueError):
    """An argument is malformed: nothing was stored or changed."""

    code = "invalid_input"


class BackendError(JobkitError):
    """A store or blob backend failed; the operation was not applied and may be retried."""

    code = "backend_error"


class JobCancelled(JobkitError):
    """Raised inside a handler at a checkpoint once its job has been cancelled.

    Let it propagate: the manager records the outcome (``cancelled``, ``failed`` after a
    timeout, or back to ``pending`` on shutdown) from the token's ``source``.
    """

    code = "job_cancelled"

    def __init__(self, reason: str | None = None, source: str | None = None) -> None:
        super().__init__(reason or "The job was cancelled.")
        self.reason = reason
        self.source = source
