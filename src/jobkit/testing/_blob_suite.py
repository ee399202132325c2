"""The BlobStore conformance suite: every blob store, ours or yours, must pass it.

Subclass :class:`BlobStoreSuite` in your tests and provide a ``store`` fixture that
yields an opened blob store, empty at the start of each test::

    import pytest
    from jobkit.testing import BlobStoreSuite

    class TestMyBlobStore(BlobStoreSuite):
        @pytest.fixture
        async def store(self, tmp_path):
            store = MyBlobStore(tmp_path / "blobs")
            await store.open()
            yield store
            await store.close()

The tests are async and run through anyio's pytest plugin, on whatever ``anyio_backend``
your test session provides. Keys are ``/``-separated and valid for every backend: no key
is both a blob and the folder of another (``a`` and ``a/b``), and no two keys differ only
by case.
"""

from __future__ import annotations

import anyio
import pytest

from ..abc import BlobStore, ManyDeleter

__all__ = ["BlobStoreSuite"]

#: Keys whose sorted order differs from a folder-by-folder walk: '-' and '.' sort before
#: '/', '0' after it, upper case before lower case, and non-ASCII after ASCII.
TRICKY_KEYS = [
    "jobs/a/x",
    "jobs/a-b",
    "jobs/a.c",
    "jobs/a0",
    "jobs/a/y/z",
    "jobs/B",
    "jobs/é",
    "jobs/z",
    "jobs/a/x.txt",
    "jobs/a/x-1",
]


async def _put_all(store: BlobStore, keys: list[str], workers: int = 16) -> None:
    """Store ``key.encode()`` at every key, ``workers`` puts at a time."""
    send, receive = anyio.create_memory_object_stream[str](len(keys))
    with send:
        for key in keys:
            send.send_nowait(key)

    async def worker() -> None:
        async for key in receive:
            await store.put(key, key.encode())

    with receive:
        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)


