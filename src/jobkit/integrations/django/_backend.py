"""``JobkitBackend``: Django's Tasks framework on a jobkit store.

A Django task becomes a jobkit job:

- its **kind** is the task's module path (``myapp.tasks.send_email``), followed by
  ``@<queue>`` when the task's ``queue_name`` is not ``"default"``
  (``myapp.tasks.send_email@emails``). jobkit workers claim jobs by kind, so the queue in
  the kind is what lets ``manage.py jobkit_worker --queue emails`` take that queue's jobs
  and no others (a label would be stored but could not steer the claim), and pausing a
  kind pauses one task on one queue;
- its **payload** is ``{"args": [...], "kwargs": {...}}`` (JSON, as Django requires);
- ``priority`` is the job's priority (Django's -100..100 lies inside jobkit's range),
  ``run_after`` its ``run_at``, and the labels ``django.backend`` and ``django.queue``
  record the backend alias and the queue;
- the result id is the job id, so the REST routes, the console and the ``jobkit`` CLI
  manage a task by its Django result id.

Each process has **one** manager per store configuration, shared by every thread (Django
makes a backend object per thread) and started on first use: a
:class:`~jobkit.BlockingJobManager`, whose event loop runs in a thread of its own, so the
same manager serves WSGI views, ASGI views (through ``sync_to_async``) and management
commands alike. It runs no jobs (``concurrency=0``): ``manage.py jobkit_worker`` does.
It is stopped when the process exits, and a forked child makes its own.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..._blocking import BlockingJobManager
from ..._errors import InvalidInput, JobNotFound
from ..._records import Job, JobStatus
from . import _compat
from ._compat import (
    DEFAULT_TASK_QUEUE_NAME,
    TASK_MAX_PRIORITY,
    TASK_MIN_PRIORITY,
    BaseTaskBackend,
    InvalidTask,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    normalize_json,
)

__all__ = [
    "ERROR_KEY",
    "JobkitBackend",
    "QUEUE_LABEL",
    "BACKEND_LABEL",
    "kind_of",
    "known_tasks",
    "split_kind",
]

#: The label holding the task's queue name.
QUEUE_LABEL = "django.queue"
#: The label holding the alias of the backend that enqueued the task.
BACKEND_LABEL = "django.backend"
#: The key of the partial result the worker stores when a task raises: the exception's
#: class path and traceback, which become the TaskResult's ``errors``.
ERROR_KEY = "django_task_error"

_OPTION_NAMES = frozenset(
    {"store", "blobs", "concurrency", "cancel_grace", "lease_duration", "poll_interval", "sweep_interval"}
)

#: Every task validated by a JobkitBackend in this process (at ``@task`` time), by module path.
_TASKS: dict[str, Any] = {}


def known_tasks() -> Mapping[str, Any]:
    """The tasks this process has seen (every ``@task`` of a JobkitBackend), by module path."""
    return dict(_TASKS)


def kind_of(module_path: str, queue_name: str) -> str:
    """The jobkit kind of a task path on a queue: the path, plus ``@queue`` off the default queue."""
    return module_path if queue_name == DEFAULT_TASK_QUEUE_NAME else f"{module_path}@{queue_name}"


def split_kind(kind: str) -> tuple[str, str]:
    """The task path and queue name of a kind (a module path never holds ``@``)."""
    path, at, queue = kind.partition("@")
    return path, (queue if at else DEFAULT_TASK_QUEUE_NAME)


def _import_task(module_path: str) -> Any:
    """The Task object at ``module_path``, or None when there is none."""
    from django.utils.module_loading import import_string

    try:
        found = import_string(module_path)
    except ImportError:
        return None
    return found if isinstance(found, _compat.Task) else None


# -- one manager per process and configuration --------------------------------------

_lock = threading.Lock()
_managers: dict[tuple[int, tuple[tuple[str, str], ...]], BlockingJobManager] = {}


def stop_managers() -> None:
    """Stop this process's managers (done at exit; tests call it between configurations)."""
    with _lock:
        found = [m for (pid, _), m in _managers.items() if pid == os.getpid()]
        _managers.clear()
    for manager in found:
        with contextlib.suppress(Exception):  # the interpreter is exiting anyway
            manager.__exit__(None, None, None)


atexit.register(stop_managers)


