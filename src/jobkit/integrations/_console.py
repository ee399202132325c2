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

import base64
import hashlib
import html
import json
import re
from collections.abc import Callable, Mapping
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

try:
    from fastapi import APIRouter, Depends
    from fastapi.responses import HTMLResponse
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("jobkit.integrations.fastapi needs FastAPI: pip install 'jobkit[fastapi]'") from exc

from .._errors import InvalidInput

__all__ = ["console_router", "render_console"]

_CONFIG_SLOT = "{{JOBKIT_CONFIG}}"
_TITLE_SLOT = "{{JOBKIT_TITLE}}"
_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
_STYLE = re.compile(r"<style>(.*?)</style>", re.DOTALL)


def _template() -> str:
    page = files("jobkit.integrations").joinpath("static").joinpath("console.html")
    return page.read_text(encoding="utf-8")


def _check_prefix(api_prefix: str) -> str:
    if not isinstance(api_prefix, str):
        raise InvalidInput(f"api_prefix must be a string, got {type(api_prefix).__name__}.")
    prefix = api_prefix.rstrip("/")
    parts = urlsplit(prefix)
    absolute = parts.scheme in ("http", "https") and bool(parts.netloc)
    if not (absolute or prefix == "" or (prefix.startswith("/") and not prefix.startswith("//"))):
        raise InvalidInput(
            f"api_prefix must be a path starting with '/' (e.g. '/api/v1') or an http(s) URL, "
            f"got {api_prefix!r}."
        )
    if parts.query or parts.fragment or any(c.isspace() or c in "\"'<>\\" for c in prefix):
        raise InvalidInput(f"api_prefix must be a plain path or URL, got {api_prefix!r}.")
    return prefix


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")


def _check_headers(headers: object) -> dict[str, str]:
    """The console's extra request headers: a mapping of header names to printable ASCII.

    :raises InvalidInput: it is not such a mapping.
    """
    if not isinstance(headers, Mapping):
        raise InvalidInput(f"The console's headers must be a mapping, got {type(headers).__name__}.")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise InvalidInput(f"The console's header name {name!r} is not a valid HTTP header name.")
        if not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value):
            raise InvalidInput(f"The console's header {name} must be printable ASCII text, got {value!r}.")
        checked[name] = value
    return checked


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def render_console(
    *, api_prefix: str = "/api/v1", title: str = "jobkit console", headers: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """The console page for ``api_prefix`` and ``title`` (sending ``headers`` with every
    request), and its Content-Security-Policy.

    The policy allows only the page's own inline script and style (by hash) and
    connections to its own origin (and to ``api_prefix``'s, when that is a URL).

    :raises InvalidInput: ``api_prefix`` is not a path or an http(s) URL, ``title`` is
        not a string, or ``headers`` not a mapping of header names to printable ASCII.
    """
    prefix = _check_prefix(api_prefix)
    if not isinstance(title, str):
        raise InvalidInput(f"title must be a string, got {type(title).__name__}.")
    extra = _check_headers({} if headers is None else headers)
    config = json.dumps({"apiPrefix": prefix, "title": title, "headers": extra}, ensure_ascii=True)
    # inside <script type="application/json">, only "<" could end the element early
    config = config.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    page = _template().replace(_CONFIG_SLOT, config).replace(_TITLE_SLOT, html.escape(title))
    scripts = " ".join(_hash(body) for body in _SCRIPT.findall(page))
    styles = " ".join(_hash(body) for body in _STYLE.findall(page))
    connect = "'self'"
    parts = urlsplit(prefix)
    if parts.scheme:
        connect += f" {parts.scheme}://{parts.netloc}"
    policy = (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; connect-src {connect}; "
        "img-src 'self' data: blob:; base-uri 'none'; frame-ancestors 'self'"
    )
    return page, policy


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
