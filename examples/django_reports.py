"""Django's Tasks API on jobkit: enqueue, run, read the result, cancel, delete with artifacts.

What it shows, in one process (a real project runs ``manage.py jobkit_worker`` beside its
web processes, see docs/django.md):

1. ``TASKS`` with ``JobkitBackend`` on a SQLite store and a folder for artifacts;
2. ``@task`` functions and ``.enqueue()``: a ``READY`` TaskResult whose id is the job id;
3. a worker (``build_worker``, what ``manage.py jobkit_worker`` runs) runs a sync task that
   writes an artifact and an async task; ``get_result`` gives ``SUCCESSFUL`` and the
   return value;
4. a deferred task (``run_after``) cancelled before it runs: ``FAILED`` with a
   ``jobkit.JobCancelled`` error (Django has no cancelled status);
5. ``delete``: the job and its artifact are gone, ``get_result`` raises
   ``TaskResultDoesNotExist``.

Needs ``jobkit[django]`` (Django 6, or Django 5.2 with django-tasks). Run it with
``.venv/bin/python examples/django_reports.py``.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import django
from django.conf import settings

WORK = Path(tempfile.mkdtemp(prefix="jobkit-django-"))
settings.configure(
    USE_TZ=True,
    INSTALLED_APPS=["jobkit.integrations.django"],
    TASKS={
        "default": {
            "BACKEND": "jobkit.integrations.django.JobkitBackend",
            "OPTIONS": {"store": f"sqlite:///{WORK / 'jobs.db'}", "blobs": f"file://{WORK / 'blobs'}"},
        }
    },
)
django.setup()

try:  # Django 6
    from django.tasks import task, task_backends
    from django.tasks.exceptions import TaskResultDoesNotExist
except ImportError:  # Django 5.2 with the backport
    from django_tasks import task, task_backends
    from django_tasks.exceptions import TaskResultDoesNotExist

from jobkit.integrations.django import build_worker, job_context  # noqa: E402


@task
def export(account: int) -> str:
    """Writes the account's export as an artifact of its job."""
    context = job_context()
    context.put_artifact("export.csv", f"account,{account}\n")
    context.progress(1.0, "written")
    return "export.csv"


@task
async def total(numbers: list[int]) -> int:
    await anyio.lowlevel.checkpoint()
    return sum(numbers)


async def run_worker(backend: Any, result_ids: list[str]) -> None:
    """Run the tasks until the given ones have finished (jobkit_worker runs until SIGTERM)."""
    async with build_worker(backend, ["default"], concurrency=2):
        for result_id in result_ids:
            await anyio.to_thread.run_sync(backend.wait, result_id, 30)


def main() -> None:
    backend = task_backends["default"]
    exported = export.enqueue(account=7)
    summed = total.enqueue([1, 2, 3])
    print(f"enqueued {exported.task.name}: status {exported.status}, id {exported.id}")

    anyio.run(run_worker, backend, [exported.id, summed.id])
    done = export.get_result(exported.id)
    print(f"{done.task.name}: {done.status}, return value {done.return_value!r}, attempts {done.attempts}")
    print(f"total: {total.get_result(summed.id).return_value}")
    print(f"artifacts of the export: {backend.manager.artifacts(exported.id)}")

    later = export.using(run_after=datetime.now(UTC) + timedelta(days=1)).enqueue(account=8)
    cancelled = backend.cancel(later.id, reason="not needed any more")
    errors = [error.exception_class_path for error in cancelled.errors]
    print(f"deferred task cancelled: {cancelled.status}, errors {errors}")

    backend.delete(exported.id)
    left = sorted(path.name for path in (WORK / "blobs").rglob("*") if path.is_file())
    print(f"after delete, artifact files left: {left}")
    try:
        export.get_result(exported.id)
    except TaskResultDoesNotExist:
        print("get_result after delete: TaskResultDoesNotExist")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
