"""Every built-in blob store passes the BlobStore suite; FileBlobStore keeps its own promises."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobkit import BackendError, InvalidInput
from jobkit.abc import BlobStore
from jobkit.blobs import FileBlobStore, MemoryBlobStore, open_blobs
from jobkit.blobs._file import TEMP_PREFIX
from jobkit.testing import BlobStoreSuite

pytestmark = pytest.mark.anyio


class TestMemoryBlobStore(BlobStoreSuite):
    @pytest.fixture
    async def store(self) -> AsyncIterator[BlobStore]:
        store = MemoryBlobStore()
        await store.open()
        yield store
        await store.close()


class TestFileBlobStore(BlobStoreSuite):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[BlobStore]:
        store = FileBlobStore(tmp_path / "blobs")
        await store.open()
        yield store
        await store.close()


@pytest.fixture
async def files(tmp_path: Path) -> AsyncIterator[FileBlobStore]:
    store = FileBlobStore(tmp_path / "root")
    await store.open()
    yield store
    await store.close()


def tree(folder: str | Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative '/'-separated path -> content), temp files included."""
    found: dict[str, bytes] = {}
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            path = Path(dirpath, name)
            found[path.relative_to(folder).as_posix()] = path.read_bytes()
    return found


def folders(folder: str | Path) -> list[str]:
    """Every sub-folder of ``folder``, relative and sorted."""
    return sorted(
        Path(dirpath, name).relative_to(folder).as_posix()
        for dirpath, dirnames, _ in os.walk(folder)
        for name in dirnames
    )


def temp_files(folder: str | Path) -> list[str]:
    return [name for name in tree(folder) if Path(name).name.startswith(TEMP_PREFIX)]


