"""Build a blob store from a URL."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit

from .._errors import InvalidInput
from ..abc import BlobStore
from ._memory import MemoryBlobStore

__all__ = ["open_blobs"]


def open_blobs(url: str) -> BlobStore:
    """A blob store for ``url``.

    - ``memory://``: a new :class:`MemoryBlobStore`;
    - ``file://artifacts`` (relative path) or ``file:///var/lib/app/artifacts``
      (absolute): a :class:`FileBlobStore` with that root folder (percent-escapes decoded);
    - ``s3://bucket/optional/prefix?endpoint_url=http://127.0.0.1:9000&region=us-east-1``:
      an :class:`~jobkit.blobs.s3.S3BlobStore` (``pip install 'jobkit[s3]'``); both query
      parameters are optional, and credentials come from boto3's standard configuration.

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
    if parts.scheme == "s3":
        return _open_s3(url)
    if not parts.scheme and url:
        # file:// then the path: file:///abs for an absolute one, file://rel for a relative one.
        raise InvalidInput(f"{url!r} is a path, not a blob store URL: use file://{url} (or memory://).")
    raise InvalidInput(
        f"Unknown blob store URL scheme {parts.scheme!r} in {url!r}; use memory://, "
        "file://relative/folder, file:///absolute/folder or s3://bucket/prefix."
    )


_S3_PARAMETERS = ("endpoint_url", "region")


def _open_s3(url: str) -> BlobStore:
    """``s3://bucket/prefix?endpoint_url=...&region=...`` -> S3BlobStore."""
    parts = urlsplit(url)
    usage = "use s3://bucket/optional/prefix?endpoint_url=http://host:port&region=us-east-1"
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise InvalidInput(f"Malformed query in the S3 URL {url!r}: {usage}.") from None
    options: dict[str, str] = {}
    for name, value in query:
        if name not in _S3_PARAMETERS:
            raise InvalidInput(
                f"Unknown parameter {name!r} in the S3 URL {url!r}: only endpoint_url and region are known."
            )
        if name in options:
            raise InvalidInput(f"The parameter {name!r} appears twice in the S3 URL {url!r}.")
        if not value:
            raise InvalidInput(f"The parameter {name!r} is empty in the S3 URL {url!r}.")
        options[name] = value
    if not parts.netloc or "@" in parts.netloc or parts.fragment:
        raise InvalidInput(f"Malformed S3 URL {url!r}: {usage}.")
    prefix = unquote(parts.path.removeprefix("/"))
    from .s3 import S3BlobStore

    return S3BlobStore(
        parts.netloc,
        prefix,
        endpoint_url=options.get("endpoint_url"),
        region=options.get("region"),
    )