def manager_arguments(options: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`~jobkit.JobManager` arguments of a backend's OPTIONS (stores opened from
    their URLs); ``concurrency`` is left to the caller.

    :raises django.core.exceptions.ImproperlyConfigured: an unknown option, or no ``store``.
    """
    from django.core.exceptions import ImproperlyConfigured

    unknown = sorted(set(options) - _OPTION_NAMES)
    if unknown:
        raise ImproperlyConfigured(
            f"Unknown OPTIONS {', '.join(unknown)} for JobkitBackend; "
            f"it takes {', '.join(sorted(_OPTION_NAMES))}."
        )
    store = options.get("store")
    if not isinstance(store, str) or not store:
        raise ImproperlyConfigured(
            "JobkitBackend needs OPTIONS['store']: a store URL such as 'sqlite:////var/lib/app/jobs.db' "
            "or 'postgresql://user@host/db' (a memory store would not reach the worker process)."
        )
    from ...stores import open_store

    arguments: dict[str, Any] = {"store": open_store(store)}
    blobs = options.get("blobs")
    if blobs is not None:
        from ...blobs import open_blobs

        arguments["blobs"] = open_blobs(blobs)
    for name in ("cancel_grace", "lease_duration", "poll_interval", "sweep_interval"):
        if name in options:
            arguments[name] = options[name]
    return arguments


def _aware(value: datetime | None) -> datetime | None:
    """A Task's ``run_after`` as an aware datetime (with ``USE_TZ = False`` Django's naive
    datetimes are in the default time zone)."""
    if value is None or value.tzinfo is not None:
        return value
    from django.utils import timezone

    aware: datetime = timezone.make_aware(value, timezone.get_default_timezone())
    return aware


class JobkitBackend(BaseTaskBackend):  # type: ignore[misc]
    """A backend for Django's Tasks framework that stores tasks as jobkit jobs.

    ``TASKS = {"default": {"BACKEND": "jobkit.integrations.django.JobkitBackend",
    "QUEUES": ["default", "emails"], "OPTIONS": {"store": URL, "blobs": URL}}}``. OPTIONS:
    ``store`` (required: ``sqlite:///…``, ``postgresql://…``), ``blobs`` (``file:///…``,
    ``s3://…``; where tasks' artifacts go, default memory), ``concurrency`` (the worker's,
    default 10), ``cancel_grace`` (seconds after a cancel before an async task is
    cancelled by force), ``lease_duration``, ``poll_interval``, ``sweep_interval``.
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options = dict(self.options)
        self._concurrency = options.pop("concurrency", 10)
        manager_arguments(options)  # fail at start-up on bad OPTIONS, not at the first enqueue
        self._key = tuple(sorted((name, repr(value)) for name, value in options.items()))
        self._options = options

    # -- the manager ---------------------------------------------------------------

    @property
    def concurrency(self) -> int:
        """How many tasks ``jobkit_worker`` runs at once by default (OPTIONS ``concurrency``)."""
        return int(self._concurrency)

    @property
    def manager(self) -> BlockingJobManager:
        """This process's manager for this backend's store, started on first use (which
        imports every installed app's ``tasks`` module, so that the REST routes know every
        task of the project)."""
        key = (os.getpid(), self._key)
        found = _managers.get(key)
        if found is not None:
            return found
        # Every app's tasks module, so that the REST routes can submit any task of the project.
        from django.utils.module_loading import autodiscover_modules

        autodiscover_modules("tasks")
        with _lock:
            found = _managers.get(key)
            if found is None:
                found = BlockingJobManager(concurrency=0, **manager_arguments(self._options))
                for path, task in _TASKS.items():
                    for queue in self.queues or {task.queue_name}:
                        found.manager.declare(kind_of(path, queue))
                found.__enter__()
                _managers[key] = found
        return found

    def worker_arguments(self) -> dict[str, Any]:
        """The :class:`~jobkit.JobManager` arguments for a worker of this backend."""
        return {"concurrency": self.concurrency, **manager_arguments(self._options)}

    # -- Django's API --------------------------------------------------------------

    def validate_task(self, task: Any) -> None:
        super().validate_task(task)
        _TASKS.setdefault(task.module_path, task)

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Store ``task`` with its arguments as a jobkit job; its TaskResult is ``READY``.

        :raises django.tasks.exceptions.InvalidTask: the task is not valid for this backend
            (its priority, queue, ``run_after``, or a function not found by its path).
        :raises TypeError: an argument is not JSON serialisable (nothing is stored).
        """
        self.validate_task(task)
        found = _import_task(task.module_path)
        if found is None or found.func is not task.func:
            raise InvalidTask(
                f"The task {task.module_path!r} cannot be found by its path: a worker imports it from "
                "there, so define it at module level under its own name."
            )
        payload = {"args": normalize_json(list(args)), "kwargs": normalize_json(dict(kwargs))}
        kind = kind_of(task.module_path, task.queue_name)
        manager = self.manager
        manager.manager.declare(kind)
        job = manager.submit(
            kind,
            payload,
            priority=task.priority,
            run_at=_aware(task.run_after),
            labels={BACKEND_LABEL: self.alias, QUEUE_LABEL: task.queue_name},
        )
        result = self.to_result(job, task)
        _compat.task_enqueued.send(type(self), task_result=result)
        return result

    async def aenqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """:meth:`enqueue` in a thread of its own (the manager's calls block)."""
        from asgiref.sync import sync_to_async

        return await sync_to_async(self.enqueue, thread_sensitive=False)(task, args, kwargs)

    def get_result(self, result_id: str) -> Any:
        """The TaskResult of the job ``result_id``.

        :raises django.tasks.exceptions.TaskResultDoesNotExist: no such job (or deleted), or
            a job that is not a Django task.
        """
        return self.to_result(self._job(result_id))

    async def aget_result(self, result_id: str) -> Any:
        """:meth:`get_result` in a thread of its own."""
        from asgiref.sync import sync_to_async

        return await sync_to_async(self.get_result, thread_sensitive=False)(result_id)

    # -- what jobkit adds ------------------------------------------------------------

    def wait(self, result_id: str, timeout: float | None = None) -> Any:
        """The TaskResult of ``result_id`` once it has finished (any process may run it).

        :raises django.tasks.exceptions.TaskResultDoesNotExist: no such task.
        :raises TimeoutError: it did not finish within ``timeout`` seconds.
        """
        try:
            job = self.manager.wait(result_id, timeout=timeout)
        except (JobNotFound, InvalidInput):
            raise TaskResultDoesNotExist(f"There is no task result {result_id!r}.") from None
        return self.to_result(job)

    def cancel(self, result_id: str, reason: str | None = None) -> Any:
        """Cancel the task: at once when it waits, at its next checkpoint when it runs.
        A cancelled task's result is ``FAILED`` with a ``jobkit.JobCancelled`` error."""
        try:
            job = self.manager.cancel(result_id, reason=reason)
        except (JobNotFound, InvalidInput):
            raise TaskResultDoesNotExist(f"There is no task result {result_id!r}.") from None
        return self.to_result(job)

    def retry(self, result_id: str) -> Any:
        """Run a failed or cancelled task once more."""
        try:
            job = self.manager.retry(result_id)
        except (JobNotFound, InvalidInput):
            raise TaskResultDoesNotExist(f"There is no task result {result_id!r}.") from None
        return self.to_result(job)

    def delete(self, result_id: str) -> None:
        """Delete a finished task's result and its artifacts (under jobkit's DeletePolicy)."""
        try:
            self.manager.delete(result_id)
        except (JobNotFound, InvalidInput):
            raise TaskResultDoesNotExist(f"There is no task result {result_id!r}.") from None

    def _job(self, result_id: str) -> Job:
        try:
            return self.manager.get(result_id)
        except (JobNotFound, InvalidInput):
            raise TaskResultDoesNotExist(f"There is no task result {result_id!r}.") from None

    def to_result(self, job: Job, task: Any = None) -> Any:
        """The TaskResult of ``job``.

        :raises django.tasks.exceptions.TaskResultDoesNotExist: the job's kind is not a Django task's.
        """
        path, queue = split_kind(job.kind)
        if task is None:
            task = _import_task(path)
            if task is None or not isinstance(job.payload, dict):
                raise TaskResultDoesNotExist(f"The job {job.id} ({job.kind!r}) is not a Django task.")
            priority = min(max(job.priority, TASK_MIN_PRIORITY), TASK_MAX_PRIORITY)
            task = task.using(priority=priority, queue_name=queue, run_after=job.run_at)
        payload: Mapping[str, Any] = job.payload if isinstance(job.payload, dict) else {}
        result = TaskResult(
            task=task,
            id=job.id,
            status=_STATUS[job.status],
            enqueued_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at if job.status.is_terminal else None,
            last_attempted_at=job.started_at,
            args=list(payload.get("args") or []),
            kwargs=dict(payload.get("kwargs") or {}),
            backend=self.alias,
            errors=_errors(job),
            worker_ids=[f"jobkit:{n}" for n in range(1, job.attempts + 1)],
        )
        if job.status is JobStatus.COMPLETED:
            object.__setattr__(result, "_return_value", job.result)
        return result


_STATUS: Mapping[JobStatus, Any] = {
    JobStatus.SCHEDULED: TaskResultStatus.READY,
    JobStatus.PENDING: TaskResultStatus.READY,
    JobStatus.RUNNING: TaskResultStatus.RUNNING,
    JobStatus.CANCELLING: TaskResultStatus.RUNNING,
    JobStatus.COMPLETED: TaskResultStatus.SUCCESSFUL,
    JobStatus.FAILED: TaskResultStatus.FAILED,
    JobStatus.CANCELLED: TaskResultStatus.FAILED,
}


def _errors(job: Job) -> list[Any]:
    """The TaskErrors of a job: the exception its task raised (stored by the worker), a
    cancel, or jobkit's own error (a timeout, a lost worker)."""
    if job.status is JobStatus.CANCELLED:
        reason = job.cancel_reason or "no reason given"
        return [TaskError(exception_class_path="jobkit.JobCancelled", traceback=f"Cancelled: {reason}")]
    if job.error is None:
        return []
    stored = job.result.get(ERROR_KEY) if isinstance(job.result, dict) else None
    if isinstance(stored, dict) and isinstance(stored.get("exception_class_path"), str):
        return [
            TaskError(
                exception_class_path=stored["exception_class_path"],
                traceback=str(stored.get("traceback") or job.error),
            )
        ]
    return [TaskError(exception_class_path=_error_class(job.error), traceback=job.error)]


def _error_class(message: str) -> str:
    return "builtins.TimeoutError" if message.startswith("timed out") else "jobkit.JobkitError"
