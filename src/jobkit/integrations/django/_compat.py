"""Django's Tasks framework, wherever it is installed: ``django.tasks`` (Django 6 and later)
or the ``django-tasks`` backport (``django_tasks``, for Django 5.2).

The two have the same API; the names differ only in their exceptions (Django 6's
``InvalidTask`` is the backport's ``InvalidTaskError``) and in where ``normalize_json``
lives. Everything is typed ``Any`` here: Django ships no type hints, and which module is
used is known only at run time.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = [
    "BUILTIN",
    "BaseTaskBackend",
    "DEFAULT_TASK_QUEUE_NAME",
    "InvalidTask",
    "TASK_MAX_PRIORITY",
    "TASK_MIN_PRIORITY",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "normalize_json",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]

_MISSING = (
    "jobkit.integrations.django needs Django's Tasks framework: Django 6 or later, or Django 5.2 "
    "with the django-tasks backport (pip install 'jobkit[django]')"
)


def _load(name: str) -> ModuleType:
    return importlib.import_module(name)


try:
    _base = _load("django.tasks.base")
    BUILTIN = True
except ImportError:
    try:
        _base = _load("django_tasks.base")
    except ImportError as exc:
        raise ImportError(_MISSING) from exc
    BUILTIN = False

_package = "django.tasks" if BUILTIN else "django_tasks"
_tasks: Any = _load(_package)
_backends: Any = _load(f"{_package}.backends.base")
_exceptions: Any = _load(f"{_package}.exceptions")
_signals: Any = _load(f"{_package}.signals")
_json: Any = _load("django.utils.json" if BUILTIN else "django_tasks.utils")
_base_any: Any = _base

BaseTaskBackend: Any = _backends.BaseTaskBackend
Task: Any = _base_any.Task
TaskContext: Any = _base_any.TaskContext
TaskError: Any = _base_any.TaskError
TaskResult: Any = _base_any.TaskResult
TaskResultStatus: Any = _base_any.TaskResultStatus
TASK_MIN_PRIORITY: int = _base_any.TASK_MIN_PRIORITY
TASK_MAX_PRIORITY: int = _base_any.TASK_MAX_PRIORITY
DEFAULT_TASK_QUEUE_NAME: str = _base_any.DEFAULT_TASK_QUEUE_NAME
InvalidTask: type[Exception] = _exceptions.InvalidTask if BUILTIN else _exceptions.InvalidTaskError
TaskResultDoesNotExist: type[Exception] = _exceptions.TaskResultDoesNotExist
normalize_json: Any = _json.normalize_json
task_backends: Any = _tasks.task_backends
task_enqueued: Any = _signals.task_enqueued
task_started: Any = _signals.task_started
task_finished: Any = _signals.task_finished
