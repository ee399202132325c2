"""S3BlobStore: artifacts as objects in an S3 bucket (AWS or an S3-compatible server).

Install with ``pip install 'jobkit[s3]'`` (boto3). The blob at ``jobs/<job_id>/out/a.txt``
is the object ``<prefix>jobs/<job_id>/out/a.txt`` in ``bucket``.

- **Both event loops.** boto3 is synchronous: every request runs in an anyio worker thread,
  at most :data:`MAX_CONNECTIONS` at a time (the store's own :class:`anyio.CapacityLimiter`,
  as many as the client's connection pool), on one thread-safe client. Async S3 clients
  (aiobotocore, obstore's async API) fail under trio, so jobkit does not use them.
- **Configuration.** Credentials, region and the rest come from boto3's standard chain
  (environment, ``~/.aws/config`` and ``credentials``, instance or container roles);
  ``endpoint_url`` and ``region`` given here (or in the URL) take precedence. Checksums are
  sent and checked only where S3 requires them (``request_checksum_calculation`` and
  ``response_checksum_validation`` set to ``"when_required"``), which S3-compatible servers
  accept; with an ``endpoint_url`` the bucket is addressed by path.
- **Keys** are checked like :class:`~jobkit.blobs.FileBlobStore`'s (no ``..``, ``.`` or empty
  segments, no absolute paths, backslashes or NUL: :class:`~jobkit.InvalidInput`), and the
  full object key may not exceed S3's 1,024 bytes. Unlike a file system, S3 lets a key be a
  blob and the folder of another (``a`` and ``a/b``).
- **Listing** pages through ``ListObjectsV2`` with continuation tokens, 1,000 keys a request.
- **delete_prefix** lists a page of up to 1,000 keys and removes them with one
  ``DeleteObjects`` while it lists the next page: 2,500 blobs take 3 list and 3 delete
  requests. Keys that S3 refuses are
  collected over every page; any refusal raises :class:`DeletePrefixError` (a
  :class:`~jobkit.BackendError`) naming them, after deleting everything else. The manager
  then queues the prefix on its durable purge queue and the sweeper retries it.
- **delete** returns False for a missing key: S3 answers a delete with 204 whether or not the
  object existed, so the store asks first (a ``HeadObject``, then the ``DeleteObject``). A
  concurrent delete of the same key may make both calls return True.
"""

from __future__ import annotations

import builtins
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import anyio
import anyio.to_thread

from .._errors import BackendError, InvalidInput
from ._file import key_segments, prefix_parts

try:
    import boto3.session
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError("jobkit.blobs.s3 needs boto3: pip install 'jobkit[s3]'") from exc

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client
    from types_boto3_s3.type_defs import ObjectIdentifierTypeDef

__all__ = ["DELETE_BATCH", "MAX_CONNECTIONS", "DeletePrefixError", "S3BlobStore"]

T = TypeVar("T")

#: Most keys S3 accepts in one ``DeleteObjects`` request (and returns in one listing page).
DELETE_BATCH = 1000
#: DeleteObjects requests of one delete_prefix in flight while the next page is listed.
DELETES_IN_FLIGHT = 2
#: Requests in flight per store: worker threads (the store's limiter) and pooled connections.
MAX_CONNECTIONS = 16
#: S3's limit on the length of an object key, in UTF-8 bytes.
MAX_KEY_BYTES = 1024

# S3's rules for new buckets are stricter (lower case, 3-63 characters); S3-compatible
# servers and legacy buckets allow a little more, so only what can never be a bucket is refused.
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


class DeletePrefixError(BackendError):
    """S3 refused to delete some keys under a prefix; every other key was deleted.

    The manager treats it as any :class:`~jobkit.BackendError` of a delete: the prefix goes
    on the durable purge queue (``on_artifact_error="defer"``) or the delete fails.
    """

    def __init__(self, prefix: str, deleted: int, failed: Mapping[str, str]) -> None:
        shown = ", ".join(f"{key!r} ({why})" for key, why in list(failed.items())[:3])
        more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
        super().__init__(
            f"S3 refused to delete {len(failed)} of the blobs under {prefix!r}: {shown}{more}; "
            f"{deleted} were deleted. Deleting the prefix again retries the rest."
        )
        #: The prefix being deleted (as given, without the store's prefix).
        self.prefix = prefix
        #: How many blobs were deleted before and besides the refused ones.
        self.deleted = deleted
        #: Each refused key (without the store's prefix) -> S3's ``"Code: message"``.
        self.failed: Mapping[str, str] = MappingProxyType(dict(failed))


