"""The console: one self-contained web page over the job routes, served by FastAPI.

The page (``static/console.html``: HTML, CSS and JavaScript inline, nothing fetched from
elsewhere) lists jobs with live status and progress from ``GET /events``, with counts per
status (``GET /counts``) that filter the table, filters by status and kind, finds a job by
its id or an id prefix (``GET /jobs?id_prefix=``), and opens a job's detail view (its
fields, live events, artifacts, audit trail; ``#job=<id>`` links to it) from its row. It
cancels, retries, deletes (after a confirmation dialog) and deletes artifacts; for admins it
changes priorities, pauses and resumes kinds, lists, adds and removes schedules, reads the
audit trail (``GET /audit``) and filters by tenant. Every outcome is reported in a toast.
Under 640 px wide each job is a card (status, progress and actions without sideways
scrolling).

It calls the job API at ``api_prefix`` with the browser's own credentials (cookies) and
the ``headers`` the host gives :func:`console_router` (fixed, or computed for each page
load by a dependency: an ``Authorization`` header, say), on every request including the
event stream (read with ``fetch``, so it can carry headers). It also passes the
``actor``, ``tenant`` and ``roles`` of its own query string on as the ``X-Actor``,
``X-Tenant`` and ``X-Roles`` headers, which the demo app's actor dependency reads; a real
host authenticates with its own dependency and ignores them.

Mount it where you like, e.g.
``app.include_router(console_router(api_prefix="/api/v1"), prefix="/console")``; the page
is then at ``/console/``. It is not mounted unless the host does so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

try:
    from fastapi import APIRouter, Depends
    from fastapi.responses import HTMLResponse
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("jobkit.integrations.fastapi needs FastAPI: pip install 'jobkit[fastapi]'") from exc

from .._errors import InvalidInput
from ._console_page import render_console

__all__ = ["console_router", "render_console"]


def console_router(
    *,
    api_prefix: str = "/api/v1",
    title: str = "jobkit console",
    headers: Mapping[str, str] | Callable[..., Any] | None = None,
) -> APIRouter:
    """A router serving the console page at ``GET /``, to mount under a prefix of your choice.

    :param api_prefix: where the host mounted :func:`~jobkit.integrations.fastapi.job_router`
        (a path on the same origin, or an http(s) URL).
    :param title: the page's title and heading.
    :param headers: headers the page sends with every API request (the event stream too),
        besides the browser's cookies: a fixed mapping, or a FastAPI dependency returning
        one, run for each page load (e.g. a short-lived ``Authorization`` token for the
        signed-in user). The page is then never cached.
    :raises InvalidInput: ``api_prefix`` is not a path or an http(s) URL, or fixed
        ``headers`` are not header names to printable ASCII text.
    """
    fixed = headers is None or isinstance(headers, Mapping)
    page, policy = render_console(
        api_prefix=api_prefix, title=title, headers=headers if isinstance(headers, Mapping) else None
    )
    if not fixed and not callable(headers):
        raise InvalidInput(f"headers must be a mapping or a dependency, got {type(headers).__name__}.")
    response_headers = {
        "Content-Security-Policy": policy,
        "Cache-Control": "no-cache" if headers is None else "no-store",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    router = APIRouter(tags=["console"])

    if fixed:

        @router.get("/", response_class=HTMLResponse, include_in_schema=False)
        async def console() -> HTMLResponse:
            return HTMLResponse(page, headers=response_headers)

    else:
        assert callable(headers)

        @router.get("/", response_class=HTMLResponse, include_in_schema=False)
        # (a default, not Annotated: this module's annotations are strings, and `headers`
        # is a local name FastAPI could not resolve from one)
        async def console_with_headers(extra: Any = Depends(headers)) -> HTMLResponse:  # noqa: B008
            try:
                personal, _ = render_console(api_prefix=api_prefix, title=title, headers=extra)
            except InvalidInput as exc:  # the host's dependency is wrong, not the request
                raise TypeError(f"The console's headers dependency: {exc.message}") from None
            return HTMLResponse(personal, headers=response_headers)

    return router
