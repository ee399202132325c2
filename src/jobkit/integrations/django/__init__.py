"""Django integration (``pip install 'jobkit[django]'``): jobkit as the backend of Django's
Tasks framework, its worker as a management command, and the job routes and console as
Django views.

Django 6 and later ship the Tasks framework as ``django.tasks``; on Django 5.2 install the
``django-tasks`` backport (``jobkit[django]`` does so on Python 3.11). Whichever is
installed is used. The recipe (settings.py)::

    INSTALLED_APPS = [..., "jobkit.integrations.django"]   # the management commands
    TASKS = {
        "default": {
            "BACKEND": "jobkit.integrations.django.JobkitBackend",
            "OPTIONS": {"store": "sqlite:////var/lib/app/jobs.db", "blobs": "file:///var/lib/app/blobs"},
        }
    }

urls.py::

    from jobkit.integrations.django import jobkit_urls
    urlpatterns = [..., path("api/v1/", include(jobkit_urls()))]   # console at api/v1/console/

and run the tasks with ``python manage.py jobkit_worker``. See ``docs/django.md``.
"""

from __future__ import annotations

from .._http import AS_HOST as AS_HOST
from ._backend import JobkitBackend as JobkitBackend
from ._views import ADMIN_ROLE as ADMIN_ROLE
from ._views import default_actor as default_actor
from ._views import jobkit_urls as jobkit_urls
from ._worker import build_worker as build_worker
from ._worker import job_context as job_context

__all__ = [
    "ADMIN_ROLE",
    "AS_HOST",
    "JobkitBackend",
    "build_worker",
    "default_actor",
    "job_context",
    "jobkit_urls",
]
