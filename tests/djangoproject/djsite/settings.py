"""Settings of the test project: the jobkit store, its blobs and Django's own database
come from the environment (each test gives its own), with throwaway defaults."""

import importlib.util
import os
import tempfile
from pathlib import Path

_HERE = Path(tempfile.gettempdir()) / f"jobkit-djangoproject-{os.getpid()}"
_HERE.mkdir(exist_ok=True)

SECRET_KEY = "jobkit-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    *(["django_tasks"] if importlib.util.find_spec("django_tasks") else []),
    "jobkit.integrations.django",
    "djapp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "djsite.urls"
LOGIN_URL = "/login/"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("JOBKIT_DJANGO_DB", str(_HERE / "django.sqlite3")),
    }
}
TASKS = {
    "default": {
        "BACKEND": "jobkit.integrations.django.JobkitBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {
            "store": os.environ.get("JOBKIT_DJANGO_STORE", f"sqlite:///{_HERE / 'jobs.db'}"),
            "blobs": os.environ.get("JOBKIT_DJANGO_BLOBS", f"file://{_HERE / 'blobs'}"),
            "cancel_grace": 2.0,
            "poll_interval": 0.2,
        },
    }
}
LOGGING_CONFIG = None