def _check_bucket(bucket: object) -> str:
    if not isinstance(bucket, str) or not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise InvalidInput(
            f"{bucket!r} is not an S3 bucket name: use 3-255 letters, digits, '.', '-' or '_', "
            "starting and ending with a letter or digit."
        )
    return bucket


def _check_prefix(prefix: object) -> str:
    """The store prefix as a folder (``""`` or ``"a/b/"``)."""
    if not isinstance(prefix, str):
        raise InvalidInput(f"An S3 key prefix must be a string, got {type(prefix).__name__}.")
    if not prefix:
        return ""
    folder = prefix.removesuffix("/")
    try:
        key_segments(folder)
    except InvalidInput as exc:
        raise InvalidInput(f"Invalid S3 key prefix {prefix!r}: {exc}") from None
    return folder + "/"


def _check_endpoint(endpoint_url: object) -> str | None:
    if endpoint_url is None:
        return None
    if isinstance(endpoint_url, str):
        parts = urlsplit(endpoint_url)
        if parts.scheme in ("http", "https") and parts.hostname and not parts.query and not parts.fragment:
            return endpoint_url
    raise InvalidInput(
        "endpoint_url must be an http:// or https:// URL such as http://127.0.0.1:9000, "
        f"got {endpoint_url!r}."
    )


def _check_region(region: object) -> str | None:
    if region is None:
        return None
    if isinstance(region, str) and re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", region):
        return region
    raise InvalidInput(f"region must be an AWS region name such as us-east-1, got {region!r}.")


