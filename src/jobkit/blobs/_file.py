"""FileBlobStore: artifacts as plain files under a root folder, for one machine.

The blob at ``jobs/<job_id>/out/a.txt`` is the file ``<root>/jobs/<job_id>/out/a.txt``.
Every file operation runs in an anyio worker thread, so the store works on asyncio and
trio without blocking the event loop.

- **Atomic writes.** :meth:`FileBlobStore.put` writes a temporary file in the target
  folder, flushes and ``fsync``s it, then renames it over the target with
  :func:`os.replace`. A reader sees the old blob or the new one, never a part of one.
  Temporary files have reserved names starting with :data:`TEMP_PREFIX`: they are never
  listed nor deleted by :meth:`~FileBlobStore.delete_prefix`, and keys with such a
  segment are refused.
- **Keys never leave the root.** A key is ``/``-separated relative segments; ``..``,
  ``.``, empty segments, absolute paths, backslashes and NUL are :class:`InvalidInput`.
  Symbolic links are resolved: a key whose real path is outside the root (through a
  symlinked folder or file pointing elsewhere) is :class:`InvalidInput` and nothing
  outside the root is read, written or deleted. Listing does not descend into
  symlinked folders.
- **No empty folders left behind.** :meth:`~FileBlobStore.delete` and
  :meth:`~FileBlobStore.delete_prefix` remove the folders they empty, up to (not
  including) the root. A ``put`` racing such a removal recreates its folder and retries.

A key cannot be both a blob and a folder (``a`` and ``a/b``): a ``put`` that would need
one to be the other is :class:`InvalidInput`. On case-insensitive file systems keys that
differ only by case are the same blob.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import secrets
import stat
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from itertools import islice
from typing import BinaryIO, TypeVar

import anyio.to_thread

from .._errors import BackendError, InvalidInput
from .._process import left_by_dead_process, process_tag

__all__ = ["TEMP_PREFIX", "FileBlobStore"]

T = TypeVar("T")

#: Name prefix of the temporary files of writes in progress (reserved: never a key segment).
TEMP_PREFIX = ".jobkit-tmp-"
#: A temporary file this old (seconds) is left over from a put that was killed.
STALE_TEMP_SECONDS = 300

_MAX_SEGMENT_BYTES = 255
_PUT_ATTEMPTS = 100
_O_DIRECTORY: int = getattr(os, "O_DIRECTORY", 0)
_O_NONBLOCK: int = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC: int = getattr(os, "O_CLOEXEC", 0)
_O_BINARY: int = getattr(os, "O_BINARY", 0)


def _check_segment(segment: str, text: str, what: str) -> None:
    if not segment:
        raise InvalidInput(f"A blob {what} cannot have empty segments: {text!r}.")
    if segment in (".", ".."):
        raise InvalidInput(f"A blob {what} cannot contain {segment!r} segments: {text!r}.")
    if segment.startswith(TEMP_PREFIX):
        raise InvalidInput(f"A blob {what} cannot have a segment starting with {TEMP_PREFIX!r} (reserved).")
    if len(segment.encode()) > _MAX_SEGMENT_BYTES:
        raise InvalidInput(f"A blob {what} segment is longer than {_MAX_SEGMENT_BYTES} bytes: {segment!r}.")


def _check_text(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise InvalidInput(f"A blob {what} must be a string, got {type(text).__name__}.")
    if "\x00" in text:
        raise InvalidInput(f"A blob {what} cannot contain NUL characters.")
    if "\\" in text:
        raise InvalidInput(f"A blob {what} cannot contain backslashes: {text!r}; use '/'.")
    if text.startswith("/"):
        raise InvalidInput(f"A blob {what} must be relative, got the absolute path {text!r}.")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise InvalidInput(f"A blob {what} must be valid Unicode text, got {text!r}.") from None
    return text


def key_segments(key: object) -> list[str]:
    """The segments of a valid key; :class:`InvalidInput` for a key that could leave the root."""
    text = _check_text(key, "key")
    segments = text.split("/")
    for segment in segments:
        _check_segment(segment, text, "key")
    return segments


def prefix_parts(prefix: object) -> tuple[list[str], str]:
    """The complete folder segments of ``prefix`` and its last, possibly partial, name."""
    text = _check_text(prefix, "prefix")
    *folders, partial = text.split("/")
    for segment in folders:
        _check_segment(segment, text, "prefix")
    return folders, partial


class FileBlobStore:
    """A :class:`~jobkit.abc.BlobStore` keeping each blob as a file under ``root``.

    :param root: the folder holding the blobs (``str`` or path-like), created by
        :meth:`open` when missing. A relative path is taken from the current folder at
        construction.

    Besides the protocol, :meth:`stream` reads a blob in chunks.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = os.path.abspath(os.fspath(root))
        self._real_root: str | None = None

    def __repr__(self) -> str:
        return f"FileBlobStore(root={self._root!r})"

    @property
    def root(self) -> str:
        """The absolute path of the root folder."""
        return self._root

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Create the root folder when missing."""
        await self._run(self._open_sync)

    async def close(self) -> None:
        """Nothing to release; safe to call twice."""

    # -- protocol --------------------------------------------------------------------

    async def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically, replacing what was there.

        :raises InvalidInput: the key is unsafe, leads outside the root, or needs a blob
            to be a folder (or a folder to be a blob).
        :raises BackendError: the file system refused the write (nothing was changed).
        """
        await self._run(lambda: self._put_sync(key, data))

    async def get(self, key: str) -> bytes:
        """The bytes at ``key``.

        :raises KeyError: no blob at ``key``.
        :raises InvalidInput: the key is unsafe or leads outside the root.
        """
        return await self._run(lambda: self._get_sync(key))

    async def list(self, prefix: str) -> builtins.list[str]:
        """Every key starting with ``prefix`` (which may end mid-name), sorted."""
        return await self._run(lambda: builtins.list(self._keys(prefix, None)))

    async def list_page(
        self, prefix: str, *, after: str | None = None, limit: int = 1000
    ) -> builtins.list[str]:
        """Up to ``limit`` keys starting with ``prefix`` and sorting after ``after``, sorted.

        Only the folders that can hold keys of the page are read.
        """
        if limit < 1:
            return []
        return await self._run(lambda: builtins.list(islice(self._keys(prefix, after), limit)))

    async def delete(self, key: str) -> bool:
        """Delete one blob and the folders that become empty; False when there was none."""
        return await self._run(lambda: self._delete_sync(key))

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every blob under ``prefix`` and the folders emptied; return how many blobs."""
        return await self._run(lambda: self._delete_prefix_sync(prefix))

    # -- streaming -------------------------------------------------------------------

    async def stream(self, key: str, chunk_size: int = 65536) -> AsyncGenerator[bytes, None]:
        """The bytes at ``key`` in chunks of ``chunk_size`` (the last one may be shorter).

        Use it as ``async for chunk in store.stream(key)``. The stream reads the blob as
        it was when it started, even if it is replaced meanwhile. Stopping early? Close
        it (``contextlib.aclosing``) to release the file at once.

        :raises KeyError: no blob at ``key`` (on the first iteration).
        :raises InvalidInput: the key is unsafe or ``chunk_size`` is not positive.
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise InvalidInput(f"chunk_size must be a positive integer, got {chunk_size!r}.")
        file = await self._run(lambda: self._open_blob(key))
        try:
            while chunk := await self._run(lambda: file.read(chunk_size)):
                yield chunk
        finally:
            file.close()

    # -- implementation (worker threads) ---------------------------------------------

    async def _run(self, call: Callable[[], T]) -> T:
        try:
            return await anyio.to_thread.run_sync(call)
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise InvalidInput("The blob key is too long for the file system.") from None
            raise BackendError(f"The file blob store at {self._root!r} failed: {exc}") from exc

    def _open_sync(self) -> None:
        os.makedirs(self._root, exist_ok=True)
        self._real_root = os.path.realpath(self._root)

    def _real(self) -> str:
        return self._real_root if self._real_root is not None else os.path.realpath(self._root)

    def _locate(self, key: str) -> tuple[str, str]:
        """The real folder and the file name of ``key``, checked to stay inside the root."""
        segments = key_segments(key)
        root = self._real()
        folder = os.path.realpath(os.path.join(root, *segments[:-1]))
        name = segments[-1]
        real = os.path.realpath(os.path.join(folder, name))
        if not (_within(folder, root) and real != root and _within(real, root)):
            raise InvalidInput(f"The blob key {key!r} leads outside the store's root folder.")
        return folder, name

    def _put_sync(self, key: str, data: bytes) -> None:
        folder, name = self._locate(key)
        path = os.path.join(folder, name)
        for _ in range(_PUT_ATTEMPTS):
            try:
                os.makedirs(folder, exist_ok=True)
                temp = _write_temp(folder, data)
            except FileNotFoundError:
                continue  # a delete removed the (empty) folder meanwhile: create it again
            except (FileExistsError, NotADirectoryError):
                if self._blob_in_the_way(folder):
                    raise InvalidInput(
                        f"Cannot store {key!r}: a part of its folder is a blob, and a key cannot be "
                        "both a blob and a folder."
                    ) from None
                continue  # the folder was removed between its creation and its check
            try:
                os.replace(temp, path)
            except BaseException as exc:
                _remove_quietly(temp)
                if isinstance(exc, IsADirectoryError):
                    raise InvalidInput(
                        f"Cannot store {key!r}: it is a folder of other blobs, and a key cannot be "
                        "both a blob and a folder."
                    ) from None
                raise
            _sync_folder(folder)
            return
        raise BackendError(f"Could not store {key!r}: its folder kept disappearing; try again.")

    def _blob_in_the_way(self, folder: str) -> bool:
        root = self._real()
        while folder != root and _within(folder, root):
            if os.path.lexists(folder) and not os.path.isdir(folder):
                return True
            folder = os.path.dirname(folder)
        return False

    def _open_blob(self, key: str) -> BinaryIO:
        folder, name = self._locate(key)
        try:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY | _O_NONBLOCK | _O_CLOEXEC | _O_BINARY)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(key) from None
        try:
            is_blob = stat.S_ISREG(os.fstat(fd).st_mode)  # not a folder, a FIFO, a device
            if is_blob:
                return open(fd, "rb", closefd=True)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        raise KeyError(key)

    def _get_sync(self, key: str) -> bytes:
        with self._open_blob(key) as file:
            return file.read()

    def _delete_sync(self, key: str) -> bool:
        folder, name = self._locate(key)
        path = os.path.join(folder, name)
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                return False
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        self._prune(folder)
        return True

    def _delete_prefix_sync(self, prefix: str) -> int:
        found = builtins.list(self._walk_prefix(prefix, None))  # never follows a symlink
        parts, partial = prefix_parts(prefix)
        if parts and not partial:
            link = os.path.join(self._real(), *parts)
            if os.path.islink(link):
                os.unlink(link)  # the link goes, never what it points to
                return 0
        deleted = 0
        folders: set[str] = set()
        for _, path in found:
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError):
                continue  # deleted meanwhile by someone else
            deleted += 1
            folders.add(os.path.dirname(path))
        if parts and not partial:
            # What an interrupted put or delete left under the prefix: temporary files
            # (the job is finished, nobody writes there) and empty folders.
            folders.update(self._sweep_leftovers(os.path.join(self._real(), *parts)))
        for folder in sorted(folders, key=lambda f: f.count(os.sep), reverse=True):
            self._prune(folder)
        return deleted

    @staticmethod
    def _sweep_leftovers(top: str) -> builtins.list[str]:
        """Remove stale temporary files under ``top`` (never following links); its folders.

        A temporary file belongs to a put that will never finish when the process named
        in it (``<TEMP_PREFIX><host>-<pid>-<random>``) no longer runs on this host, or when
        it is older than :data:`STALE_TEMP_SECONDS` (another host's, a reused pid); any
        other may be a put in progress.
        """
        seen: builtins.list[str] = []
        cutoff = time.time() - STALE_TEMP_SECONDS
        for folder, _, files in os.walk(top, topdown=False, followlinks=False):
            for name in files:
                if name.startswith(TEMP_PREFIX):
                    path = os.path.join(folder, name)
                    writer = name[len(TEMP_PREFIX) :].rpartition("-")[0]
                    with contextlib.suppress(FileNotFoundError):
                        if left_by_dead_process(writer) or os.lstat(path).st_mtime < cutoff:
                            os.unlink(path)
            seen.append(folder)
        return seen

    def _prune(self, folder: str) -> None:
        """Remove ``folder`` and its parents while they are empty, up to (not including) the root."""
        root = self._real()
        while folder != root and _within(folder, root):
            try:
                os.rmdir(folder)
            except OSError:
                return  # not empty (another blob, a write in progress) or already gone
            folder = os.path.dirname(folder)

    def _keys(self, prefix: str, after: str | None) -> Iterator[str]:
        return (key for key, _ in self._walk_prefix(prefix, after))

    def _walk_prefix(self, prefix: str, after: str | None) -> Iterator[tuple[str, str]]:
        """``(key, path)`` of every blob under ``prefix`` sorting after ``after``, in key order."""
        folders, partial = prefix_parts(prefix)
        root = self._real()
        lexical = os.path.normpath(os.path.join(root, *folders))
        start = os.path.realpath(lexical)
        if not _within(start, root):
            raise InvalidInput(f"The blob prefix {prefix!r} leads outside the store's root folder.")
        if start != lexical:
            # A folder of the prefix is a symlink (made by someone with file-system access):
            # never follow it, or deleting jobs/A/ could delete another job's jobs/B/.
            return iter(())
        base = "".join(f"{folder}/" for folder in folders)
        return self._walk(root, start, base, partial, after)

    def _walk(
        self, root: str, folder: str, base: str, partial: str, after: str | None
    ) -> Iterator[tuple[str, str]]:
        """Blobs in ``folder`` (keys starting with ``base``) whose name starts with ``partial``.

        Sorting a folder's files by name and its sub-folders by ``name + "/"`` and visiting
        them depth first gives the keys in exactly the order of their full strings, so a
        page stops early and skips the sub-folders that sort entirely before ``after``.
        """
        entries: list[tuple[str, os.DirEntry[str], bool]] = []
        try:
            with os.scandir(folder) as scan:
                for entry in scan:
                    name = entry.name
                    if not name.startswith(partial) or name.startswith(TEMP_PREFIX):
                        continue
                    try:
                        name.encode()
                        is_folder = entry.is_dir(follow_symlinks=False)
                    except (UnicodeEncodeError, OSError):
                        continue  # a name that is not a valid key, or an entry that vanished
                    entries.append((f"{name}/" if is_folder else name, entry, is_folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        entries.sort(key=lambda item: item[0])
        for sort_name, entry, is_folder in entries:
            key = base + sort_name
            if is_folder:
                # Every key inside starts with `key`; all of them sort before `after` when
                # `after` is greater than `key` without starting with it.
                if after is None or not (after > key and not after.startswith(key)):
                    yield from self._walk(root, entry.path, key, "", after)
            elif (after is None or key > after) and _is_blob(entry, root):
                yield key, entry.path


def _within(path: str, root: str) -> bool:
    """True when ``path`` is ``root`` or inside it (both real, normalised paths)."""
    return path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep)


def _is_blob(entry: os.DirEntry[str], root: str) -> bool:
    try:
        if entry.is_symlink():
            real = os.path.realpath(entry.path)
            return real != root and _within(real, root) and os.path.isfile(real)
        return entry.is_file(follow_symlinks=False)
    except OSError:
        return False


def _write_temp(folder: str, data: bytes) -> str:
    """A new, fsynced temporary file in ``folder`` holding ``data``; its path."""
    temp = os.path.join(folder, f"{TEMP_PREFIX}{process_tag()}-{secrets.token_hex(8)}")
    with open(temp, "xb") as file:
        try:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        except BaseException:
            _remove_quietly(temp)
            raise
    return temp


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _sync_folder(folder: str) -> None:
    """Make the rename durable (best effort: a concurrent delete may have removed the folder)."""
    if not _O_DIRECTORY:
        return
    try:
        fd = os.open(folder, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
