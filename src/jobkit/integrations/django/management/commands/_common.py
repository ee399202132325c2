"""What the management commands share: the JobkitBackend they act on."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from ..._backend import JobkitBackend
from ..._compat import task_backends


def backend_named(alias: str) -> JobkitBackend:
    """The JobkitBackend of ``TASKS[alias]``.

    :raises CommandError: there is none, or it is another backend.
    """
    try:
        found: Any = task_backends[alias]
    except Exception as exc:  # InvalidTaskBackend(Error): not configured
        raise CommandError(f"No task backend {alias!r} in settings.TASKS: {exc}") from None
    if not isinstance(found, JobkitBackend):
        raise CommandError(
            f"The task backend {alias!r} is a {type(found).__name__}, not "
            "jobkit.integrations.django.JobkitBackend."
        )
    return found