class TestFileLayout:
    async def test_blob_is_a_plain_file_at_its_key(self, files: FileBlobStore) -> None:
        """The blob at 'jobs/1/out/a.txt' is the file root/jobs/1/out/a.txt with the same bytes."""
        await files.put("jobs/1/out/a.txt", b"content")
        assert tree(files.root) == {"jobs/1/out/a.txt": b"content"}

    async def test_open_creates_missing_root(self, tmp_path: Path) -> None:
        """open() creates the root folder and its missing parents; a second open is harmless."""
        store = FileBlobStore(tmp_path / "a" / "b" / "root")
        await store.open()
        await store.open()
        assert (tmp_path / "a" / "b" / "root").is_dir()
        await store.close()
        await store.close()

    async def test_files_added_by_others_are_blobs(self, files: FileBlobStore) -> None:
        """A regular file put under the root by another tool is listed and readable."""
        Path(files.root, "jobs", "7").mkdir(parents=True)
        Path(files.root, "jobs", "7", "external.txt").write_bytes(b"from outside")
        assert await files.list("jobs/") == ["jobs/7/external.txt"]
        assert await files.get("jobs/7/external.txt") == b"from outside"

    def test_repr_shows_the_root(self, tmp_path: Path) -> None:
        """repr names the store's absolute root folder."""
        store = FileBlobStore(tmp_path / "root")
        assert repr(store) == f"FileBlobStore(root={str(tmp_path / 'root')!r})"

    def test_relative_root_is_made_absolute(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A relative root is taken from the current folder when the store is built."""
        monkeypatch.chdir(tmp_path)
        assert FileBlobStore("artifacts").root == str(tmp_path / "artifacts")

    def test_is_a_blob_store(self, tmp_path: Path) -> None:
        """FileBlobStore satisfies the BlobStore protocol."""
        assert isinstance(FileBlobStore(tmp_path), BlobStore)

    async def test_blob_and_folder_cannot_share_a_key(self, files: FileBlobStore) -> None:
        """A key cannot be a blob and the folder of another blob: InvalidInput, nothing changed."""
        await files.put("jobs/1/a", b"blob")
        await files.put("jobs/2/a/b", b"nested")
        with pytest.raises(InvalidInput):
            await files.put("jobs/1/a/b", b"x")
        with pytest.raises(InvalidInput):
            await files.put("jobs/2/a", b"x")
        assert tree(files.root) == {"jobs/1/a": b"blob", "jobs/2/a/b": b"nested"}

    async def test_special_files_are_not_blobs(self, files: FileBlobStore) -> None:
        """A FIFO under the root is neither listed nor read (get does not block on it)."""
        Path(files.root, "jobs").mkdir()
        os.mkfifo(Path(files.root, "jobs", "pipe"))
        assert await files.list("") == []
        with pytest.raises(KeyError):
            await files.get("jobs/pipe")
        assert await files.delete("jobs/pipe") is False


class TestAtomicWrites:
    async def test_no_temporary_files_are_left_behind(self, files: FileBlobStore) -> None:
        """After puts and overwrites, the root holds exactly the blobs: no temporary files."""
        for i in range(20):
            await files.put(f"jobs/{i % 3}/blob", bytes([i]) * 1000)
        assert temp_files(files.root) == []
        assert sorted(tree(files.root)) == ["jobs/0/blob", "jobs/1/blob", "jobs/2/blob"]

    async def test_reader_never_sees_a_partial_blob(self, files: FileBlobStore) -> None:
        """A reader polling while a writer rewrites a 1 MiB blob only ever reads whole versions."""
        size = 1 << 20
        versions = [bytes([i]) * size for i in range(24)]
        await files.put("jobs/1/big", versions[0])
        done = anyio.Event()
        reads: list[int] = []

        async def writer() -> None:
            for data in versions[1:]:
                await files.put("jobs/1/big", data)
            done.set()

        async def reader() -> None:
            while not done.is_set():
                data = await files.get("jobs/1/big")
                assert data == versions[data[0]], "read a partially written blob"
                reads.append(data[0])

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                tg.start_soon(writer)
        assert reads, "the reader never ran"
        assert await files.get("jobs/1/big") == versions[-1]
        assert temp_files(files.root) == []

    async def test_failed_write_keeps_the_old_blob(
        self, files: FileBlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When the write fails (disk full), the old blob stays whole and the temp file is removed."""
        await files.put("jobs/1/a", b"old")

        def disk_full(fd: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "fsync", disk_full)
        with pytest.raises(BackendError, match="No space left"):
            await files.put("jobs/1/a", b"new" * 1000)
        monkeypatch.undo()
        assert tree(files.root) == {"jobs/1/a": b"old"}

    async def test_temporary_files_are_invisible(self, files: FileBlobStore) -> None:
        """A stray temporary file (a write in progress) is not listed, read or deleted by prefix."""
        await files.put("jobs/1/a", b"x")
        stray = Path(files.root, "jobs", "1", f"{TEMP_PREFIX}inprogress")
        stray.write_bytes(b"partial")
        assert await files.list("") == ["jobs/1/a"]
        assert await files.list_page("jobs/1/") == ["jobs/1/a"]
        assert await files.delete_prefix("jobs/") == 1
        assert stray.read_bytes() == b"partial"

    @pytest.mark.parametrize(
        "key", [f"jobs/1/{TEMP_PREFIX}x", f"{TEMP_PREFIX}abc/file", f"jobs/{TEMP_PREFIX}/a"]
    )
    async def test_reserved_temporary_names_are_refused(self, files: FileBlobStore, key: str) -> None:
        """Keys with a segment starting with the reserved temporary prefix are InvalidInput."""
        with pytest.raises(InvalidInput):
            await files.put(key, b"x")
        with pytest.raises(InvalidInput):
            await files.get(key)
        with pytest.raises(InvalidInput):
            await files.delete(key)
        assert tree(files.root) == {}


class TestEmptyFolders:
    async def test_delete_removes_the_folders_it_empties(self, files: FileBlobStore) -> None:
        """Deleting the only blob of a deep key removes its folders, but never the root."""
        await files.put("jobs/1/out/deep/a.txt", b"x")
        assert await files.delete("jobs/1/out/deep/a.txt")
        assert folders(files.root) == []
        assert Path(files.root).is_dir()

    async def test_delete_keeps_folders_still_in_use(self, files: FileBlobStore) -> None:
        """Only the folders left empty are removed; a folder with another blob stays."""
        await files.put("jobs/1/a", b"x")
        await files.put("jobs/1/b/c", b"x")
        assert await files.delete("jobs/1/b/c")
        assert folders(files.root) == ["jobs", "jobs/1"]

    async def test_delete_prefix_removes_the_folders_it_empties(self, files: FileBlobStore) -> None:
        """delete_prefix('jobs/1/') removes job 1's folder tree; 'jobs' stays while job 2 has blobs."""
        for key in ["jobs/1/a", "jobs/1/b/c", "jobs/1/b/d/e", "jobs/2/a"]:
            await files.put(key, b"x")
        assert await files.delete_prefix("jobs/1/") == 3
        assert folders(files.root) == ["jobs", "jobs/2"]
        assert await files.delete_prefix("jobs/") == 1
        assert folders(files.root) == []
        assert Path(files.root).is_dir()

    async def test_delete_prefix_mid_name_removes_emptied_folders(self, files: FileBlobStore) -> None:
        """A mid-name prefix removes the matching folders it empties and leaves the others."""
        for key in ["jobs/ab/x", "jobs/abc/y/z", "jobs/b/x"]:
            await files.put(key, b"x")
        assert await files.delete_prefix("jobs/ab") == 2
        assert folders(files.root) == ["jobs", "jobs/b"]


class TestSymlinks:
    @pytest.fixture
    def outside(self, tmp_path: Path) -> Path:
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "secret.txt").write_bytes(b"secret")
        return outside

    async def test_symlinked_folder_out_of_root_is_refused(self, files: FileBlobStore, outside: Path) -> None:
        """put, get, delete, list and delete_prefix through a link leaving the root are InvalidInput."""
        Path(files.root, "link").symlink_to(outside, target_is_directory=True)
        with pytest.raises(InvalidInput):
            await files.put("link/new.txt", b"x")
        with pytest.raises(InvalidInput):
            await files.put("link/deeper/new.txt", b"x")
        with pytest.raises(InvalidInput):
            await files.get("link/secret.txt")
        with pytest.raises(InvalidInput):
            await files.delete("link/secret.txt")
        with pytest.raises(InvalidInput):
            await files.list("link/")
        with pytest.raises(InvalidInput):
            await files.delete_prefix("link/")
        assert tree(outside) == {"secret.txt": b"secret"}
        assert folders(outside) == []

    async def test_whole_store_operations_skip_links_out_of_root(
        self, files: FileBlobStore, outside: Path
    ) -> None:
        """Listing and deleting everything neither shows nor touches what a link points to."""
        Path(files.root, "link").symlink_to(outside, target_is_directory=True)
        Path(files.root, "leak.txt").symlink_to(outside / "secret.txt")
        await files.put("jobs/1/a", b"x")
        assert await files.list("") == ["jobs/1/a"]
        assert await files.list_page("") == ["jobs/1/a"]
        assert await files.delete_prefix("") == 1
        assert tree(outside) == {"secret.txt": b"secret"}

    async def test_symlinked_file_out_of_root_is_refused(self, files: FileBlobStore, outside: Path) -> None:
        """A key whose file is a link leaving the root is InvalidInput for get, put and delete."""
        Path(files.root, "leak.txt").symlink_to(outside / "secret.txt")
        with pytest.raises(InvalidInput):
            await files.get("leak.txt")
        with pytest.raises(InvalidInput):
            await files.put("leak.txt", b"overwrite")
        with pytest.raises(InvalidInput):
            await files.delete("leak.txt")
        assert tree(outside) == {"secret.txt": b"secret"}

    async def test_links_inside_root_are_followed(self, files: FileBlobStore) -> None:
        """A link whose target stays inside the root reads the blob it points to."""
        await files.put("jobs/1/a", b"x")
        Path(files.root, "alias").symlink_to(Path(files.root, "jobs", "1"), target_is_directory=True)
        assert await files.get("alias/a") == b"x"


