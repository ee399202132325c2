"""The console page itself (``static/console.html`` with its settings filled in), for any
web framework: :func:`jobkit.integrations.fastapi.console_router` serves it on FastAPI and
:func:`jobkit.integrations.django.jobkit_urls` on Django. Needs no web framework to import.

See :mod:`jobkit.integrations._console` for what the page does.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Mapping
from importlib.resources import files
from urllib.parse import urlsplit

from .._errors import InvalidInput

__all__ = ["render_console"]

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
