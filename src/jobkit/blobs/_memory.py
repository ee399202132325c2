"""MemoryBlobStore: artifacts in a dict, for tests and single processes."""

from __future__ import annotations

import builtins
from bisect import bisect_left, bisect_right, insort

__all__ = ["MemoryBlobStore"]


class MemoryBlobStore:
    """A :class:`~jobkit.abc.BlobStore` in process memory, with keys kept sorted for prefix scans."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._keys: list[str] = []

    def __repr__(self) -> str:
        return f"MemoryBlobStore(blobs={len(self._data)})"

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def put(self, key: str, data: bytes) -> None:
        if key not in self._data:
            insort(self._keys, key)
        self._data[key] = bytes(data)

    async def get(self, key: str) -> bytes:
        return self._data[key]

    def _range(self, prefix: str) -> tuple[int, int]:
        start = bisect_left(self._keys, prefix)
        end = start
        keys = self._keys
        while end < len(keys) and keys[end].startswith(prefix):
            end += 1
        return start, end

    async def list(self, prefix: str) -> list[str]:
        start, end = self._range(prefix)
        return self._keys[start:end]

    async def list_page(
        self, prefix: str, *, after: str | None = None, limit: int = 1000
    ) -> builtins.list[str]:
        start, end = self._range(prefix)
        if after is not None:
            start = max(start, bisect_right(self._keys, after))
        return self._keys[start : min(end, start + limit)]

    async def delete(self, key: str) -> bool:
        if self._data.pop(key, None) is None:
            return False
        del self._keys[bisect_left(self._keys, key)]
        return True

    async def delete_prefix(self, prefix: str) -> int:
        start, end = self._range(prefix)
        for key in self._keys[start:end]:
            del self._data[key]
        del self._keys[start:end]
        return end - start
