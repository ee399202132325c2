"""Build a store from a URL, for the CLI, the demo and configuration files."""

from __future__ import annotations

from urllib.parse import urlsplit

from .._errors import InvalidInput
from ..abc import JobStore
from ._memory import MemoryStore

__all__ = ["open_store"]


def open_store(url: str) -> JobStore:
    """A store for ``url``: ``memory://`` (more schemes arrive with their backends).

    :raises InvalidInput: the scheme is unknown or the URL is malformed.
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryStore()
    raise InvalidInput(f"Unknown store URL scheme {scheme!r} in {url!r}; use memory://.")
