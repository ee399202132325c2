"""The Django app of jobkit's integration: add ``"jobkit.integrations.django"`` to
``INSTALLED_APPS`` for the ``jobkit_worker``, ``jobkit_sweep`` and ``jobkit`` management commands."""

from __future__ import annotations

from django.apps import AppConfig


class JobkitConfig(AppConfig):  # type: ignore[misc]
    """App label ``jobkit``; it has no models: jobkit keeps its own tables in its own store."""

    name = "jobkit.integrations.django"
    label = "jobkit"
    verbose_name = "jobkit"
