"""The console: one self-contained web page over the job routes, served by FastAPI.

The page (``static/console.html``: HTML, CSS and JavaScript inline, nothing fetched from
elsewhere) lists jobs with live status and progress from ``GET /events``, filters them
by status and kind, cancels, deletes (after a confirmation dialog), lists and deletes
artifacts, changes priorities (shown to admins only) and reports every outcome in a toast.

It calls the job API at ``api_prefix`` with the browser's own credentials (cookies), and
passes the ``actor``, ``tenant`` and ``roles`` of its own query string on as the
``X-Actor``, ``X-Tenant`` and ``X-Roles`` headers (and as query parameters of the event
stream), which the demo app's actor dependency reads. A real host authenticates with its
own dependency and ignores them.

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
from importlib.resources import files
from urllib.parse import urlsplit

try:
    from fastapi import APIRouter
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


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def render_console(*, api_prefix: str = "/api/v1", title: str = "jobkit console") -> tuple[str, str]:
    """The console page for ``api_prefix`` and ``title``, and its Content-Security-Policy.

    The policy allows only the page's own inline script and style (by hash) and
    connections to its own origin (and to ``api_prefix``'s, when that is a URL).

    :raises InvalidInput: ``api_prefix`` is not a path or an http(s) URL, or ``title`` is
        not a string.
    """
    prefix = _check_prefix(api_prefix)
    if not isinstance(title, str):
        raise InvalidInput(f"title must be a string, got {type(title).__name__}.")
    config = json.dumps({"apiPrefix": prefix, "title": title}, ensure_ascii=True)
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


def console_router(*, api_prefix: str = "/api/v1", title: str = "jobkit console") -> APIRouter:
    """A router serving the console page at ``GET /``, to mount under a prefix of your choice.

    :param api_prefix: where the host mounted :func:`~jobkit.integrations.fastapi.job_router`
        (a path on the same origin, or an http(s) URL).
    :param title: the page's title and heading.
    :raises InvalidInput: ``api_prefix`` is not a path or an http(s) URL.
    """
    page, policy = render_console(api_prefix=api_prefix, title=title)
    headers = {
        "Content-Security-Policy": policy,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    router = APIRouter(tags=["console"])

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def console() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    return router
