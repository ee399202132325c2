"""The worker side: a :class:`~jobkit.JobManager` whose handlers run Django tasks.

``manage.py jobkit_worker`` builds it with :func:`build_worker` and runs it with
``jobkit worker``'s own loop (:func:`jobkit.cli._worker.serve`: SIGINT/SIGTERM stop it,
running tasks go back to pending; a second signal forces it).

A sync task runs in one of jobkit's worker threads, with Django's database connections
handled as Django's request cycle handles them: :func:`django.db.reset_queries` and
:func:`django.db.close_old_connections` before the task, ``close_old_connections`` after
it (a connection past ``CONN_MAX_AGE`` or broken is closed, a healthy persistent one
kept). An async task runs on the worker's event loop; the same calls run through
``sync_to_async`` (in the thread that Django's async ORM uses).
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

from ..._context import JobContext, SyncJobContext
from ..._errors import InvalidInput, JobCancelled
from ..._manager import JobManager
from ..._records import Job
from ._backend import ERROR_KEY, JobkitBackend, _import_task, kind_of, known_tasks
from ._compat import TaskContext, TaskResultStatus, normalize_json, task_finished, task_started

__all__ = ["build_worker", "job_context"]

_current: ContextVar[JobContext | SyncJobContext | None] = ContextVar("jobkit_django_context", default=None)


def job_context() -> JobContext | SyncJobContext:
    """The jobkit context of the task running here (in ``jobkit_worker``): a
    :class:`~jobkit.SyncJobContext` in a sync task, a :class:`~jobkit.JobContext` in an
    async one. Through it a task reports progress, stores a partial result, writes
    artifacts and sees a cancel (``checkpoint()``, ``token``).

    :raises LookupError: no task of a JobkitBackend worker is running here.
    """
    found = _current.get()
    if found is None:
        raise LookupError("job_context() works only inside a task run by manage.py jobkit_worker.")
    return found


def _arguments(payload: Any) -> tuple[list[Any], dict[str, Any]]:
    if (
        not isinstance(payload, dict)
        or set(payload) - {"args", "kwargs"}
        or not isinstance(payload.get("args", []), list)
        or not isinstance(payload.get("kwargs", {}), dict)
    ):
        raise InvalidInput('A Django task\'s payload must be {"args": [...], "kwargs": {...}}.')
    return list(payload.get("args", [])), dict(payload.get("kwargs", {}))


def _error(exc: BaseException) -> dict[str, Any]:
    kind = type(exc)
    return {
        ERROR_KEY: {
            "exception_class_path": f"{kind.__module__}.{kind.__qualname__}",
            "traceback": "".join(traceback.format_exception(exc)),
        }
    }


def _finished(backend: JobkitBackend, job: Job, task: Any, status: Any) -> None:
    result = backend.to_result(job, task)
    object.__setattr__(result, "status", status)
    task_finished.send(type(backend), task_result=result)


def _task(path: str) -> Any:
    task = _import_task(path)
    if task is None:
        raise LookupError(f"There is no Django task at {path!r} in this worker.")
    return task


def _sync_handler(backend: JobkitBackend, path: str) -> Callable[[SyncJobContext, Any], Any]:
    from django.db import close_old_connections, reset_queries

    def run(ctx: SyncJobContext, payload: Any) -> Any:
        reset_queries()
        close_old_connections()
        token = _current.set(ctx)
        status = TaskResultStatus.FAILED
        task: Any = None
        try:
            task = _task(path)
            args, kwargs = _arguments(payload)
            result = backend.to_result(ctx.job, task)
            task_started.send(type(backend), task_result=result)
            if task.takes_context:
                args.insert(0, TaskContext(task_result=result))
            value = normalize_json(task.func(*args, **kwargs))
            status = TaskResultStatus.SUCCESSFUL
            return value
        except JobCancelled:
            raise
        except Exception as exc:
            ctx.set_result(_error(exc))
            raise
        finally:
            _current.reset(token)
            close_old_connections()
            if task is not None:
                _finished(backend, ctx.job, task, status)

    return run


def _async_handler(backend: JobkitBackend, path: str) -> Callable[[JobContext, Any], Any]:
    from asgiref.sync import sync_to_async
    from django.db import close_old_connections, reset_queries

    def before() -> None:
        reset_queries()
        close_old_connections()

    async def run(ctx: JobContext, payload: Any) -> Any:
        await sync_to_async(before)()
        token = _current.set(ctx)
        status = TaskResultStatus.FAILED
        task: Any = None
        try:
            task = _task(path)
            args, kwargs = _arguments(payload)
            result = backend.to_result(ctx.job, task)
            await task_started.asend(type(backend), task_result=result)
            if task.takes_context:
                args.insert(0, TaskContext(task_result=result))
            value = normalize_json(await task.func(*args, **kwargs))
            status = TaskResultStatus.SUCCESSFUL
            return value
        except JobCancelled:
            raise
        except Exception as exc:
            await ctx.set_result(_error(exc))
            raise
        finally:
            _current.reset(token)
            await sync_to_async(close_old_connections)()
            if task is not None:
                _finished(backend, ctx.job, task, status)

    return run


def build_worker(
    backend: JobkitBackend, queues: Iterable[str], *, concurrency: int | None = None
) -> JobManager:
    """A JobManager running every task of ``backend`` this process has imported, on ``queues``.

    Import the modules defining the tasks first (``jobkit_worker`` imports every installed
    app's ``tasks`` module).

    :raises InvalidInput: no task is known, or no queue given.
    """
    wanted = sorted(set(queues))
    if not wanted:
        raise InvalidInput("Give the worker at least one queue.")
    tasks = known_tasks()
    if not tasks:
        raise InvalidInput(
            "No Django task of a JobkitBackend is known: define them in an app's tasks.py module "
            "(imported at start) or name their modules with --import."
        )
    arguments = backend.worker_arguments()
    if concurrency is not None:
        arguments["concurrency"] = concurrency
    manager = JobManager(**arguments)
    for path, task in sorted(tasks.items()):
        if task.backend != backend.alias:
            continue
        for queue in wanted:
            kind = kind_of(path, queue)
            if inspect.iscoroutinefunction(task.func):
                manager.register(kind, _async_handler(backend, path))
            else:
                manager.register(kind, _sync_handler(backend, path))
    return manager
