"""Build a blob store from a URL."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from .._errors import InvalidInput
from ..abc import BlobStore
from ._memory import MemoryBlobStore

__all__ = ["open_blobs"]


def open_blobs(url: str) -> BlobStore:
    """A blob store for ``url``.

    - ``memory://``: a new :class:`MemoryBlobStore`;
    - ``file://artifacts`` (relative path) or ``file:///var/lib/app/artifacts``
      (absolute): a :class:`FileBlobStore` with that root folder (percent-escapes decoded).

    :raises InvalidInput: the scheme is unknown or the URL is malformed.
    """
    if not isinstance(url, str):
        raise InvalidInput(f"A blob store URL must be a string, got {type(url).__name__}.")
    parts = urlsplit(url)
    if parts.scheme == "memory":
        return MemoryBlobStore()
    if parts.scheme == "file":
        root = unquote(parts.netloc + parts.path)
        if not root or parts.query or parts.fragment or "\x00" in root:
            raise InvalidInput(
                f"Malformed file URL {url!r}: use file://relative/folder or file:///absolute/folder."
            )
        from ._file import FileBlobStore

        return FileBlobStore(root)
    if not parts.scheme and url:
        # file:// then the path: file:///abs for an absolute one, file://rel for a relative one.
        raise InvalidInput(f"{url!r} is a path, not a blob store URL: use file://{url} (or memory://).")
    raise InvalidInput(
        f"Unknown blob store URL scheme {parts.scheme!r} in {url!r}; use memory://, "
        "file://relative/folder or file:///absolute/folder."
    )
