"""Build a store from a URL, for the CLI, the demo and configuration files."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from .._errors import InvalidInput
from ..abc import JobStore

__all__ = ["open_store"]


def open_store(url: str) -> JobStore:
    """A store for ``url``.

    - ``memory://``: a new :class:`MemoryStore`;
    - ``sqlite:///jobs.db`` (relative path) or ``sqlite:////var/lib/app/jobs.db``
      (absolute): a :class:`SQLiteStore`.

    :raises InvalidInput: the scheme is unknown or the URL is malformed.
    """
    if not isinstance(url, str):
        raise InvalidInput(f"A store URL must be a string, got {type(url).__name__}.")
    parts = urlsplit(url)
    if parts.scheme == "memory":
        from ._memory import MemoryStore

        return MemoryStore()
    if parts.scheme == "sqlite":
        if parts.netloc or not parts.path.startswith("/") or len(parts.path) < 2:
            raise InvalidInput(
                f"Malformed SQLite URL {url!r}: use sqlite:///relative/jobs.db or sqlite:////absolute/jobs.db."
            )
        from ._sqlite import SQLiteStore

        return SQLiteStore(unquote(parts.path[1:]))
    if not parts.scheme and url:
        # A bare path: say which URL means it (a relative path has three slashes, an
        # absolute one four).
        raise InvalidInput(f"{url!r} is a path, not a store URL: use sqlite:///{url} (or memory://).")
    raise InvalidInput(
        f"Unknown store URL scheme {parts.scheme!r} in {url!r}; use memory://, sqlite:///relative.db "
        "or sqlite:////absolute/path.db."
    )
