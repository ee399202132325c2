"""`import jobkit` is quick: what only some hosts need loads on first use, and the version is
the package's."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

import jobkit

#: Modules `import jobkit` must leave out (bench/import_time.py measures what this buys).
DEFERRED = ("structlog", "logging", "asyncio", "concurrent.futures", "hashlib", "subprocess", "socket")


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_import_jobkit_leaves_the_heavy_modules_out() -> None:
    """Logging (structlog), the thread portal, hashing, sockets and subprocesses load when used."""
    loaded = _run(f"import sys, jobkit; print(' '.join(m for m in {DEFERRED!r} if m in sys.modules))")
    assert loaded == ""


def test_the_deferred_modules_arrive_when_used_and_logging_stays_quiet() -> None:
    """The blocking facade loads on first access, and jobkit's first log line finds the
    NullHandler already there: nothing reaches stderr through logging's last resort."""
    code = (
        "import sys, jobkit\n"
        "jobs = jobkit.BlockingJobManager(sweep_interval=None, concurrency=0)\n"
        "jobs.declare('later')\n"
        "with jobs:\n"
        "    job = jobs.submit('later')\n"
        "    jobs.cancel(job.id)\n"
        "print(jobs.get is not None, 'concurrent.futures' in sys.modules)\n"
        "from jobkit._log import get_logger\n"
        "get_logger('jobkit').warning('a_warning_nobody_configured')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "True"]
    assert "a_warning_nobody_configured" not in done.stderr


def test_version_is_the_package_metadata_version() -> None:
    assert jobkit.__version__ == importlib.metadata.version("jobkit")
    assert "__version__" in jobkit.__all__


def test_every_public_name_resolves_and_unknown_names_raise() -> None:
    for name in jobkit.__all__:
        assert getattr(jobkit, name) is not None
    assert jobkit.BlockingJobManager.__module__ == "jobkit._blocking"
    with pytest.raises(AttributeError, match="no_such_name"):
        jobkit.no_such_name  # noqa: B018


def test_the_console_page_renders_without_fastapi() -> None:
    """The Django integration serves the console: its renderer imports no web framework."""
    code = (
        "import sys\n"
        "sys.modules['fastapi'] = None  # any import of it now raises ImportError\n"
        "from jobkit.integrations._console_page import render_console\n"
        "page, policy = render_console(api_prefix='/jobs/api')\n"
        "print('/jobs/api' in page, \"script-src 'sha256-\" in policy)\n"
    )
    assert _run(code).split() == ["True", "True"]