class S3BlobStore:
    """A :class:`~jobkit.abc.BlobStore` keeping each blob as an object in an S3 bucket.

    :param bucket: the bucket, which must exist (:meth:`open` checks it can be reached).
    :param prefix: a folder inside the bucket holding every key of this store
        (``"apps/reports"``; ``""`` for the whole bucket), so several apps share a bucket.
    :param endpoint_url: an S3-compatible server (``http://127.0.0.1:9000``); ``None`` for
        AWS or whatever boto3's configuration names.
    :param region: the bucket's region; ``None`` for boto3's configuration.
    :raises InvalidInput: a malformed bucket, prefix, endpoint or region.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        self._bucket = _check_bucket(bucket)
        self._prefix = _check_prefix(prefix)
        self._endpoint_url = _check_endpoint(endpoint_url)
        self._region = _check_region(region)
        self._client: S3Client | None = None
        self._client_lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None

    def __repr__(self) -> str:
        where = f", endpoint_url={self._endpoint_url!r}" if self._endpoint_url else ""
        return f"S3BlobStore(bucket={self._bucket!r}, prefix={self._prefix!r}{where})"

    @property
    def bucket(self) -> str:
        """The bucket's name."""
        return self._bucket

    @property
    def prefix(self) -> str:
        """The folder in the bucket holding this store's keys: ``""`` or ending in ``/``."""
        return self._prefix

    @property
    def client(self) -> S3Client:
        """The boto3 S3 client (thread-safe; created on first use), e.g. for presigned URLs.

        Its calls block: make them from a worker thread, not the event loop.
        """
        return self._client_sync()

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Create the client and check that the bucket can be reached.

        :raises BackendError: the bucket does not exist, access is denied, no credentials
            were found, or the endpoint cannot be reached.
        """
        await self._run(lambda client: client.head_bucket(Bucket=self._bucket))

    async def close(self) -> None:
        """Close the client's connections; safe to call twice (a later call opens a new client)."""
        with self._client_lock:
            client, self._client = self._client, None
        self._limiter = None
        if client is not None:
            client.close()

    # -- protocol --------------------------------------------------------------------

    async def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` (one ``PutObject``: atomic, replacing what was there).

        :raises InvalidInput: the key is unsafe or too long.
        :raises BackendError: S3 refused the write or could not be reached.
        """
        name = self._key(key)
        body = bytes(data)
        await self._run(lambda client: client.put_object(Bucket=self._bucket, Key=name, Body=body))

    async def get(self, key: str) -> bytes:
        """The bytes at ``key``.

        :raises KeyError: no blob at ``key``.
        :raises InvalidInput: the key is unsafe or too long.
        """
        name = self._key(key)

        def get(client: S3Client) -> bytes:
            try:
                response = client.get_object(Bucket=self._bucket, Key=name)
            except ClientError as exc:
                if _is_missing(exc):
                    raise KeyError(key) from None
                raise
            with response["Body"] as body:
                return body.read()

        return await self._run(get)

    async def list(self, prefix: str) -> builtins.list[str]:
        """Every key starting with ``prefix`` (which may end mid-name), sorted."""
        full = self._list_prefix(prefix)

        def walk(client: S3Client) -> builtins.list[str]:
            keys: builtins.list[str] = []
            token: str | None = None
            while True:
                page, token = self._page(client, full, None, token, DELETE_BATCH)
                keys.extend(page)
                if token is None:
                    return keys

        return await self._run(walk)

    async def list_page(
        self, prefix: str, *, after: str | None = None, limit: int = 1000
    ) -> builtins.list[str]:
        """Up to ``limit`` keys starting with ``prefix`` and sorting after ``after``, sorted.

        One ``ListObjectsV2`` per 1,000 keys of the page.
        """
        full = self._list_prefix(prefix)
        if after is not None and not isinstance(after, str):
            raise InvalidInput(f"`after` must be a string or None, got {type(after).__name__}.")
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise InvalidInput(f"limit must be an integer, got {limit!r}.")
        if limit < 1:
            return []
        start = None if after is None else self._prefix + after

        def walk(client: S3Client) -> builtins.list[str]:
            keys: builtins.list[str] = []
            token: str | None = None
            while len(keys) < limit:
                page, token = self._page(client, full, start, token, min(limit - len(keys), DELETE_BATCH))
                keys.extend(page)
                if token is None:
                    break
            return keys

        return await self._run(walk)

    async def delete(self, key: str) -> bool:
        """Delete one blob; False when there was none (a ``HeadObject``, then a ``DeleteObject``)."""
        name = self._key(key)

        def delete(client: S3Client) -> bool:
            try:
                client.head_object(Bucket=self._bucket, Key=name)
            except ClientError as exc:
                if _is_missing(exc):
                    return False
                raise
            client.delete_object(Bucket=self._bucket, Key=name)
            return True

        return await self._run(delete)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every blob under ``prefix``; return how many were deleted.

        Pages of up to 1,000 keys, each removed with one ``DeleteObjects`` while the next
        page is listed (at most ``DELETES_IN_FLIGHT`` (2) at a time).

        :raises DeletePrefixError: S3 refused some keys (the others were deleted).
        :raises BackendError: a request failed (after boto3's retries); what was deleted
            before it stays deleted, so deleting the prefix again finishes the work.
        """
        full = self._list_prefix(prefix)
        outcome = _Outcome()
        async with anyio.create_task_group() as tg:
            token: str | None = None
            while outcome.error is None:
                # The listing follows its continuation token, which deleting the listed keys
                # does not disturb (refused keys are not listed twice), so the next page is
                # listed while this one is deleted.
                try:
                    page, token = await self._run(partial(self._page, prefix=full, token=token))
                except BackendError as exc:
                    outcome.error = exc
                    break
                if page:
                    await outcome.slots.acquire()
                    tg.start_soon(self._delete_batch, page, outcome)
                if token is None:
                    break
        if outcome.error is not None:
            raise BackendError(
                f"{outcome.error} {outcome.deleted} blobs under {prefix!r} were deleted before."
            ) from outcome.error
        if outcome.failed:
            raise DeletePrefixError(prefix, outcome.deleted, outcome.failed)
        return outcome.deleted

    async def delete_many(self, keys: Sequence[str]) -> int:
        """Delete ``keys`` (as listed before) in ``DeleteObjects`` of up to 1,000 keys, at
        most ``DELETES_IN_FLIGHT`` (2) at a time; return how many were deleted.

        :raises DeletePrefixError: S3 refused some keys (the others were deleted).
        :raises BackendError: a request failed (after boto3's retries).
        """
        for key in keys:
            self._key(key)
        outcome = _Outcome()
        async with anyio.create_task_group() as tg:
            for start in range(0, len(keys), DELETE_BATCH):
                await outcome.slots.acquire()
                tg.start_soon(self._delete_batch, list(keys[start : start + DELETE_BATCH]), outcome)
        if outcome.error is not None:
            message = f"{outcome.error} {outcome.deleted} blobs were deleted before."
            raise BackendError(message) from outcome.error
        if outcome.failed:
            raise DeletePrefixError(os.path.commonpath(list(keys)) + "/", outcome.deleted, outcome.failed)
        return outcome.deleted

    # -- implementation (worker threads) ---------------------------------------------

    def _key(self, key: str) -> str:
        key_segments(key)
        name = self._prefix + key
        if len(name.encode()) > MAX_KEY_BYTES:
            raise InvalidInput(f"The blob key {key!r} is longer than S3's {MAX_KEY_BYTES} bytes.")
        return name

    def _list_prefix(self, prefix: str) -> str:
        prefix_parts(prefix)
        return self._prefix + prefix

    def _client_sync(self) -> S3Client:
        with self._client_lock:
            if self._client is None:
                config = Config(
                    region_name=self._region,
                    max_pool_connections=MAX_CONNECTIONS,
                    retries={"mode": "standard"},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    s3={"addressing_style": "path"} if self._endpoint_url else None,
                )
                session = boto3.session.Session()
                self._client = session.client("s3", endpoint_url=self._endpoint_url, config=config)
            return self._client

    async def _run(self, call: Callable[[S3Client], T]) -> T:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(MAX_CONNECTIONS)
        try:
            return await anyio.to_thread.run_sync(lambda: call(self._client_sync()), limiter=self._limiter)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc) from exc

    def _error(self, exc: BotoCoreError | ClientError) -> BackendError:
        where = f"S3 bucket {self._bucket!r}" + (f" at {self._endpoint_url}" if self._endpoint_url else "")
        if isinstance(exc, NoCredentialsError):
            return BackendError(
                f"No AWS credentials found for the {where}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or give the host a role."
            )
        if isinstance(exc, ClientError):
            error: Mapping[str, Any] = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code == "NoSuchBucket" or (code == "404" and exc.operation_name == "HeadBucket"):
                return BackendError(f"The {where} does not exist. Create it, or check the bucket's name.")
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return BackendError(f"Access to the {where} was denied ({code}): check the credentials.")
            return BackendError(
                f"The {where} failed ({exc.operation_name}: {code} {error.get('Message', '')})."
            )
        return BackendError(f"The {where} failed: {exc}")

    def _page(
        self,
        client: S3Client,
        prefix: str,
        start: str | None = None,
        token: str | None = None,
        limit: int = DELETE_BATCH,
    ) -> tuple[builtins.list[str], str | None]:
        """One listing page (keys without the store prefix) and the token of the next one."""
        if token is not None:
            response = client.list_objects_v2(
                Bucket=self._bucket, Prefix=prefix, MaxKeys=limit, ContinuationToken=token
            )
        elif start is not None:
            response = client.list_objects_v2(
                Bucket=self._bucket, Prefix=prefix, MaxKeys=limit, StartAfter=start
            )
        else:
            response = client.list_objects_v2(Bucket=self._bucket, Prefix=prefix, MaxKeys=limit)
        cut = len(self._prefix)
        keys = [item["Key"][cut:] for item in response.get("Contents", [])]
        following = response.get("NextContinuationToken") if response.get("IsTruncated") else None
        return keys, following

    async def _delete_batch(self, page: builtins.list[str], outcome: _Outcome) -> None:
        """One ``DeleteObjects`` for a listed page; what happened goes into ``outcome``."""
        objects: builtins.list[ObjectIdentifierTypeDef] = [{"Key": self._prefix + key} for key in page]
        try:
            response = await self._run(
                lambda client: client.delete_objects(
                    Bucket=self._bucket, Delete={"Objects": objects, "Quiet": True}
                )
            )
        except BackendError as exc:
            outcome.error = outcome.error or exc
            return
        finally:
            outcome.slots.release()
        errors = response.get("Errors", [])
        cut = len(self._prefix)
        for item in errors:
            key = item.get("Key", "")
            outcome.failed[key[cut:]] = f"{item.get('Code', 'Error')}: {item.get('Message', '')}"
        outcome.deleted += len(page) - len(errors)


class _Outcome:
    """What the DeleteObjects of one delete_prefix did so far."""

    def __init__(self) -> None:
        self.deleted = 0
        self.failed: dict[str, str] = {}
        self.error: BackendError | None = None
        # A page is deleted while the next one is listed; at most this many wait.
        self.slots = anyio.Semaphore(DELETES_IN_FLIGHT)


def _is_missing(exc: ClientError) -> bool:
    error: Mapping[str, Any] = exc.response.get("Error", {})
    return str(error.get("Code", "")) in _MISSING