class BlobStoreSuite:
    """The contract of :class:`jobkit.abc.BlobStore`. Subclass it and provide a ``store`` fixture."""

    pytestmark = pytest.mark.anyio

    # -- put and get -------------------------------------------------------------------

    async def test_put_then_get_round_trips(self, store: BlobStore) -> None:
        """The bytes put at a key come back unchanged from get."""
        await store.put("jobs/j1/out/a.txt", b"hello")
        assert await store.get("jobs/j1/out/a.txt") == b"hello"

    async def test_put_overwrites(self, store: BlobStore) -> None:
        """A second put at the same key replaces the bytes; the key is listed once."""
        await store.put("jobs/j1/a", b"first version, longer")
        await store.put("jobs/j1/a", b"second")
        assert await store.get("jobs/j1/a") == b"second"
        assert await store.list("jobs/") == ["jobs/j1/a"]

    async def test_get_missing_raises_key_error(self, store: BlobStore) -> None:
        """get of a key never stored raises KeyError."""
        with pytest.raises(KeyError):
            await store.get("jobs/nope/a.txt")

    async def test_get_of_a_folder_raises_key_error(self, store: BlobStore) -> None:
        """A prefix that holds blobs is not itself a blob: get raises KeyError."""
        await store.put("jobs/j1/a", b"x")
        with pytest.raises(KeyError):
            await store.get("jobs/j1")

    async def test_empty_blob_round_trips(self, store: BlobStore) -> None:
        """An empty blob is stored, listed and read back as b''."""
        await store.put("jobs/j1/empty", b"")
        assert await store.get("jobs/j1/empty") == b""
        assert await store.list("jobs/j1/") == ["jobs/j1/empty"]

    async def test_every_byte_value_round_trips(self, store: BlobStore) -> None:
        """Binary data with every byte value (NUL, CR, LF, 0xFF...) comes back byte for byte."""
        data = bytes(range(256)) * 64 + b"\r\n\x00\xff"
        await store.put("jobs/j1/bin", data)
        assert await store.get("jobs/j1/bin") == data

    async def test_keys_with_spaces_and_unicode_round_trip(self, store: BlobStore) -> None:
        """Segments may hold spaces, dots, dashes and non-ASCII letters."""
        keys = ["jobs/j1/a b.txt", "jobs/j1/.hidden", "jobs/j1/été/..x", "jobs/j1/日本.bin"]
        for key in keys:
            await store.put(key, key.encode())
        for key in keys:
            assert await store.get(key) == key.encode()
        assert await store.list("jobs/j1/") == sorted(keys)

    async def test_blobs_are_independent(self, store: BlobStore) -> None:
        """Overwriting or deleting one key leaves a key with a longer name untouched."""
        await store.put("jobs/j1/report", b"short")
        await store.put("jobs/j1/report.txt", b"long")
        await store.put("jobs/j1/report", b"changed")
        assert await store.delete("jobs/j1/report")
        assert await store.get("jobs/j1/report.txt") == b"long"

    # -- list --------------------------------------------------------------------------

    async def test_list_is_sorted_by_full_key_string(self, store: BlobStore) -> None:
        """list returns keys in plain string order, not folder by folder."""
        for key in reversed(TRICKY_KEYS):
            await store.put(key, b"x")
        assert await store.list("jobs/") == sorted(TRICKY_KEYS)

    async def test_list_with_empty_prefix_lists_everything(self, store: BlobStore) -> None:
        """The empty prefix matches every key."""
        keys = ["a", "jobs/1/x", "other/y"]
        for key in keys:
            await store.put(key, b"x")
        assert await store.list("") == keys

    async def test_prefix_may_end_mid_name(self, store: BlobStore) -> None:
        """A prefix is a string prefix: 'jobs/ab' matches 'jobs/ab', 'jobs/abc/x', 'jobs/abd'."""
        for key in ["jobs/a/b", "jobs/ab", "jobs/abc/x", "jobs/abd", "jobs/b", "jobsab"]:
            await store.put(key, b"x")
        assert await store.list("jobs/ab") == ["jobs/ab", "jobs/abc/x", "jobs/abd"]
        assert await store.list("jobs/abc/") == ["jobs/abc/x"]
        assert await store.list("job") == [
            "jobs/a/b",
            "jobs/ab",
            "jobs/abc/x",
            "jobs/abd",
            "jobs/b",
            "jobsab",
        ]

    async def test_prefix_with_slash_leaves_siblings_out(self, store: BlobStore) -> None:
        """'jobs/1/' lists the blobs of job 1 only, not those of job 10."""
        for key in ["jobs/1/a", "jobs/1/b/c", "jobs/10/a", "jobs/2/a"]:
            await store.put(key, b"x")
        assert await store.list("jobs/1/") == ["jobs/1/a", "jobs/1/b/c"]
        assert await store.list("jobs/1") == ["jobs/1/a", "jobs/1/b/c", "jobs/10/a"]

    async def test_list_of_unknown_prefix_is_empty(self, store: BlobStore) -> None:
        """A prefix nothing starts with lists nothing (also below an existing blob)."""
        await store.put("jobs/1/a", b"x")
        assert await store.list("jobs/2/") == []
        assert await store.list("nothing") == []
        assert await store.list("jobs/1/a/") == []

    async def test_list_of_an_empty_store_is_empty(self, store: BlobStore) -> None:
        """A fresh store lists nothing."""
        assert await store.list("") == []
        assert await store.list_page("") == []

    # -- list_page ---------------------------------------------------------------------

    async def test_list_page_walks_every_key_once_in_order(self, store: BlobStore) -> None:
        """Paging 2,500 keys with limit=1000 gives every key once, in order: 1000, 1000, 500."""
        keys = [f"bulk/{i % 7}/{i}" for i in range(2000)] + [f"bulk/{i}.txt" for i in range(500)]
        await _put_all(store, keys)
        await store.put("bulj", b"before the prefix")
        await store.put("bulk0", b"after the prefix")
        seen: list[str] = []
        sizes: list[int] = []
        after: str | None = None
        while page := await store.list_page("bulk/", after=after, limit=1000):
            sizes.append(len(page))
            seen.extend(page)
            after = page[-1]
        assert sizes == [1000, 1000, 500]
        assert seen == sorted(keys)

    async def test_list_page_matches_list(self, store: BlobStore) -> None:
        """Pages of any size concatenate to exactly what list returns."""
        for key in TRICKY_KEYS:
            await store.put(key, b"x")
        expected = await store.list("jobs/")
        for limit in (1, 2, 3, 7, 100):
            seen: list[str] = []
            after: str | None = None
            while page := await store.list_page("jobs/", after=after, limit=limit):
                assert len(page) <= limit
                seen.extend(page)
                after = page[-1]
            assert seen == expected

    async def test_list_page_after_any_string(self, store: BlobStore) -> None:
        """`after` need not be a stored key: the page starts at the first key sorting after it."""
        for key in TRICKY_KEYS:
            await store.put(key, b"x")
        ordered = sorted(TRICKY_KEYS)
        assert await store.list_page("jobs/", after="jobs/a/") == [k for k in ordered if k > "jobs/a/"]
        assert await store.list_page("jobs/", after="jobs/a/x-") == [k for k in ordered if k > "jobs/a/x-"]
        assert await store.list_page("jobs/", after="a") == ordered
        assert await store.list_page("jobs/", after="zzz") == []
        assert await store.list_page("jobs/", after=ordered[-1]) == []

    async def test_list_page_respects_prefix_and_limit(self, store: BlobStore) -> None:
        """A page holds only keys of the prefix, at most `limit` of them."""
        for key in ["jobs/1/a", "jobs/1/b", "jobs/1/c", "jobs/10/a", "jobs/2/a"]:
            await store.put(key, b"x")
        assert await store.list_page("jobs/1/", limit=2) == ["jobs/1/a", "jobs/1/b"]
        assert await store.list_page("jobs/1/", after="jobs/1/b", limit=2) == ["jobs/1/c"]
        assert await store.list_page("jobs/1/", after="jobs/1/c", limit=2) == []

    # -- delete ------------------------------------------------------------------------

    async def test_delete_returns_true_then_false(self, store: BlobStore) -> None:
        """delete removes the blob and says so; a second delete finds nothing."""
        await store.put("jobs/1/a", b"x")
        assert await store.delete("jobs/1/a") is True
        assert await store.delete("jobs/1/a") is False
        with pytest.raises(KeyError):
            await store.get("jobs/1/a")
        assert await store.list("") == []

    async def test_delete_of_unknown_key_is_false(self, store: BlobStore) -> None:
        """Deleting a key never stored (or a prefix of stored keys) returns False and changes nothing."""
        await store.put("jobs/1/a", b"x")
        assert await store.delete("jobs/2/a") is False
        assert await store.delete("jobs/1") is False
        assert await store.list("") == ["jobs/1/a"]

    async def test_delete_leaves_other_keys(self, store: BlobStore) -> None:
        """Deleting one blob keeps its neighbours in the same folder."""
        for key in ["jobs/1/a", "jobs/1/b", "jobs/1/c/d"]:
            await store.put(key, key.encode())
        assert await store.delete("jobs/1/b")
        assert await store.list("jobs/") == ["jobs/1/a", "jobs/1/c/d"]
        assert await store.get("jobs/1/c/d") == b"jobs/1/c/d"

    async def test_put_after_delete_works(self, store: BlobStore) -> None:
        """A key can be stored again after it, and its folder, were deleted."""
        await store.put("jobs/1/deep/a", b"one")
        assert await store.delete("jobs/1/deep/a")
        await store.put("jobs/1/deep/a", b"two")
        assert await store.get("jobs/1/deep/a") == b"two"

    # -- delete_prefix -----------------------------------------------------------------

    async def test_delete_prefix_counts_and_leaves_siblings(self, store: BlobStore) -> None:
        """delete_prefix('jobs/1/') deletes job 1's blobs, returns how many, and spares job 10."""
        for key in ["jobs/1/a", "jobs/1/b/c", "jobs/1/b/d/e", "jobs/10/a", "jobs/2/a"]:
            await store.put(key, b"x")
        assert await store.delete_prefix("jobs/1/") == 3
        assert await store.list("") == ["jobs/10/a", "jobs/2/a"]
        assert await store.delete_prefix("jobs/1/") == 0

    async def test_delete_prefix_mid_name(self, store: BlobStore) -> None:
        """A prefix ending mid-name deletes every key starting with it, and only those."""
        for key in ["jobs/1/a", "jobs/10/a", "jobs/1x", "jobs/2/a"]:
            await store.put(key, b"x")
        assert await store.delete_prefix("jobs/1") == 3
        assert await store.list("") == ["jobs/2/a"]

    async def test_delete_prefix_of_nothing_is_zero(self, store: BlobStore) -> None:
        """A prefix matching no key deletes nothing and returns 0."""
        await store.put("jobs/1/a", b"x")
        assert await store.delete_prefix("jobs/2/") == 0
        assert await store.delete_prefix("jobs/1/a/") == 0
        assert await store.list("") == ["jobs/1/a"]

    async def test_delete_prefix_of_everything(self, store: BlobStore) -> None:
        """The empty prefix deletes every blob; the store keeps working afterwards."""
        keys = ["a", "jobs/1/x", "jobs/2/y/z"]
        for key in keys:
            await store.put(key, b"x")
        assert await store.delete_prefix("") == len(keys)
        assert await store.list("") == []
        await store.put("jobs/1/x", b"again")
        assert await store.get("jobs/1/x") == b"again"

    async def test_delete_prefix_of_many_keys(self, store: BlobStore) -> None:
        """Hundreds of blobs in nested folders are all deleted and counted."""
        keys = [f"jobs/big/{i % 5}/{i}" for i in range(300)]
        await _put_all(store, keys)
        assert await store.delete_prefix("jobs/big/") == 300
        assert await store.list("jobs/") == []

    # -- delete_many (optional: jobkit.abc.ManyDeleter) -----------------------------------

    async def test_delete_many_deletes_the_listed_keys_and_counts_them(self, store: BlobStore) -> None:
        """delete_many(keys) deletes exactly those keys (1,001: more than one S3 request),
        counts them, and takes a key that is already gone in its stride."""
        if not isinstance(store, ManyDeleter):
            pytest.skip(f"{type(store).__name__} has no optional delete_many() (see jobkit.abc)")
        keys = [f"jobs/many/{i % 3}/{i:04d}" for i in range(1001)]
        await _put_all(store, [*keys, "jobs/many-other/a", "jobs/manyx"])
        assert await store.delete_many(keys) == 1001
        assert await store.list("") == ["jobs/many-other/a", "jobs/manyx"]
        assert await store.delete_many(["jobs/many/0/0000"]) in (0, 1)  # gone: no error either way
        assert await store.delete_many([]) == 0

    # -- concurrency -------------------------------------------------------------------

    async def test_concurrent_puts_of_distinct_keys_are_all_visible(self, store: BlobStore) -> None:
        """Many puts running at once, in the same and in different folders, all land."""
        keys = [f"jobs/{i % 4}/part-{i}" for i in range(64)]
        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(store.put, key, key.encode() * 100)
        assert await store.list("jobs/") == sorted(keys)
        for key in keys:
            assert await store.get(key) == key.encode() * 100

    async def test_concurrent_puts_of_one_key_leave_one_whole_version(self, store: BlobStore) -> None:
        """Racing puts of the same key leave exactly one of the versions, complete."""
        versions = [bytes([i]) * (4096 + i) for i in range(16)]
        async with anyio.create_task_group() as tg:
            for data in versions:
                tg.start_soon(store.put, "jobs/1/same", data)
        assert await store.get("jobs/1/same") in versions
        assert await store.list("jobs/") == ["jobs/1/same"]
