"""The ``jobkit`` command: manage jobs in a store (or a service's, with ``--url``), run a
worker, start the demo.

Needs the ``cli`` extra (``pip install 'jobkit[cli]'``: typer and rich, plus uvicorn and
FastAPI for ``jobkit demo`` and httpx for ``--url``). They are imported only when the
command runs.

Exit codes: 0 ok, 1 unexpected error, 2 usage error, 3 job not found, 4 invalid state,
5 permission denied (or not signed in), 6 invalid input, 7 backend error, 8 not confirmed;
``jobs watch``: 9 the job failed, 10 it was cancelled. Errors are one line on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

_MISSING = "jobkit.cli needs typer and rich: pip install 'jobkit[cli]'"


def _require_dependencies() -> None:
    """:raises ImportError: typer or rich is not installed (the message names the extra)."""
    try:
        import rich  # noqa: F401
        import typer  # noqa: F401
    except ImportError as exc:
        raise ImportError(_MISSING) from exc


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``jobkit`` command with ``argv`` (default: ``sys.argv[1:]``); exits the process."""
    try:
        _require_dependencies()
    except ImportError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(1) from None
    from ._app import app

    app(args=None if argv is None else list(argv), prog_name="jobkit")
