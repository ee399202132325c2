"""Build a store from a URL, for the CLI, the demo and configuration files."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from .._errors import InvalidInput
from ..abc import JobStore

__all__ = ["open_store"]


def open_store(url: str) -> JobStore:
    """A store for ``url``.

    - ``memory://``: a new :class:`MemoryStore`;
    - ``sqlite:///jobs.db`` (relative path) or ``sqlite:////var/lib/app/jobs.db``
      (absolute): a :class:`SQLiteStore`;
    - ``postgresql://user@host:5432/db?schema=jobkit`` (or ``postgres://``): a
      :class:`~jobkit.stores.postgres.PostgresStore` (``jobkit[postgres]``). ``schema``,
      ``min_connections`` and ``max_connections`` are the store's; every other query
      parameter goes to libpq unchanged.

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
    if parts.scheme in ("postgresql", "postgres"):
        return _postgres(url, parts.scheme, parts.netloc, parts.path, parts.query)
    if not parts.scheme and url:
        # A bare path: say which URL means it (a relative path has three slashes, an
        # absolute one four).
        raise InvalidInput(f"{url!r} is a path, not a store URL: use sqlite:///{url} (or memory://).")
    raise InvalidInput(
        f"Unknown store URL scheme {parts.scheme!r} in {url!r}; use memory://, sqlite:///relative.db "
        "or sqlite:////absolute/path.db, "
        "postgresql://user@host/db?schema=jobkit."
    )


_STORE_OPTIONS = ("schema", "min_connections", "max_connections")


def _postgres(url: str, scheme: str, netloc: str, path: str, query: str) -> JobStore:
    options: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in _STORE_OPTIONS:
            if name in options:
                raise InvalidInput(f"{name!r} is given twice in the store URL.")
            options[name] = value
        else:
            rest.append((name, value))
    sizes: dict[str, int] = {}
    for name in ("min_connections", "max_connections"):
        if name in options:
            if not options[name].isdigit():
                given = options[name]
                raise InvalidInput(f"{name} must be a positive integer in the store URL, got {given!r}.")
            sizes[name] = int(options[name])
    from .postgres import PostgresStore

    dsn = urlunsplit((scheme, netloc, path, urlencode(rest), ""))
    return PostgresStore(
        dsn,
        schema=options.get("schema", "jobkit"),
        min_connections=sizes.get("min_connections", 2),
        max_connections=sizes.get("max_connections", 10),
    )
