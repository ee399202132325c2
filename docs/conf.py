"""Sphinx configuration: the Markdown pages (MyST) and the API reference (autodoc).

Built by ``make docs`` as ``sphinx-build -W --keep-going -n``: every warning, and every
cross-reference that does not resolve (nitpicky), fails the build; ``tests/test_docs.py``
builds it in ``make test``.

No intersphinx: the build must pass offline (and give the same result with or without a
network), so references to the standard library and to anyio, attrs, structlog, FastAPI,
Flask, Django, psycopg and boto3 are shown as plain names (``nitpick_ignore_regex`` below).
"""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

import jobkit  # noqa: E402

project = "jobkit"
author = "jobkit developers"
copyright = "jobkit developers"
release = getattr(jobkit, "__version__", "")

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "jobkit_docs",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 4

html_theme = "furo"
html_title = "jobkit"
html_static_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autoclass_content = "both"

nitpicky = True
# Names outside jobkit: shown as text, since the build has no intersphinx (see above).
_EXTERNAL = (
    "builtins",
    "collections",
    "contextlib",
    "datetime",
    "enum",
    "os",
    "pathlib",
    "subprocess",
    "types",
    "typing",
    "typing_extensions",
    "anyio",
    "attrs",
    "attr",
    "structlog",
    "logging",
    "fastapi",
    "starlette",
    "flask",
    "werkzeug",
    "psycopg",
    "psycopg_pool",
    "boto3",
    "botocore",
    "django",
    "django_tasks",
    "asgiref",
    "mypy_boto3_s3",
    "pytest",
    "_pytest",
)
# Private names that public signatures mention: type variables, and the implementation
# classes behind a protocol (each store's notifier is a jobkit.abc.Notifier).
nitpick_ignore = [
    ("py:class", "jobkit._context.RunPort"),
    ("py:class", "jobkit.stores._sqlite_notify.SQLiteNotifier"),
    ("py:class", "SQLiteNotifier"),
    ("py:class", "jobkit.stores._postgres_notify.PostgresNotifier"),
    ("py:class", "PostgresNotifier"),
    ("py:class", "S3Client"),  # boto3's client type (types-boto3)
    # run_process's argument types: aliases in jobkit._context, and pathlib.Path, which the
    # annotations name under TYPE_CHECKING only (import jobkit stays quick without pathlib)
    ("py:class", "Argv"),
    ("py:class", "StrPath"),
    ("py:class", "Path"),
]
nitpick_ignore_regex = [
    (r"py:class", r"jobkit(\.\w+)*\.[A-Z]"),  # type variables (jobkit._manager.F)
    (r"py:.*", rf"({'|'.join(_EXTERNAL)})(\..*)?"),
    # builtins written without their module (int, str, Exception, ...)
    (r"py:.*", "|".join(name for name in dir(builtins) if not name.startswith("_"))),
]