# Pieces that try to escape, mixed with ordinary ones, joined freely or as '/'-separated segments.
_PIECES = ["..", ".", "/", "\\", "\x00", "", "a", "b.txt", "~", " ", "C:", "%2e%2e", "é", TEMP_PREFIX, "..."]
_segments = st.one_of(st.sampled_from(_PIECES), st.text(st.sampled_from("./\\\x00ab~"), max_size=4))
hostile_keys = st.one_of(
    st.lists(_segments, min_size=1, max_size=5).map("/".join),
    st.lists(st.sampled_from(_PIECES), max_size=8).map("".join),
    st.text(max_size=20),
)


class TestHostileKeys:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(key=hostile_keys)
    async def test_keys_are_refused_or_stay_inside_root(self, tmp_path: Path, key: str) -> None:
        """Every key is InvalidInput or lands strictly inside the root; nothing outside changes."""
        root = tmp_path / "root"
        store = FileBlobStore(root)
        await store.open()
        try:
            await store.put(key, b"payload")
        except InvalidInput:
            for call in (store.get(key), store.delete(key)):
                with pytest.raises(InvalidInput):
                    await call
        else:
            real_root = os.path.realpath(root)
            real = os.path.realpath(os.path.join(root, key))
            assert real.startswith(real_root + os.sep)
            assert Path(real).read_bytes() == b"payload"
            assert await store.get(key) == b"payload"
            assert key in await store.list("")
            assert await store.delete(key)
            assert folders(root) == []
        assert sorted(os.listdir(tmp_path)) == ["root"]

    @pytest.mark.parametrize(
        "key",
        ["", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a/", "./a", "..", "a\\..\\b", "a\x00b"],
    )
    async def test_classic_escapes_are_invalid_input(self, files: FileBlobStore, key: str) -> None:
        """Empty, absolute, '..', '.', empty-segment, backslash and NUL keys are InvalidInput."""
        with pytest.raises(InvalidInput):
            await files.put(key, b"x")
        with pytest.raises(InvalidInput):
            await files.get(key)
        with pytest.raises(InvalidInput):
            await files.delete(key)

    @pytest.mark.parametrize("prefix", ["/", "/etc", "../", "a/../", "a//", "./", "a\\b", "a\x00"])
    async def test_escaping_prefixes_are_invalid_input(self, files: FileBlobStore, prefix: str) -> None:
        """A prefix whose complete segments could leave the root is InvalidInput for list and deletes."""
        with pytest.raises(InvalidInput):
            await files.list(prefix)
        with pytest.raises(InvalidInput):
            await files.list_page(prefix)
        with pytest.raises(InvalidInput):
            await files.delete_prefix(prefix)

    async def test_partial_dot_names_are_ordinary_prefixes(self, files: FileBlobStore) -> None:
        """A last segment like '.' or '..' is just the start of a name ('.env', '..data')."""
        for key in ["jobs/.env", "jobs/..data", "jobs/x"]:
            await files.put(key, b"x")
        assert await files.list("jobs/.") == ["jobs/..data", "jobs/.env"]
        assert await files.list("jobs/..") == ["jobs/..data"]


class TestRaces:
    async def test_put_recreates_a_folder_removed_under_it(
        self, files: FileBlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When a delete prunes the folder between its creation and the write, put creates it again."""
        real_makedirs = os.makedirs
        target = os.path.join(os.path.realpath(files.root), "jobs", "1")
        created: list[str] = []

        def makedirs_then_lose_it(name: str, mode: int = 0o777, exist_ok: bool = False) -> None:
            real_makedirs(name, mode, exist_ok)
            if name == target:
                created.append(name)
                if len(created) == 1:
                    os.rmdir(name)  # what a concurrent delete_prefix does to an empty folder

        monkeypatch.setattr(os, "makedirs", makedirs_then_lose_it)
        await files.put("jobs/1/a", b"x")
        monkeypatch.undo()
        assert created == [target, target]
        assert tree(files.root) == {"jobs/1/a": b"x"}

    async def test_racing_puts_and_deletes_of_one_key(self, files: FileBlobStore) -> None:
        """Concurrent puts and deletes of one key never fail; the key ends absent or one whole version."""
        versions = [bytes([i]) * (256 * 1024) for i in range(1, 13)]
        for _ in range(5):
            async with anyio.create_task_group() as tg:
                for data in versions:
                    tg.start_soon(files.put, "jobs/1/out/same", data)
                    tg.start_soon(files.delete, "jobs/1/out/same")
            try:
                data = await files.get("jobs/1/out/same")
            except KeyError:
                assert await files.list("") == []
            else:
                assert data in versions
            assert temp_files(files.root) == []

    async def test_puts_racing_delete_prefix_never_fail(self, files: FileBlobStore) -> None:
        """Puts into a folder that delete_prefix is removing retry and land whole; nothing half-written."""
        for _ in range(10):
            expected: dict[str, bytes] = {}
            async with anyio.create_task_group() as tg:
                for i in range(12):
                    key = f"jobs/1/{'deep/' * (i % 3)}k{i}"
                    expected[key] = bytes([i]) * 4096
                    tg.start_soon(files.put, key, expected[key])
                    tg.start_soon(files.delete_prefix, "jobs/")
            for key in await files.list(""):
                assert await files.get(key) == expected[key]
            assert temp_files(files.root) == []
            await files.delete_prefix("")
            assert folders(files.root) == []


class TestOpenBlobs:
    def test_relative_file_url(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """file://artifacts is a FileBlobStore rooted at ./artifacts."""
        monkeypatch.chdir(tmp_path)
        store = open_blobs("file://artifacts")
        assert isinstance(store, FileBlobStore)
        assert store.root == str(tmp_path / "artifacts")
        nested = open_blobs("file://data/artifacts")
        assert isinstance(nested, FileBlobStore)
        assert nested.root == str(tmp_path / "data" / "artifacts")

    def test_absolute_file_url(self, tmp_path: Path) -> None:
        """file:///abs/path is a FileBlobStore rooted at /abs/path, percent-escapes decoded."""
        store = open_blobs((tmp_path / "my blobs").as_uri())
        assert isinstance(store, FileBlobStore)
        assert store.root == str(tmp_path / "my blobs")

    async def test_file_url_store_works(self, tmp_path: Path) -> None:
        """A store from a file URL creates its root on open and stores blobs there."""
        store = open_blobs((tmp_path / "blobs").as_uri())
        await store.open()
        await store.put("jobs/1/a", b"x")
        assert (tmp_path / "blobs" / "jobs" / "1" / "a").read_bytes() == b"x"

    def test_memory_url(self) -> None:
        """memory:// is still a MemoryBlobStore."""
        assert isinstance(open_blobs("memory://"), MemoryBlobStore)

    @pytest.mark.parametrize(
        "url", ["file://", "file:///x?y=1", "s3x://bucket", "artifacts", "file:///a%00b"]
    )
    def test_malformed_urls_are_invalid_input(self, url: str) -> None:
        """Empty file URLs, queries, NUL and unknown schemes are InvalidInput."""
        with pytest.raises(InvalidInput):
            open_blobs(url)


class TestStreaming:
    async def test_stream_yields_the_blob_in_chunks(self, files: FileBlobStore) -> None:
        """A blob of 3.5 chunks streams as three full chunks and a short one, joined equal."""
        data = os.urandom(3 * 4096 + 2048)
        await files.put("jobs/1/big", data)
        chunks = [chunk async for chunk in files.stream("jobs/1/big", chunk_size=4096)]
        assert [len(chunk) for chunk in chunks] == [4096, 4096, 4096, 2048]
        assert b"".join(chunks) == data

    async def test_stream_default_chunks(self, files: FileBlobStore) -> None:
        """With the default chunk size a 200 KiB blob arrives in several chunks, whole."""
        data = os.urandom(200 * 1024)
        await files.put("jobs/1/big", data)
        chunks = [chunk async for chunk in files.stream("jobs/1/big")]
        assert len(chunks) > 1
        assert b"".join(chunks) == data

    async def test_stream_of_empty_blob_yields_nothing(self, files: FileBlobStore) -> None:
        """An empty blob streams no chunk at all."""
        await files.put("jobs/1/empty", b"")
        assert [chunk async for chunk in files.stream("jobs/1/empty")] == []

    async def test_stream_of_missing_key_raises_key_error(self, files: FileBlobStore) -> None:
        """Streaming a key never stored raises KeyError."""
        with pytest.raises(KeyError):
            async for _ in files.stream("jobs/1/none"):
                pass

    async def test_stream_reads_the_version_it_started_with(self, files: FileBlobStore) -> None:
        """A blob replaced mid-stream still streams its old version, whole."""
        old, new = b"o" * 40_000, b"n" * 50_000
        await files.put("jobs/1/a", old)
        received = b""
        async with aclosing(files.stream("jobs/1/a", chunk_size=10_000)) as chunks:
            async for chunk in chunks:
                if not received:
                    await files.put("jobs/1/a", new)
                received += chunk
        assert received == old
        assert await files.get("jobs/1/a") == new

    async def test_stream_closed_early_releases_the_blob(self, files: FileBlobStore) -> None:
        """Closing a stream after one chunk lets the blob be deleted and its folder removed."""
        await files.put("jobs/1/a", b"x" * 100_000)
        async with aclosing(files.stream("jobs/1/a", chunk_size=1000)) as chunks:
            async for chunk in chunks:
                assert chunk == b"x" * 1000
                break
        assert await files.delete("jobs/1/a")
        assert folders(files.root) == []

    async def test_bad_chunk_size_is_invalid_input(self, files: FileBlobStore) -> None:
        """chunk_size must be a positive integer."""
        await files.put("jobs/1/a", b"x")
        with pytest.raises(InvalidInput):
            async for _ in files.stream("jobs/1/a", chunk_size=0):
                pass
