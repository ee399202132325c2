"""Build a blob store from a URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from .._errors import InvalidInput
from ..abc import BlobStore
from ._memory import MemoryBlobStore

__all__ = ["open_blobs"]


def open_blobs(url: str) -> BlobStore:
    """A blob store for ``url``: ``memory://`` (more schemes arrive with their backends).

    :raises InvalidInput: the scheme is unknown or the URL is malformed.
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBlobStore()
    raise InvalidInput(f"Unknown blob store URL scheme {scheme!r} in {url!r}; use memory://.")
