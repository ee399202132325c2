"""The Django test project (tests/djangoproject), set up once per test process.

Django's settings are process-global: only the Django test files use this module, each
process configures Django once (``setup()``), and each test or module swaps the jobkit
store in ``TASKS`` with ``override_settings`` — the rest of the suite never sees Django.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent / "djangoproject"


_configured: list[Path] = []


def setup(workdir: Path) -> None:
    """Configure Django for this process with the test project (its database in ``workdir``),
    once: later calls keep the first configuration."""
    if _configured:
        return
    _configured.append(workdir)
    if str(PROJECT) not in sys.path:
        sys.path.insert(0, str(PROJECT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "djsite.settings"
    os.environ["JOBKIT_DJANGO_DB"] = str(workdir / "django.sqlite3")
    os.environ["JOBKIT_DJANGO_STORE"] = f"sqlite:///{workdir / 'jobs.db'}"
    os.environ["JOBKIT_DJANGO_BLOBS"] = f"file://{workdir / 'blobs'}"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def tasks_settings(store: str, blobs: str, **options: Any) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "jobkit.integrations.django.JobkitBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"store": store, "blobs": blobs, "cancel_grace": 2.0, "poll_interval": 0.2, **options},
        }
    }


@contextmanager
def using_store(store: str, blobs: str) -> Iterator[Any]:
    """The project's JobkitBackend on ``store`` and ``blobs`` while the block runs; the
    process's managers are stopped at its end."""
    from django.test import override_settings

    from jobkit.integrations.django._backend import stop_managers
    from jobkit.integrations.django._compat import task_backends

    with override_settings(TASKS=tasks_settings(store, blobs)):
        try:
            yield task_backends["default"]
        finally:
            stop_managers()


def store_url(kind: str, tmp: Path, pg_dsn: str | None) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'jobs.db'}"
    from pgserver import new_schema

    assert pg_dsn is not None
    return f"{pg_dsn}?schema={new_schema()}"


def make_user(name: str, *, staff: bool = False) -> Any:
    from django.contrib.auth.models import User

    user, _ = User.objects.get_or_create(username=name, defaults={"is_staff": staff})
    return user
