"""Blob stores: where job artifacts live, under ``jobs/<job_id>/<name>``.

``S3BlobStore`` lives in :mod:`jobkit.blobs.s3` (``pip install jobkit[s3]``).
"""

from __future__ import annotations

from ._file import FileBlobStore as FileBlobStore
from ._memory import MemoryBlobStore as MemoryBlobStore
from ._url import open_blobs as open_blobs

__all__ = ["FileBlobStore", "MemoryBlobStore", "open_blobs"]
